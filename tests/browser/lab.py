"""A real JupyterLab and a real Chromium, for tests that assert on what a user sees.

``JupyterLab`` starts ``jupyter lab`` on its own port, with its own token and root folder, and
every Jupyter and IPython file (config, data, runtime, settings, history) under a temporary
folder, so nothing in ``$HOME`` is read or written. The kernels it starts get this repository
on their path and their clusters' files under the same temporary folder.

``Notebook`` is one notebook open in a Chromium page on the ``nbcluster`` kernel: ``run``
appends a cell, runs it and waits until it finished (its prompt shows ``[N]``); ``start``
only starts it. Both return the cell's index, for ``cell``, ``outputs`` and ``result``.
Waits poll what the page shows, with deadlines; nothing sleeps.

The JavaScript below needs ``--LabApp.expose_app_in_browser`` (``window.jupyterapp``).
Pitfalls it avoids are in ``../shared/recipes/jupyterlab-browser-test.md``: the toolbar's
"idle" flashes before a kernel exists, and ``commands.execute`` promises resolve only when
the whole command (a run) is over, so they are never awaited here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # tests import ``expect`` from here; without Playwright the fixtures skip them first
    from playwright.sync_api import expect
except ImportError:  # pragma: no cover
    expect = None

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
CHROMIUM = os.environ.get("NBCLUSTER_TEST_CHROMIUM", "/usr/bin/chromium")
#: Flags that work as root in a container (the recipe's); Playwright adds --headless.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip
#: Seconds JupyterLab may take to answer its REST API after start.
SERVER_START_S = 60.0
#: Seconds a page may take to show its notebook with a connected, idle kernel.
PAGE_READY_S = 90.0
#: Seconds a cell may take by default (the first cell waits for the cluster to start).
CELL_S = 60.0

# Lab's user settings: never save on its own (the test decides when the file is written),
# keep every cell in the DOM, and no news or update toasts over the page.
_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "autoStartDefaultKernel": True,
        "windowingMode": "none",
    },
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

#: The open notebook's kernel is connected and idle (not the toolbar's early "idle").
KERNEL_IDLE = """() => {
  const k = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
  return k?.status === 'idle' && k?.connectionStatus === 'connected';
}"""

#: Append a code cell with this source at the end, make it active and run it (not awaited).
_RUN_NEW_CELL = """([source]) => {
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  const cells = nb.model.sharedModel;
  let index = cells.cells.length;
  const last = nb.widgets[index - 1];
  if (index === 1 && last.model.type === 'code' && last.model.sharedModel.getSource() === ''
      && last.model.executionCount === null) {
    index = 0;                       // reuse the blank cell a new notebook starts with
    last.model.sharedModel.setSource(source);
  } else {
    cells.insertCell(index, {cell_type: 'code', source});
  }
  nb.activeCellIndex = index;
  app.commands.execute('notebook:run-cell');
  return index;
}"""

#: The cell at this index has run: its prompt shows an execution count, not [*] or [ ].
_CELL_DONE = """([index]) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[index];
  const prompt = cell?.querySelector('.jp-InputPrompt')?.innerText || '';
  return /\\[\\d+\\]/.test(prompt);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def notebook_json(cells: list[str] | None = None) -> dict[str, Any]:
    """A notebook on the nbcluster kernel (the kernelspec keeps Lab's kernel picker away)."""
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": f"c{i}",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
            for i, src in enumerate(cells or [""])
        ],
        "metadata": {
            "kernelspec": {
                "name": "nbcluster",
                "display_name": "Python 3 (nbcluster)",
                "language": "python",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@dataclass
class JupyterLab:
    """``jupyter lab`` on 127.0.0.1, isolated under ``home``; ``root`` is its file root."""

    home: Path
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "lab.log"

    def env(self) -> dict[str, str]:
        """The server's environment, which its kernels inherit."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NBCLUSTER_", "JUPYTER", "PYTEST_"))}  # fmt: skip
        h = self.home
        env.update(
            JUPYTER_CONFIG_DIR=str(h / "jconf"),
            JUPYTER_DATA_DIR=str(h / "jdata"),
            JUPYTER_RUNTIME_DIR=str(h / "jrun"),
            JUPYTERLAB_SETTINGS_DIR=str(h / "jconf" / "lab" / "user-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(h / "jconf" / "lab" / "workspaces"),
            IPYTHONDIR=str(h / "ipython"),
            NBCLUSTER_TEMP_DIR=str(h / "nbcluster"),
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(
                p for p in (str(REPO_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p
            ),
        )
        return env

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = self.home / "jconf" / "lab" / "user-settings"
        for name, value in _SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        # What `pip install .` does for a wheel: jupyter-server loads the nbcluster extension.
        server_d = self.home / "jconf" / "jupyter_server_config.d"
        server_d.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "nbcluster" / "extension" / "config" / "nbcluster.json", server_d)
        self.port = self.port or free_port()
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        ]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.home)  # fmt: skip
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                self.api("/api/status")
                return
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not start:\n{self.log()}")
            time.sleep(0.1)  # polling the server's port with a deadline

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def api(self, path: str, method: str = "GET", body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}", data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def sessions(self) -> list[dict[str, Any]]:
        return list(self.api("/api/sessions"))

    def shutdown_session(self, notebook: str) -> None:
        """Shut down the kernel of ``notebook`` (its cluster stops with it)."""
        for s in self.sessions():
            if s.get("path") == notebook:
                self.api(f"/api/sessions/{s['id']}", "DELETE")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            for s in self.sessions():
                self.api(f"/api/sessions/{s['id']}", "DELETE")
        except (OSError, urllib.error.URLError):
            pass
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Notebook:
    """One notebook open in its own browser page, on its own nbcluster kernel."""

    def __init__(self, lab: JupyterLab, page: Any, name: str) -> None:
        self.lab = lab
        self.page = page
        self.name = name
        #: uncaught page errors and console errors seen so far
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"console: {m.text}"))  # fmt: skip

    @property
    def path(self) -> Path:
        return self.lab.root / self.name

    def open(self) -> None:
        """Load Lab on this notebook and wait until its kernel is connected and idle."""
        # ?reset: ignore any saved layout; the token is exchanged for a cookie.
        self.page.goto(f"{self.lab.url}/lab/tree/{self.name}?reset&token={self.lab.token}")
        self.wait_kernel_idle()

    def wait_kernel_idle(self, timeout: float = PAGE_READY_S) -> None:
        try:
            self.page.wait_for_function(KERNEL_IDLE, timeout=timeout * 1000)
        except Exception as e:
            raise AssertionError(f"{self.name}: no idle kernel within {timeout}s "
                                 f"(errors: {self.errors})\n{self.lab.log()}") from e  # fmt: skip

    def start(self, code: str) -> int:
        """Append a cell with ``code`` and start running it; return its index."""
        return int(self.page.evaluate(_RUN_NEW_CELL, [code]))

    def wait_done(self, index: int, timeout: float = CELL_S) -> int:
        """Wait until cell ``index`` has run; return ``index``."""
        try:
            self.page.wait_for_function(_CELL_DONE, arg=[index], timeout=timeout * 1000)
        except Exception as e:
            raise AssertionError(f"cell {index} did not finish within {timeout}s: "
                                 f"{self.output_text(index)!r}") from e  # fmt: skip
        return index

    def run(self, code: str, timeout: float = CELL_S) -> int:
        """Run ``code`` in a new cell; return its index once it finished."""
        return self.wait_done(self.start(code), timeout)

    def cell(self, index: int) -> Any:
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def outputs(self, index: int) -> Any:
        return self.cell(index).locator(".jp-OutputArea-output")

    def result(self, index: int) -> Any:
        """The cell's execute result (the value of its last expression), without its prompt."""
        return self.cell(index).locator(".jp-OutputArea-executeResult .jp-OutputArea-output")

    def output_text(self, index: int) -> str:
        try:
            return str(self.cell(index).locator(".jp-OutputArea").inner_text(timeout=1000))
        except Exception:
            return ""

    def save(self) -> None:
        """Save the notebook (outputs and widget state) to disk, and wait until it is."""
        before = self.path.stat().st_mtime_ns if self.path.exists() else 0
        self.page.evaluate("() => { window.jupyterapp.commands.execute('docmanager:save'); }")
        self.page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000
        )
        deadline = time.monotonic() + 30
        while (self.path.stat().st_mtime_ns if self.path.exists() else 0) == before:
            assert time.monotonic() < deadline, f"{self.name} was not saved"
            time.sleep(0.05)  # polling the file with a deadline

    def reload(self) -> None:
        """Reload the page (the kernel stays) and wait for its kernel again."""
        self.page.reload()
        self.wait_kernel_idle()

    def screenshot(self, path: Path, selector: str | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = self.page.locator(selector).first if selector else self.page
        target.screenshot(path=str(path))


@contextmanager
def running_lab(home: Path) -> Iterator[JupyterLab]:
    lab = JupyterLab(home)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def browser_env(home: Path) -> dict[str, str]:
    """Chromium writes crash reports and dconf under $HOME even with a temporary profile:
    keep them in the test's folder."""
    return {**os.environ, "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache")}  # fmt: skip


def have_chromium() -> bool:
    return os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is not None

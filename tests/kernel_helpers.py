"""Driving a real nbcluster kernel over the Jupyter protocol, as a frontend does.

A ``KernelSession`` keeps every IOPub message the kernel publishes, so a test can ask what a
given cell (request) received, including output that arrives after the cell finished. Waits
poll IOPub with deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import KernelManager

from nbcluster.kernel.kernelspec import KERNEL_NAME, ensure_installed

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Seconds a cell may take in these tests (kernel start and first cell included).
CELL_TIMEOUT_S = 60.0


@dataclass
class Cell:
    """One execute request: its IOPub messages so far and its reply."""

    msg_id: str
    messages: list[dict[str, Any]]
    reply: dict[str, Any]

    def text(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"]
            for m in self.messages
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def result(self) -> str | None:
        for m in self.messages:
            if m["msg_type"] == "execute_result":
                return str(m["content"]["data"]["text/plain"])
        return None

    @property
    def error(self) -> dict[str, Any] | None:
        for m in self.messages:
            if m["msg_type"] == "error":
                return dict(m["content"])
        return None

    @property
    def traceback_text(self) -> str:
        err = self.error
        return strip_ansi("\n".join(err["traceback"])) if err else ""


def strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class KernelSession:
    """A started kernel and its client, with every IOPub message recorded."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=CELL_TIMEOUT_S)
        self.messages: list[dict[str, Any]] = []

    @property
    def pid(self) -> int:
        return int(self.km.provisioner.pid)  # type: ignore[union-attr]

    def processes(self) -> list[psutil.Process]:
        """The kernel's live descendants: the head, its fork server and workers."""
        try:
            return [
                p
                for p in psutil.Process(self.pid).children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE
            ]
        except psutil.NoSuchProcess:
            return []

    # -- IOPub ----------------------------------------------------------------------------
    def pump(self, timeout: float) -> bool:
        """Record the next IOPub message; False if none came within ``timeout``."""
        try:
            msg = self.kc.get_iopub_msg(timeout=max(timeout, 0.001))
        except queue.Empty:
            return False
        self.messages.append(msg)
        return True

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = CELL_TIMEOUT_S, what: str = ""
    ) -> Any:
        """Pump IOPub until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not true within {timeout}s: {what or predicate}")
            self.pump(min(left, 0.1))

    def of(self, msg_id: str) -> list[dict[str, Any]]:
        """Every IOPub message recorded so far whose parent is request ``msg_id``."""
        return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]

    def idle(self, msg_id: str) -> bool:
        return any(
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
            for m in self.of(msg_id)
        )

    # -- cells ----------------------------------------------------------------------------
    def submit(self, code: str) -> str:
        """Send an execute request without waiting for it."""
        return str(self.kc.execute(code))

    def finish(self, msg_id: str, timeout: float = CELL_TIMEOUT_S) -> Cell:
        """Wait until request ``msg_id`` is done (its reply and its idle status)."""
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        self.wait_for(lambda: self.idle(msg_id), timeout, f"idle after {msg_id}")
        return Cell(msg_id, self.of(msg_id), reply["content"])

    def run(self, code: str, timeout: float = CELL_TIMEOUT_S) -> Cell:
        return self.finish(self.submit(code), timeout)

    def ok(self, code: str, timeout: float = CELL_TIMEOUT_S) -> Cell:
        """Run a cell that must succeed."""
        cell = self.run(code, timeout)
        assert cell.reply["status"] == "ok", cell.traceback_text or cell.reply
        return cell

    def cell_of(self, msg_id: str) -> Cell:
        """Request ``msg_id`` with every message recorded so far (late output included)."""
        return Cell(msg_id, self.of(msg_id), {})

    def shutdown(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=False)
        else:  # killed: close the manager's control socket, or its zmq context can never
            self.km.cleanup_resources()  # terminate (the garbage collector hangs in it)


def kernel_env(**extra: str) -> dict[str, str]:
    """The kernel's environment: ours, minus pytest's marker (with it ipykernel would not
    capture file-descriptor output the way it does for a user)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


def start_kernel(cwd: Path, kernel_id: str | None = None, **env: str) -> KernelSession:
    """Start a kernel in ``cwd``. With ``kernel_id``, its connection file is named as
    jupyter-server names it (``kernel-<id>.json``), which is how the kernel knows its id."""
    km = KernelManager(kernel_name=KERNEL_NAME)
    if kernel_id is not None:
        km.connection_file = str(cwd / f"kernel-{kernel_id}.json")
    km.start_kernel(env=kernel_env(**env), cwd=str(cwd))
    try:
        return KernelSession(km)
    except BaseException:
        km.shutdown_kernel(now=True)
        raise


@pytest.fixture(scope="session")
def kernelspec() -> str:
    """The nbcluster kernelspec, installed into ``sys.prefix`` if Jupyter does not find it."""
    return ensure_installed()


@pytest.fixture
def new_kernel(kernelspec: str, tmp_path: Path) -> Iterator[Callable[..., KernelSession]]:
    """Start fresh kernels for one test; whatever they leave behind is killed after it."""
    sessions: list[KernelSession] = []
    pids: list[int] = []

    def start(kernel_id: str | None = None, **env: str) -> KernelSession:
        session = start_kernel(tmp_path, kernel_id, **env)
        sessions.append(session)
        pids.append(session.pid)
        return session

    yield start
    for session in sessions:
        pids.extend(p.pid for p in session.processes())
        try:
            session.shutdown()
        except Exception as e:  # a test that killed its kernel has nothing to shut down
            print(f"kernel shutdown: {e}", file=sys.stderr)
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass

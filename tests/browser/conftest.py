"""Fixtures for browser tests: one JupyterLab and one Chromium per test run, and a fresh
notebook page on its own nbcluster kernel per test.

A test asks for ``notebook`` (opened, kernel idle) and drives it::

    def test_it(notebook):
        index = notebook.run("import nbcluster as nc\\nnc.get(nc.put(1))")
        expect(notebook.result(index)).to_have_text("1")

Without Chromium, Playwright or JupyterLab the tests skip (or fail under
``NBCLUSTER_TEST_REQUIRE_PARTS=1``) through ``parts.missing``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from parts import missing

from browser.lab import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    JupyterLab,
    Notebook,
    browser_env,
    have_chromium,
    notebook_json,
    running_lab,
)
from nbcluster.kernel.kernelspec import ensure_installed

_names = itertools.count(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


# Package scope: the server and the browser stop once tests/browser is done, so the leak
# checks of later modules (no process left after shutdown) see only their own processes.
@pytest.fixture(scope="package")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    """One JupyterLab server for all browser tests (starting one costs ~2 s)."""
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        missing("jupyterlab", "pip install -e '.[test]' installs it")
    ensure_installed()
    with running_lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.fixture(scope="package")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (Debian's) for all browser tests; each gets its own context."""
    if not have_chromium():
        missing("chromium", f"{CHROMIUM} not found; scripts/test-parts.sh installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "pip install -e '.[test]' installs it")
    home = tmp_path_factory.mktemp("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_FLAGS, env=browser_env(home))  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_notebook(jupyter_lab: JupyterLab, chromium: Any) -> Iterator[Any]:
    """Open notebooks (``new_notebook(cells=None)``); each has its own page and kernel,
    shut down after the test."""
    opened: list[tuple[Notebook, Any]] = []

    def open_one(cells: list[str] | None = None, *, name: str | None = None) -> Notebook:
        import json

        name = name or f"nb{next(_names)}.ipynb"
        (jupyter_lab.root / name).write_text(json.dumps(notebook_json(cells)))
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        nb = Notebook(jupyter_lab, context.new_page(), name)
        opened.append((nb, context))
        nb.open()
        return nb

    yield open_one
    for nb, context in opened:
        try:
            context.close()
        finally:
            jupyter_lab.shutdown_session(nb.name)


@pytest.fixture
def notebook(new_notebook: Any) -> Notebook:
    """A new, empty notebook open on its own nbcluster kernel, kernel idle."""
    return new_notebook()  # type: ignore[no-any-return]


@pytest.fixture
def shots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a test writes its screenshots (kept in pytest's temporary folder)."""
    return tmp_path / "shots"


@pytest.fixture
def jp_asyncio_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """pytest-jupyter (loaded for the extension's tests) closes the current asyncio loop
    after every test; in here that loop is Playwright's, which must stay open. Its cleanup
    gets a loop of its own instead, never made current."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def jp_server_cleanup() -> None:
    """No pytest-jupyter server runs in here (a real JupyterLab does): nothing to clean."""

"""The widget bundles shipped in nbcluster/widgets/static are what js/ builds from source:
esbuild rebuilds them in memory and they must match byte for byte, and the TypeScript must
type-check. (``pip install .`` uses the committed bundles and needs no node.)"""

from __future__ import annotations

import subprocess

from conftest import REPO_ROOT
from parts import node_tools

JS = REPO_ROOT / "js"


def _node_tools() -> str:
    return node_tools(JS)


def test_committed_bundles_are_rebuilt_from_source() -> None:
    node = _node_tools()
    run = subprocess.run([node, "build.mjs", "--check"], cwd=JS, capture_output=True, check=False,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout


def test_typescript_sources_type_check() -> None:
    node = _node_tools()
    tsc = JS / "node_modules" / "typescript" / "bin" / "tsc"
    run = subprocess.run([node, str(tsc), "--noEmit", "-p", "."], cwd=JS, check=False,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_widget_has_its_bundle() -> None:
    static = REPO_ROOT / "nbcluster" / "widgets" / "static"
    sources = {p.stem for p in (JS / "src").glob("*.ts")} - {"common"}
    assert sources <= {p.stem for p in static.glob("*.js")}

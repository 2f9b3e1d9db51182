"""The dashboard bundle shipped in nbcluster/dashboard/static is what js/dashboard builds:
esbuild rebuilds it in memory and it must match byte for byte, and its TypeScript must
type-check. (``pip install .`` uses the committed bundle and needs no node.)"""

from __future__ import annotations

import re
import subprocess

from conftest import REPO_ROOT
from parts import node_tools

JS = REPO_ROOT / "js"
STATIC = REPO_ROOT / "nbcluster" / "dashboard" / "static"


def _node() -> str:
    return node_tools(JS)


def test_the_committed_dashboard_bundle_is_rebuilt_from_source() -> None:
    run = subprocess.run([_node(), "dashboard/build.mjs", "--check"], cwd=JS,
                         capture_output=True, check=False, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr + run.stdout


def test_the_dashboard_typescript_type_checks() -> None:
    tsc = JS / "node_modules" / "typescript" / "bin" / "tsc"
    run = subprocess.run([_node(), str(tsc), "--noEmit", "-p", "dashboard"], cwd=JS,
                         check=False, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN: the page, its script and its style name no other origin."""
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), name
        assert "@import" not in text and "cdn" not in text.lower(), name

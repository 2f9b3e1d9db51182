"""Real parts a test needs (Chromium, JupyterHub, sshd, Slurm, ``ip netns``): skip or fail.

A test that cannot get its part skips with the reason, so a developer without root or a
browser still runs the rest. CI sets ``NBCLUSTER_TEST_REQUIRE_PARTS=1`` (``.ci/run`` does),
and then a missing part is a failure: CI installs every part, so a skip there would hide a
broken install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

#: Set to 1 (``.ci/run`` does) to turn "part missing" skips into failures.
REQUIRE_PARTS = os.environ.get("NBCLUSTER_TEST_REQUIRE_PARTS", "") not in ("", "0")


def missing(part: str, why: str) -> NoReturn:
    """Skip (or, under ``NBCLUSTER_TEST_REQUIRE_PARTS=1``, fail) because ``part`` is missing."""
    text = f"{part} is not available: {why}"
    if REQUIRE_PARTS:
        pytest.fail(f"{text} (NBCLUSTER_TEST_REQUIRE_PARTS=1: every real part must be here)")
    pytest.skip(text)


def node_tools(js: Path) -> str:
    """node, with ``js/``'s pinned build tools installed (the front-end bundle tests)."""
    node = shutil.which("node")
    if node is None:
        missing("node", "scripts/test-parts.sh installs nodejs")
    if not (js / "node_modules" / "esbuild").is_dir():
        missing("js/node_modules", "scripts/test.sh runs `npm ci` in js/")
    return node

"""Letting another OS user reach this interpreter and checkout while a test needs it.

Tests that run nbcluster as a second user (tests/test_multiuser.py, the JupyterHub tests)
start it with this interpreter and import nbcluster from this tree; a pyenv build or a venv
under a 0700 ``/root`` (as on a CI machine that installs into root's Python), or a checkout
under one, is unusable to them. ``TraverseGrant`` adds only the traverse bit, for as long as
any test run on the machine needs it.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil


def unreadable_for_others(paths: Iterable[Path]) -> list[str]:
    """Directories on the way to ``paths`` that another user cannot traverse (no o+x)."""
    bad = []
    for path in paths:
        for d in [path, *path.parents]:
            if d.is_dir() and not d.stat().st_mode & stat.S_IXOTH:
                bad.append(str(d))
    return sorted(set(bad))


class TraverseGrant:
    """o+x on the folders on the way to ``paths`` that lack it, for as long as any test run
    on this machine needs it.

    The users' servers run this interpreter and import nbcluster from this tree; a venv
    whose ``python`` links to a pyenv build under a 0700 ``/root`` (as here), or a checkout
    under one, is unusable to them ("Permission denied" when the hub spawns). Only the
    traverse bit is added (no listing). Runs at the same time share one grant, counted in a
    file under an flock: the last to leave puts the old modes back (a run that restored
    them while another still ran made that one's spawns fail).
    """

    STATE = Path(tempfile.gettempdir()) / "nbcluster-hubtest-traverse.json"

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def _locked(self, change: Callable[[dict[str, Any]], None]) -> None:
        with open(f"{self.STATE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.STATE.read_text())
            except (OSError, ValueError):
                state = {"holders": [], "modes": {}}
            state["holders"] = [p for p in state["holders"] if psutil.pid_exists(p)]
            change(state)
            if state["holders"]:
                self.STATE.write_text(json.dumps(state))
            else:
                for d, mode in state["modes"].items():
                    if os.path.isdir(d) and os.stat(d).st_mode == mode | stat.S_IXOTH:
                        os.chmod(d, stat.S_IMODE(mode))
                self.STATE.unlink(missing_ok=True)

    def acquire(self) -> None:
        def grant(state: dict[str, Any]) -> None:
            for d in unreadable_for_others(self.paths):
                mode = os.stat(d).st_mode
                state["modes"].setdefault(d, mode)
                os.chmod(d, mode | stat.S_IXOTH)
            state["holders"].append(os.getpid())

        self._locked(grant)

    def release(self) -> None:
        self._locked(lambda state: state["holders"].remove(os.getpid())
                     if os.getpid() in state["holders"] else None)  # fmt: skip

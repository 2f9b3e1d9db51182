"""Putting a task in its ``runtime_env`` and taking it out again (the form ``api/runtime_env``
checked at submission).

Ray starts workers per environment. Here a worker runs one task at a time on its main thread
(one blocked in ``get`` takes no other), so the environment is set around each task instead:
``os.environ`` gets the task's ``env_vars`` (``${NAME}`` in a value expanded, as Ray does),
the working directory becomes the cwd and the first entry of ``sys.path``, ``py_modules`` are
importable; afterwards every variable is put back, and the modules imported from those
directories are forgotten, so the next task on the same worker sees none of it and imports
its own versions. That costs nothing for tasks without an environment and spares a process
per environment. What it cannot undo: threads a task leaves running, and values a module
imported from elsewhere cached from the variables. An actor's environment is set once, for
its whole life (its worker is its own).
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

_MISSING = object()
_UNSET = re.compile(r"\$\{[A-Z0-9_]+\}")


def apply(env: dict[str, Any]) -> Callable[[], None]:
    """Put this process in ``env``; return what puts it back."""
    paths = _import_paths(env)
    wd = env.get("working_dir")
    for p in [*([wd] if wd else []), *env.get("py_modules", ())]:
        if not os.path.exists(p):  # checked first: a missing one changes nothing
            raise FileNotFoundError(
                f"runtime_env: {p} does not exist on node {socket.gethostname()}. nbcluster "
                "uses working_dir and py_modules in place: on a cluster of several machines "
                "they must be at the same path on every node (a shared filesystem)"
            )
    saved_env = {k: os.environ.get(k, _MISSING) for k in env.get("env_vars", ())}
    for k, v in env.get("env_vars", {}).items():
        # As Ray: ``${NAME}`` is the worker's own NAME (``PATH=${PATH}:/opt/bin``), or "".
        os.environ[k] = _UNSET.sub("", os.path.expandvars(v))
    saved_cwd = os.getcwd() if wd else None
    if wd:
        os.chdir(wd)
    saved_path = list(sys.path)
    sys.path[:0] = paths
    before = set(sys.modules) if paths else None

    def undo() -> None:
        for k, v in saved_env.items():
            if v is _MISSING:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v  # type: ignore[assignment]
        if saved_cwd is not None:
            os.chdir(saved_cwd)
        sys.path[:] = saved_path
        if before is not None:
            _forget_modules_from(paths, before)

    return undo


def _import_paths(env: dict[str, Any]) -> list[str]:
    """The directories to import from: the working directory, then each py_module's parent
    (so ``import pkg`` finds ``.../pkg``)."""
    paths = [env["working_dir"]] if env.get("working_dir") else []
    for m in env.get("py_modules", ()):
        parent = os.path.dirname(m)
        if parent not in paths:
            paths.append(parent)
    return paths


def _forget_modules_from(paths: list[str], before: set[str]) -> None:
    """Drop the modules imported from ``paths`` since ``before``: another task's directory
    may hold a module of the same name."""
    roots = tuple(os.path.join(p, "") for p in paths)
    for name in set(sys.modules) - before:
        file = getattr(sys.modules.get(name), "__file__", None) or ""
        if file.startswith(roots):
            del sys.modules[name]

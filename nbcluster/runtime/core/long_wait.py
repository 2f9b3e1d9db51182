"""Hooks for a ``get``/``wait`` that blocks a while: how a notebook shows progress by itself.

A kernel (or any front end) registers a hook with ``add_hook``; when a driver's ``get`` or
``wait`` on at least two refs (``watching(..., min_refs=1)`` for one) has blocked for
``long_wait_s`` (1 s), the hook is called once, on a watcher thread, with a ``LongWait``:
the refs, the submission tag of the caller (a kernel's cell) and an event set when the call
returns (``add_done_callback`` runs on the calling thread as it returns). The runtime imports
nothing from the front end: the hook decides what to show.

The cost on the hot path is nothing without hooks, and one dict insert and pop per call with
them; the watcher thread exists only while a hook is registered.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import output

#: How often the watcher looks at the calls in progress (seconds).
_TICK_S = 0.1


@dataclass
class LongWait:
    """One ``get``/``wait`` call that is blocking."""

    kind: str  #: "get" or "wait"
    refs: list[Any]
    #: what the tag provider said when the call started (a kernel: the running cell)
    tag: Any
    started: float = field(default_factory=time.monotonic)
    #: set when the call returned (or raised)
    done: threading.Event = field(default_factory=threading.Event)
    fired: bool = False
    _callbacks: list[Callable[[], Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_done_callback(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` on the calling thread as the call returns, before its caller goes on
        (at once, here, if it already returned): a notebook draws the final state there,
        while the cell is still running."""
        with self._lock:
            if not self.done.is_set():
                self._callbacks.append(fn)
                return
        _call(fn)

    def finish(self) -> None:
        with self._lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            _call(fn)


def _call(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as e:  # the call itself already returned: report, never raise
        print(f"nbcluster: long-wait callback failed: {e!r}")


Hook = Callable[[LongWait], Any]

_hooks: list[Hook] = []
_active: dict[int, LongWait] = {}
_keys = itertools.count()
_lock = threading.Lock()
_wake = threading.Event()
_watcher: threading.Thread | None = None


def add_hook(hook: Hook) -> Callable[[], None]:
    """Call ``hook(long_wait)`` for each long ``get``/``wait``; returns a function that
    removes it. Hooks run on the watcher thread and must not block for long."""
    global _watcher
    with _lock:
        _hooks.append(hook)
        if _watcher is None or not _watcher.is_alive():
            _watcher = threading.Thread(target=_watch, name="nbcluster-long-wait", daemon=True)
            _watcher.start()

    def remove() -> None:
        with _lock:
            if hook in _hooks:
                _hooks.remove(hook)

    return remove


def hooks_registered() -> bool:
    return bool(_hooks)


@contextmanager
def watching(kind: str, refs: Sequence[Any], min_refs: int = 2) -> Iterator[None]:
    """Wrap a blocking call on ``refs``: hooks hear of it once it has lasted ``long_wait_s``."""
    if not _hooks or len(refs) < min_refs:
        yield
        return
    wait = LongWait(kind, list(refs), output.current_tag())
    key = next(_keys)
    _active[key] = wait
    try:
        yield
    finally:
        del _active[key]
        wait.finish()


def _watch() -> None:
    while True:
        with _lock:
            if not _hooks:
                return
            hooks = list(_hooks)
        now = time.monotonic()
        for wait in list(_active.values()):
            if wait.fired or now - wait.started < CONFIG.long_wait_s:
                continue
            wait.fired = True
            for hook in hooks:
                try:
                    hook(wait)
                except Exception as e:  # a broken hook must not stop the others
                    print(f"nbcluster: long-wait hook failed: {e!r}")
        _wake.wait(_TICK_S)

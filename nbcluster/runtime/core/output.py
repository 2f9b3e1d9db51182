"""Output that goes home: what remote work prints is delivered to the process that asked for it.

A worker replaces ``sys.stdout``/``sys.stderr`` with streams that, while a task runs, send each
write to that task's owner over the connection the task came on (so it arrives before the
task's result). The owner hands it to a *sink* along with the *tag* it recorded when the task
was submitted. A notebook kernel sets the tag to the submitting cell and the sink to publish
under that cell, which is how output lands under the right cell even after it finished.
Writes made outside any task go to the worker's original stream (the node's log).
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from nbcluster.runtime.wire import protocol as P

Sink = Callable[[Any, str, str, str], None]

_tag_provider: Callable[[], Any] | None = None
_sink: Sink | None = None
#: This worker's core worker (``capture_worker_output``); None in a driver.
_worker_core: Any = None


def set_tag_provider(fn: Callable[[], Any] | None) -> None:
    """``fn()`` is called at each submission; its result is remembered with the task."""
    global _tag_provider
    _tag_provider = fn


def current_tag() -> Any:
    return _tag_provider() if _tag_provider is not None else None


def set_sink(fn: Sink | None) -> None:
    """``fn(tag, stream, text, where)`` receives remote output in the driver (loop thread)."""
    global _sink
    _sink = fn


def deliver(tag: Any, stream: str, text: str, where: str, parent: bytes | None = None) -> None:
    """Show what a task printed. ``parent``: the task of this process that submitted it; a
    worker passes the text on as that task's output, so nested output reaches the driver."""
    if _sink is not None:
        try:
            _sink(tag, stream, text, where)
            return
        except Exception:  # a broken sink must not break the cluster: fall back to the console
            pass
    lines = "".join(f"{where} {line}" for line in text.splitlines(keepends=True))
    if parent is not None and _forward(parent, stream, lines):
        return
    out = sys.stderr if stream == "stderr" else sys.stdout
    out.write(lines)
    out.flush()


def _forward(parent: bytes, stream: str, text: str) -> bool:
    """Send ``text`` home as output of ``parent``, a task this worker still runs. (Not through
    ``sys.stdout``: output arrives on the loop thread, which runs no task.)"""
    executor = getattr(_worker_core, "executor", None)
    ctx = executor.running.get(parent) if executor is not None else None
    return ctx is not None and _send_as(ctx, stream, text)


def _send_as(task: Any, stream: str, text: str) -> bool:
    """Send ``text`` to ``task``'s owner as what it printed; False if its connection is gone."""
    conn = task.conn
    if conn is None or conn.closed:
        return False
    conn.post(P.Output(task.task_id, stream, text, _where(task)))
    return True


def warn_user(core: Any, text: str) -> None:
    """Warn whoever waits on this process's work: a driver warns here (its cell shows it), a
    worker sends the text home as stderr of each task it runs, up to the driver that waits.
    (Warnings raised on a worker's loop thread would otherwise reach only the node's log.)"""
    executor = getattr(core, "executor", None)
    running = list(executor.running.values()) if executor is not None else []
    sent = [_send_as(ctx, "stderr", text + "\n") for ctx in running]
    if not any(sent):
        warnings.warn(text, stacklevel=2)


def cancel_tag(tag: Any) -> int:
    """Cancel every unfinished task submitted under ``tag``; return how many."""
    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()
    if core is None:
        return 0

    async def go() -> int:
        return int(core.submitter.cancel_tagged(tag))

    return int(core.run_sync(go, timeout=10))


class TaskStream(io.TextIOBase):
    """A worker's stdout/stderr: forwards writes made by a running task to its owner.

    Output is sent in whole lines, so a print() arrives as one piece, not as its fragments.
    The partial line waiting for its end is kept with the task that wrote it (its context),
    not in the stream: calls of a threaded or async actor print at the same time, and each
    line must go home whole, under its own call.
    """

    def __init__(self, name: str, original: TextIO, core: Any) -> None:
        self.name = name
        self._original = original
        self._core = core

    def write(self, s: str) -> int:
        task = self._core.current_task
        conn = task.conn if task is not None else None
        if conn is None or conn.closed:
            n = self._original.write(s)
            self._original.flush()
            return n
        text = task.out.pop(self.name, "") + s
        cut = text.rfind("\n") + 1
        if cut:
            _send_as(task, self.name, text[:cut])
            text = text[cut:]
        if text:
            task.out[self.name] = text
        return len(s)

    def flush(self) -> None:
        task = self._core.current_task
        text = task.out.pop(self.name, "") if task is not None else ""
        if text and not _send_as(task, self.name, text):
            self._original.write(text)
        self._original.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")


def _where(task: Any) -> str:
    import os

    return f"({task.fn_name} pid={os.getpid()})"


def capture_worker_output(core: Any) -> None:
    global _worker_core
    _worker_core = core
    sys.stdout = TaskStream("stdout", sys.__stdout__, core)  # type: ignore[arg-type]
    sys.stderr = TaskStream("stderr", sys.__stderr__, core)  # type: ignore[arg-type]

"""Output goes home: remote output is published under the cell that submitted the work.

ipykernel sends whatever a background thread writes to the cell that is active *now*, which is
why late task output lands in random cells elsewhere. Instead, every submission is tagged with
the submitting request's parent header (the runtime remembers the tag with the task), and each
chunk the task prints is published on IOPub with that parent, so a frontend shows it under the
cell that launched the work, even after that cell finished and while another one runs.

Work launched outside any request (a tag of None) writes to the kernel's log, never into a cell.
The same tag names the work a cell launched, so an interrupted cell can cancel exactly its own.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbcluster.runtime.core import output

#: True while ``%%remote`` submits a cell body: its output needs no "where" prefix, since
#: it should read exactly as if the cell had run locally.
_plain_submission: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "nbcluster_plain_submission", default=False
)


@dataclass(frozen=True)
class CellTag:
    """The request a piece of remote work belongs to. Equal (and hashed) by ``msg_id`` only,
    so ``cancel_tag(CellTag(msg_id))`` finds every task the request submitted."""

    msg_id: str
    header: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    plain: bool = field(default=False, compare=False, hash=False)

    def __str__(self) -> str:
        """What the state API shows as a task's ``tag`` (and filters on): the cell's msg_id."""
        return self.msg_id


class KernelLike(Protocol):
    """What the router needs from an ipykernel ``Kernel`` (any kernel, not only ours)."""

    session: Any
    iopub_socket: Any

    def get_parent(self, channel: str | None = None) -> dict[str, Any]: ...


class OutputRouter:
    """Tags submissions with the current request and publishes remote output under it."""

    def __init__(self, kernel: KernelLike) -> None:
        self._kernel = kernel
        # (msg_id, stream, where) of output that stopped mid-line: its next chunk continues
        # that line, so it must not get a second prefix.
        self._mid_line: set[tuple[str, str, str]] = set()
        self._last_tag: CellTag | None = None
        self._lock = threading.Lock()

    def install(self) -> None:
        output.set_tag_provider(self.current_tag)
        output.set_sink(self.publish)

    @staticmethod
    def uninstall() -> None:
        output.set_tag_provider(None)
        output.set_sink(None)

    def current_tag(self) -> CellTag | None:
        """The tag for a submission made now: the shell request being handled, if any."""
        try:
            parent = self._kernel.get_parent("shell")
        except LookupError:
            return None
        header = parent.get("header") if parent else None
        if not header or "msg_id" not in header:
            return None
        plain = _plain_submission.get()
        last = self._last_tag  # a cell submitting many tasks shares one tag
        if last is None or last.header is not header or last.plain != plain:
            last = self._last_tag = CellTag(header["msg_id"], header, plain)
        return last

    def publish(self, tag: object | None, stream: str, text: str, where: str) -> None:
        """The runtime's sink: runs on the runtime's thread for each chunk a task printed."""
        name = "stderr" if stream == "stderr" else "stdout"
        if not isinstance(tag, CellTag):
            self._to_log(name, self._prefixed(None, name, text, where))
            return
        if not tag.plain:
            text = self._prefixed(tag.msg_id, name, text, where)
        self._kernel.session.send(
            self._kernel.iopub_socket,
            "stream",
            {"name": name, "text": text},
            parent=tag.header,
            ident=f"stream.{name}".encode(),
        )

    def _prefixed(self, msg_id: str | None, stream: str, text: str, where: str) -> str:
        """Prefix each new line with where it ran, as Ray does: ``(f pid=123) hello``."""
        if not where:
            return text
        key = (msg_id or "", stream, where)
        with self._lock:
            at_line_start = key not in self._mid_line
            if text.endswith("\n"):
                self._mid_line.discard(key)
            elif text:
                self._mid_line.add(key)
        lines = text.splitlines(keepends=True)
        out = [
            line if i == 0 and not at_line_start else f"{where} {line}"
            for i, line in enumerate(lines)
        ]
        return "".join(out)

    def _to_log(self, stream: str, text: str) -> None:
        # sys.__stdout__/__stderr__ are the kernel process's own streams (the server's
        # console or log file); sys.stdout in a kernel would publish to the active cell.
        target = sys.__stderr__ if stream == "stderr" else sys.__stdout__
        if target is None:
            return
        try:
            target.write(text)
            target.flush()
        except (OSError, ValueError):  # closed at exit: nowhere left to write
            pass

    def cancel(self, msg_id: str) -> int:
        """Cancel every unfinished task that the request ``msg_id`` submitted."""
        return output.cancel_tag(CellTag(msg_id))


@contextmanager
def plain_submissions() -> Iterator[None]:
    """Submissions made inside print their output without the "where" prefix."""
    token = _plain_submission.set(True)
    try:
        yield
    finally:
        _plain_submission.reset(token)

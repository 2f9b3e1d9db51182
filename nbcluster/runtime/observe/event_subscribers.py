"""Live subscribers of the head's event log: pushed every batch in order, never a silent gap.

A subscriber (any authenticated connection that called ``subscribe_events``) is pushed each
batch as it arrives, as ``event_batch(first_seq, header, packed events)``. One that cannot
keep up (its connection's send buffer passes ``LAG_BYTES``) is paused rather than buffered
without bound; when it drains it resumes where it stopped, and if the history no longer
reaches back that far it is told exactly which sequence numbers it lost (``events_lost``).
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcluster.runtime.wire.transport import Connection

#: A subscriber whose unsent bytes exceed this is paused until its connection drains.
LAG_BYTES = 8 << 20


class Subscriber:
    __slots__ = ("conn", "next_seq", "paused")

    def __init__(self, conn: Connection, next_seq: int) -> None:
        self.conn = conn
        self.next_seq = next_seq  # the first sequence number it has not been sent
        self.paused = False


class Subscribers:
    """The subscriber half of ``EventLog`` (which owns ``chunks`` and ``next_seq``)."""

    loop: asyncio.AbstractEventLoop
    #: (first sequence number, header, packed events, state changes) per batch, oldest first
    chunks: collections.deque[tuple[int, list[Any], bytes, int]]
    next_seq: int

    def __init__(self) -> None:
        self.subscribers: dict[Connection, Subscriber] = {}
        self._retry_scheduled = False

    def subscribe(self, conn: Connection, from_seq: int | None = None) -> Any:
        """Start pushing events to ``conn``: those from ``from_seq`` on (None: only new ones).

        Answers ``{"next_seq", "oldest_seq"}``; the pushes follow the answer on the same
        connection, as ``event_batch(first_seq, header, packed events)`` notifications.
        """
        start = self.next_seq if from_seq is None else max(1, int(from_seq))
        self.subscribers[conn] = Subscriber(conn, start)
        self.loop.call_soon(self._push)  # after the reply, which is queued first
        return {"next_seq": self.next_seq, "oldest_seq": self.oldest_seq()}

    def oldest_seq(self) -> int:
        return self.chunks[0][0] if self.chunks else self.next_seq

    def _push(self) -> None:
        for conn, sub in list(self.subscribers.items()):
            if conn.closed:
                del self.subscribers[conn]
                continue
            if sub.next_seq >= self.next_seq:
                continue
            transport = conn.transport
            if transport is not None and transport.get_write_buffer_size() > LAG_BYTES:
                sub.paused = True
                continue
            sub.paused = False
            self._send_from(sub)
        if any(s.paused for s in self.subscribers.values()) and not self._retry_scheduled:
            self._retry_scheduled = True
            self.loop.call_later(0.05, self._retry_paused)

    def _retry_paused(self) -> None:
        self._retry_scheduled = False
        self._push()

    def _send_from(self, sub: Subscriber) -> None:
        oldest = self.oldest_seq()
        if sub.next_seq < oldest:
            sub.conn.notify("events_lost", sub.next_seq, oldest)
            sub.next_seq = oldest
        # A batch reaching back before ``next_seq`` is sent whole; the subscriber skips what
        # it already has (a combined event cannot be cut in the middle).
        for first, header, blob, _n in self._chunks_from(sub.next_seq):
            sub.conn.notify("event_batch", first, header, blob)
        sub.next_seq = self.next_seq

    def _chunks_from(self, seq: int) -> list[tuple[int, list[Any], bytes, int]]:
        """The chunks holding sequence numbers >= ``seq`` (usually just the newest one)."""
        out = []
        for chunk in reversed(self.chunks):
            if chunk[0] + chunk[3] <= seq:
                break
            out.append(chunk)
            if chunk[0] <= seq:
                break
        out.reverse()
        return out

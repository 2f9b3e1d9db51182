"""A cluster's live event stream, relayed to one browser WebSocket as JSON.

The head pushes every state change; a busy cluster makes tens of thousands a second, more
than a page can draw or a network link should carry. The relay collects them and sends one
message (a JSON list of events) at most every ``FLUSH_S``. When more than ``MAX_PENDING``
pile up between two sends, or while the browser has not taken the last message yet, the
backlog is replaced by a single ``EVENTS_LOST`` event naming the sequence numbers skipped,
exactly as the Python subscription reports a gap: the page then reloads what it shows
instead of replaying the flood.

Messages on the socket: first ``{"subscribed": {"next_seq": n, "oldest_seq": m}}`` once the
head streams to it, then lists of events ``{"seq", "time", "type", "data", "source"}``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from nbcluster.dashboard.client import ClusterClient, Subscription
from nbcluster.runtime.api.event_stream import decode

#: How often buffered events go to the browser (seconds).
FLUSH_S = 0.1
#: A backlog larger than this is replaced by one EVENTS_LOST event.
MAX_PENDING = 5000

Send = Callable[[str], "Awaitable[None] | None"]


class EventRelay:
    def __init__(
        self,
        client: ClusterClient,
        send: Send,
        on_end: Callable[[], None],
        types: list[str] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.client = client
        self.send = send
        self.on_end = on_end
        #: event type prefixes wanted (``TASK_``, ``NODE_STATS``...); None: all
        self.types = tuple(types) if types else None
        self.max_pending = max_pending
        self.pending: list[dict[str, Any]] = []
        self.lost_from: int | None = None  # first seq of a dropped backlog
        self.next_seq = 0  # one past the last seq seen
        self.sub: Subscription | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Future[Any] | None = None
        self.closed = False

    async def start(self, from_seq: int | None) -> None:
        self.sub = await self.client.subscribe(
            from_seq, self._on_batch, self._on_lost, self._on_head_closed
        )
        reply = self.sub.reply
        self.next_seq = int(reply.get("next_seq", 0)) if from_seq is None else int(from_seq)
        self._send(json.dumps({"subscribed": reply}))

    # -- from the head ---------------------------------------------------------------------------
    def _on_batch(self, first: int, header: list[Any], blob: bytes) -> None:
        try:
            events = decode(first, header, blob)
        except Exception:  # undecodable: count it lost, keep the stream
            events = []
        types = self.types
        for ev in events:
            if ev.seq < self.next_seq:
                continue  # a catch-up batch reaching back before where we are
            self.next_seq = ev.seq + 1
            if types is not None and not ev.type.startswith(types):
                continue
            if self.lost_from is None:
                self.pending.append(
                    {"seq": ev.seq, "time": ev.time, "type": ev.type, "data": ev.data,
                     "source": ev.source}
                )  # fmt: skip
        if len(self.pending) > self.max_pending:
            self.lost_from = self.pending[0]["seq"]
            self.pending.clear()
        self._schedule()

    def _on_lost(self, first: int, upto: int) -> None:
        if self.lost_from is None:
            self.lost_from = first
            self.pending.clear()
        self.next_seq = max(self.next_seq, upto)
        self._schedule()

    def _on_head_closed(self) -> None:
        self.close()

    # -- to the browser --------------------------------------------------------------------------
    def _schedule(self) -> None:
        if self._timer is None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self.closed:
            return
        if self._inflight is not None and not self._inflight.done():
            if len(self.pending) > self.max_pending // 10 and self.lost_from is None:
                self.lost_from = self.pending[0]["seq"]  # the browser is not keeping up
                self.pending.clear()
            self._schedule()
            return
        if self.lost_from is not None:
            lost = {"seq": self.lost_from, "type": "EVENTS_LOST", "time": None, "source": {},
                    "data": {"from_seq": self.lost_from, "to_seq": self.next_seq}}  # fmt: skip
            batch, self.pending, self.lost_from = [lost], [], None
        elif self.pending:
            batch, self.pending = self.pending, []
        else:
            return
        self._send(json.dumps(batch, default=str))

    def _send(self, text: str) -> None:
        try:
            result = self.send(text)
        except Exception:  # the socket is gone
            self.close()
            return
        if result is not None:
            self._inflight = asyncio.ensure_future(result)
            self._inflight.add_done_callback(self._sent)

    def _sent(self, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.sub is not None:
            self.sub.close()
        self.on_end()

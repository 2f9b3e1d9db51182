"""The client end of the live event stream: ``nbcluster.util.state.subscribe``.

A subscription is its own connection to the head, so a flood of events never queues behind
(or ahead of) the process's task traffic. The head pushes batches; each batch starts at the
sequence number the previous one ended at, which the subscription checks, so a gap can only
ever appear as an explicit ``EVENTS_LOST`` event (the head says so when a slow subscriber
fell behind its history).

Flow control is end to end: when a consumer lets more than ``max_pending`` events pile up,
the subscription stops reading its socket, the head sees its send buffer fill and pauses that
subscriber, and both resume as the consumer catches up. A callback subscriber is called on
the process's I/O thread, so it must be quick (a widget handing data to its own thread, say).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from nbcluster.runtime import events as E
from nbcluster.runtime.core import event_shipping
from nbcluster.runtime.wire.transport import Connection, parse_address

_KINDS = ("TASK_", "ACTOR_", "OBJECT_", "NODE_", "WORKER_")
#: Event kind -> its name, as subscribers see it (``Event.type``).
NAMES: dict[int, str] = {
    v: k for k, v in vars(E).items() if k.startswith(_KINDS) and isinstance(v, int)
}

#: The names of each kind's fields after (kind, time).
FIELDS: dict[int, tuple[str, ...]] = {
    E.TASK_SUBMITTED: ("task_id", "name", "attempt", "args", "nested_args", "num_returns", "tag",
                     "call_site", "actor_id"),
    E.TASK_SCHEDULED: ("task_id", "attempt", "worker_address"),
    E.TASK_RUNNING: ("task_id", "name"),
    E.TASK_ENDED: ("task_id",),
    E.TASK_FINISHED: ("task_id", "results"),
    E.TASK_FAILED: ("task_id", "attempt", "error_type", "error_message"),
    E.TASK_RETRIED: ("task_id", "attempt", "reason"),
    E.TASK_CANCELLED: ("task_id", "attempt"),
    E.TASK_PROGRESS: ("task_id", "key", "desc", "n", "total", "unit"),
    E.ACTOR_STATE: ("actor_id", "state", "class_name", "name", "namespace", "owner", "node_id",
                  "pid", "num_restarts", "death_cause", "creation_task_id"),
    E.OBJECT_CREATED: ("object_id", "size", "location", "call_site"),
    E.OBJECT_SPILLED: ("object_id", "size"),
    E.OBJECT_RESTORED: ("object_id", "size"),
    E.OBJECT_FREED: ("object_id",),
    E.NODE_JOINED: ("node_id", "address", "resources", "store_capacity"),
    E.NODE_DEAD: ("node_id", "reason"),
    E.NODE_STATS: ("node_id", "stats"),
    E.WORKER_STARTED: ("worker_id", "pid", "address", "kind"),
    E.WORKER_EXITED: ("worker_id", "pid", "kind"),
}  # fmt: skip

_SUBS: dict[Connection, EventSubscription] = {}
_CLOSED = object()


@dataclass(frozen=True)
class Event:
    """One state change. ``data`` holds the kind's fields (``events.FIELDS``), ids in hex."""

    seq: int
    time: float
    type: str  # TASK_SUBMITTED, ..., or EVENTS_LOST (data: from_seq, to_seq)
    data: dict[str, Any] = field(default_factory=dict)
    #: the process that reported it: kind (driver/worker/node), pid, node_id, address
    source: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _results(tid: bytes, results: Any) -> list[dict[str, Any]]:
    return [
        {"object_id": (tid + (j + 1).to_bytes(4, "big")).hex(), "size": r[1], "location": r[2]}
        for j, r in enumerate(E.results_of(results))
    ]


def _expand(ev: list[Any], address: str) -> list[tuple[int, float, dict[str, Any]]]:
    """(kind, time, fields) of each state change a wire event stands for (``events``)."""
    try:
        return _expand_one(ev, address)
    except Exception:  # malformed: keep the numbering (the head counted it too)
        try:
            n = E.weight(ev)
        except Exception:
            n = 1
        return [(-1, 0.0, {"raw": repr(ev)[:200]})] * n


def _expand_one(ev: list[Any], address: str) -> list[tuple[int, float, dict[str, Any]]]:
    kind = ev[0]
    if kind == E.TASK_RAN:
        _, ts, tid, name, started, queued, results = ev
        t = tid.hex()
        out = []
        if queued is not None:
            out.append(
                (
                    E.TASK_SCHEDULED,
                    queued,
                    {"task_id": t, "attempt": None, "worker_address": address},
                )
            )
        out.append((E.TASK_RUNNING, started, {"task_id": t, "name": name}))
        if results is not None:
            out.append((E.TASK_FINISHED, ts, {"task_id": t, "results": _results(tid, results)}))
        else:
            out.append((E.TASK_ENDED, ts, {"task_id": t}))
        return out  # fmt: skip
    data = {name: _plain(v) for name, v in zip(FIELDS.get(kind, ()), ev[2:], strict=False)}
    if kind == E.TASK_FINISHED:
        data["results"] = _results(ev[2], ev[3])
    return [(kind, ev[1], data)]


def decode(first_seq: int, header: list[Any], blob: bytes) -> list[Event]:
    """The events of one pushed batch (packed), numbered from ``first_seq``."""
    batch = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    kind, pid, node_id, _worker_id, address = header
    source = {"kind": kind, "pid": pid, "node_id": node_id, "address": address}
    out = []
    seq = first_seq
    for ev in batch:
        for k, ts, data in _expand(ev, address):
            out.append(Event(seq, ts, NAMES.get(k, str(k)), data, source))
            seq += 1
    return out


class EventSubscription:
    """Events pushed by the head; iterate, ``get(timeout)``, or pass a callback."""

    def __init__(self, core: Any, from_seq: int | None, callback: Callable[[Event], None] | None,
                 max_pending: int) -> None:  # fmt: skip
        self._core = core
        self._callback = callback
        self._max_pending = max_pending
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._paused = False
        self._conn: Connection | None = None
        self.closed = False
        self.lost = 0  #: events the head could no longer deliver (also seen as EVENTS_LOST)
        self.next_seq = 0  #: the sequence number the next event will carry
        self.oldest_seq = 0  #: the oldest the head still had when we subscribed
        reply = core.run_sync(lambda: self._open(from_seq), 30)
        self.next_seq = reply["next_seq"] if from_seq is None else max(1, from_seq)
        self.oldest_seq = reply["oldest_seq"]

    async def _open(self, from_seq: int | None) -> Any:
        core = self._core

        def lost(conn: Connection) -> None:
            _SUBS.pop(conn, None)
            self._finish()

        conn = self._conn = await connect_to_head(core, lost)
        rpc = core.endpoint.rpc
        if "event_batch" not in rpc:
            rpc["event_batch"] = lambda c, first, header, batch: _SUBS[c]._on_batch(
                first, header, batch
            )
            rpc["events_lost"] = lambda c, first, upto: _SUBS[c]._on_lost(first, upto)
        _SUBS[conn] = self
        return await conn.call("subscribe_events", from_seq)

    # -- loop thread ------------------------------------------------------------------------
    def _deliver(self, events: list[Event]) -> None:
        if self._callback is not None:
            for ev in events:
                self._callback(ev)
            return
        for ev in events:
            self._queue.put(ev)
        conn = self._conn
        over = self._queue.qsize() > self._max_pending
        if over and not self._paused and conn is not None and conn.transport is not None:
            conn.transport.pause_reading()
            self._paused = True

    def _on_batch(self, first: int, header: list[Any], blob: bytes) -> None:
        events = decode(first, header, blob)
        if first > self.next_seq:  # never expected: the head reports losses itself
            self._on_lost(self.next_seq, first)
        elif first < self.next_seq:  # a catch-up batch reaching back before where we are
            events = [e for e in events if e.seq >= self.next_seq]
        if events:
            self.next_seq = events[-1].seq + 1
            self._deliver(events)

    def _on_lost(self, first: int, upto: int) -> None:
        self.lost += upto - first
        self.next_seq = max(self.next_seq, upto)
        self._deliver([Event(first, time.time(), "EVENTS_LOST",
                             {"from_seq": first, "to_seq": upto})])  # fmt: skip

    def _finish(self) -> None:
        self.closed = True
        self._queue.put(_CLOSED)

    def _resume(self) -> None:
        conn = self._conn
        if self._paused and conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()
        self._paused = False

    # -- user threads -------------------------------------------------------------------------
    def get(self, timeout: float | None = None) -> Event:
        """The next event; raises ``queue.Empty`` after ``timeout`` seconds, ``EOFError`` once
        the subscription is closed (or the head went away) and every event was taken."""
        item = self._queue.get(timeout=timeout)
        if item is _CLOSED:
            self._queue.put(_CLOSED)
            raise EOFError("the event subscription is closed")
        if self._paused and self._queue.qsize() < self._max_pending // 2:
            self._core.call_soon(self._resume)
        return item  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                yield self.get()
            except EOFError:
                return

    def close(self) -> None:
        if self.closed:
            return
        conn = self._conn

        def stop() -> None:
            if conn is not None:
                _SUBS.pop(conn, None)
                conn.close()
            self._finish()

        if self._core.closed:
            self._finish()
        else:
            self._core.call_soon(stop)

    def __enter__(self) -> EventSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def connect_to_head(core: Any, on_lost: Callable[[Connection], None]) -> Connection:
    """A connection of its own to the head (a subscription's: pushes on it never queue with
    the process's other traffic); ``on_lost(conn)`` runs once it closes."""
    host, port = parse_address(core.node_info["head_address"])
    conn: Connection = await core.endpoint.connect(host, port)
    original = conn.connection_lost

    def lost(exc: Exception | None) -> None:
        original(exc)
        on_lost(conn)

    conn.connection_lost = lost  # type: ignore[method-assign,unused-ignore]
    return conn


def subscribe(
    callback: Callable[[Event], None] | None = None,
    *,
    from_seq: int | None = None,
    max_pending: int = 200_000,
    address: str | None = None,
) -> EventSubscription:
    """Receive the cluster's events as they happen (pushed by the head, not polled).

    ``from_seq``: start there (1: everything the head still keeps) instead of at the next
    event. ``callback``: called on the I/O thread with each event, instead of queueing them
    for ``get``/iteration. Close it (or use ``with``) when done.
    """
    return EventSubscription(connected_core(address), from_seq, callback, max_pending)


def connected_core(address: str | None = None) -> Any:
    """This process's core; attaches to the cluster at ``address`` (default: the local one)
    first if this process is not connected yet, so the CLI and scripts need no ``init``."""
    from nbcluster.runtime.api import session as api
    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()
    if core is None:
        api.init(address=address or "auto")
        core = get_core()
    return core


def ask_head(method: str, *args: Any, address: str | None = None, timeout: float = 30) -> Any:
    """A state query to the head, after shipping this process's own buffered events on the
    same connection and having the workers it talks to ship theirs (so the answer includes
    everything this process did and saw: read your writes, and your gets)."""
    core = connected_core(address)

    async def go() -> Any:
        event_shipping.flush(core)  # ours first: a task's submission before its workers' report
        await event_shipping.sync_observed(core)
        return await core.head.call(method, *args)

    return core.run_sync(go, timeout)

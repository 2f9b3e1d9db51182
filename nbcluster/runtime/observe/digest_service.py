"""Digest subscriptions: the head pushes each live view what changed in its scope, coalesced.

A subscriber (a notebook kernel's widgets) opens digests on its own connection, each with a
kind and a scope (``digest_progress``, ``digest_graph``, ``digest_nodes``):
``digest_open(id, kind, spec, live)`` answers the digest's whole picture at once. While a
digest is *live*, the head applies the task events it has (``EventLog.catch_up``) every
``INTERVAL_S``, tells each live digest which tasks, objects and nodes changed, and pushes
one ``digest(items)`` message per connection with an ``(id, seq, full, payload)`` item for
each digest that has something new: at most one per digest per interval however many events
arrived, and only what its view shows. A paused digest (``digest_live(id, False)``, no one is
looking) costs nothing; going live again rebuilds it from the tables and pushes it whole.

Items are numbered per digest; ``full`` ones replace what the subscriber had, the others
build on the previous one, so a subscriber that sees a gap asks ``digest_full(id)``. A
graph's deltas are followed by a full picture once it has been quiet for ``SETTLE_S`` (and
every ``FULL_EVERY_S`` while it keeps changing), which is what a saved notebook keeps. A
subscriber that cannot keep up (its connection has ``LAG_BYTES`` unsent) is skipped for the
interval; its digests keep absorbing, so it later gets one coalesced item, never a backlog.

The raw stream (``subscribe_events``) and the state queries are untouched: this only reads
the tables, and learns what changed through ``EventLog.also_on``.

RPCs: ``digest_open``, ``digest_live``, ``digest_full``, ``digest_close`` (on the digest's
connection), ``digest_query(id, ready_all, ready)`` (any connection: the picture now).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events as E
from nbcluster.runtime.observe.digest import Digest, task_ids
from nbcluster.runtime.observe.digest_graph import TaskGraph
from nbcluster.runtime.observe.digest_nodes import NodeList
from nbcluster.runtime.observe.digest_progress import TaskBars, TaskCounts

if TYPE_CHECKING:
    import asyncio

    from nbcluster.runtime.observe.event_log import EventLog, Source
    from nbcluster.runtime.observe.metrics_history import MetricsHistory
    from nbcluster.runtime.wire.transport import Connection, Endpoint

#: Seconds between two pushes (so at most ten updates a second per view).
INTERVAL_S = 0.1
#: A changing graph is pushed whole once quiet this long, and at least this often.
SETTLE_S = 1.0
FULL_EVERY_S = 10.0
#: A subscriber with more unsent bytes than this is skipped until it drains.
LAG_BYTES = 4 << 20

_TASK_KINDS = (E.TASK_SUBMITTED, E.TASK_SCHEDULED, E.TASK_RUNNING, E.TASK_ENDED,
               E.TASK_FINISHED, E.TASK_FAILED, E.TASK_RETRIED, E.TASK_CANCELLED, E.TASK_RAN)
_OBJECT_KINDS = (E.OBJECT_CREATED, E.OBJECT_SPILLED, E.OBJECT_RESTORED, E.OBJECT_FREED)
_NODE_KINDS = (E.NODE_JOINED, E.NODE_DEAD, E.NODE_STATS)  # fmt: skip


@dataclass
class Entry:
    conn: Connection
    digest: Digest
    live: bool
    seq: int = 0
    last_full: float = field(default_factory=time.monotonic)
    last_delta: float = 0.0
    #: deltas pushed since the last full payload
    unsettled: bool = False


class DigestService:
    def __init__(self, endpoint: Endpoint, log: EventLog,
                 metrics: MetricsHistory | None = None) -> None:  # fmt: skip
        self.loop: asyncio.AbstractEventLoop = endpoint.loop
        self.log = log
        self.metrics = metrics
        self.entries: dict[str, Entry] = {}
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[bytes] = set()
        self._objects: set[bytes] = set()
        self._freed: set[bytes] = set()
        self._nodes: set[str] = set()
        for kind in _TASK_KINDS:
            log.also_on(kind, self._task_changed)
        for kind in _OBJECT_KINDS:
            log.also_on(kind, self._object_freed if kind == E.OBJECT_FREED
                        else self._object_changed)  # fmt: skip
        for kind in _NODE_KINDS:
            log.also_on(kind, self._node_changed)
        #: what tasks reported of their own progress (``nbcluster.util.progress``)
        self.bars = TaskBars()
        log.also_on(E.TASK_PROGRESS, self._task_progress)
        rpc = endpoint.rpc
        rpc["digest_open"] = self.open
        rpc["digest_live"] = self.set_live
        rpc["digest_full"] = self.push_full
        rpc["digest_close"] = lambda conn, did: self._drop(str(did))
        rpc["digest_query"] = self.query

    # -- what changed (called by the event log for each event it applies) -------------------
    def _task_changed(self, ev: Any, src: Source) -> None:
        if self._live:
            self._tasks.add(ev[2])

    def _task_progress(self, ev: Any, src: Source) -> None:
        _, ts, tid, key, desc, n, total, unit = ev
        self.bars.report(tid, key, desc, n, total, unit, ts)
        if self._live:
            self._tasks.add(tid)

    def _object_changed(self, ev: Any, src: Source) -> None:
        if self._live:
            self._objects.add(ev[2])

    def _object_freed(self, ev: Any, src: Source) -> None:
        if self._live:
            self._objects.add(ev[2])
            self._freed.add(ev[2])

    def _node_changed(self, ev: Any, src: Source) -> None:
        if self._live:
            self._nodes.add(ev[2])

    # -- RPCs ------------------------------------------------------------------------------------
    def _make(self, kind: str, spec: Any) -> Digest:
        if not isinstance(spec, dict):
            raise TypeError(f"a digest's spec is a dict, not {type(spec).__name__}")
        if kind == "progress":
            return TaskCounts(self.log, spec, self.bars)
        if kind == "graph":
            return TaskGraph(self.log, spec)
        if kind == "nodes":
            return NodeList(self.log, spec, self.metrics)
        raise ValueError(f"unknown digest kind {kind!r} (progress, graph or nodes)")

    def open(self, conn: Connection, did: str, kind: str, spec: Any, live: bool = True) -> Any:
        """Open digest ``did`` on ``conn``; answers its whole picture (item number 0)."""
        did = str(did)
        self._drop(did)
        self.log.catch_up()
        digest = self._make(kind, spec)
        self.entries[did] = Entry(conn, digest, False)
        payload = digest.full()
        digest.pushed_full()
        if live:
            self._go_live(self.entries[did])
        return payload

    def set_live(self, conn: Connection | None, did: str, live: bool) -> None:
        entry = self.entries.get(str(did))
        if entry is None or entry.live == bool(live):
            return
        if live:
            self.log.catch_up()
            entry.digest.rebuild()
            self._go_live(entry)
            self._push(str(did), entry, entry.digest.full())
        else:
            entry.live = False
            self._live -= 1
            self._forget_changes_if_idle()

    def push_full(self, conn: Connection | None, did: str) -> None:
        entry = self.entries.get(str(did))
        if entry is not None:
            self.log.catch_up()
            self._absorb()
            self._push(str(did), entry, entry.digest.full())

    def query(self, conn: Connection | None, did: str, ready_all: bool = False,
              ready: Any = None) -> Any:  # fmt: skip
        """The digest's picture now; progress counts ``ready`` tasks (all, with ``ready_all``)
        as finished: the asking driver holds their results."""
        entry = self.entries.get(str(did))
        if entry is None:
            raise LookupError(f"no open digest {did!r}")
        self.log.catch_up()
        self._absorb()
        d = entry.digest
        if not entry.live:  # paused: it absorbed nothing meanwhile
            d.rebuild()
        if isinstance(d, TaskCounts) and (ready_all or ready):
            return d.full(task_ids(ready), bool(ready_all))
        return d.full()

    def on_close(self, conn: Connection) -> None:
        """A connection closed: its digests go with it."""
        for did in [d for d, e in self.entries.items() if e.conn is conn]:
            self._drop(did)

    # -- pushing -----------------------------------------------------------------------------------
    def _go_live(self, entry: Entry) -> None:
        entry.live = True
        self._live += 1
        if self._timer is None:
            self._timer = self.loop.call_later(INTERVAL_S, self._tick)

    def _drop(self, did: str) -> None:
        entry = self.entries.pop(did, None)
        if entry is not None and entry.live:
            self._live -= 1
        self._forget_changes_if_idle()

    def _forget_changes_if_idle(self) -> None:
        if not self._live:
            self._tasks, self._objects, self._freed, self._nodes = set(), set(), set(), set()

    def _push(self, did: str, entry: Entry, payload: Any) -> None:
        entry.digest.pushed_full()
        self._send(entry.conn, [self._item(did, entry, True, payload)])

    def _item(self, did: str, entry: Entry, full: bool, payload: Any) -> list[Any]:
        entry.seq += 1
        now = time.monotonic()
        if full:
            entry.last_full, entry.unsettled = now, False
        else:
            entry.last_delta, entry.unsettled = now, True
        return [did, entry.seq, full, payload]

    @staticmethod
    def _send(conn: Connection, items: list[Any]) -> None:
        if not conn.closed:
            conn.notify("digest", items)

    def _absorb(self) -> None:
        """Hand every live digest what changed since the last time."""
        tasks, objects, nodes, freed = self._tasks, self._objects, self._nodes, self._freed
        if not (tasks or objects or nodes):
            return
        self._tasks, self._objects, self._nodes, self._freed = set(), set(), set(), set()
        for entry in self.entries.values():
            if entry.live:
                entry.digest.absorb(tasks, objects, nodes, freed)

    def _tick(self) -> None:
        self._timer = None
        for did in [d for d, e in self.entries.items() if e.conn.closed]:
            self._drop(did)
        if not self._live:
            return
        self.log.catch_up()
        self._absorb()
        now = time.monotonic()
        out: dict[Connection, list[Any]] = {}
        for did, entry in self.entries.items():
            if not entry.live or self._lagging(entry.conn):
                continue
            taken = entry.digest.take()
            payload, full = taken if taken is not None else (None, False)
            if not full and entry.digest.settles and (payload is not None or entry.unsettled) and (
                now - entry.last_full >= FULL_EVERY_S
                or (payload is None and now - entry.last_delta >= SETTLE_S)
            ):
                payload, full = entry.digest.full(), True  # it holds what take() had
                entry.digest.pushed_full()
            if payload is not None:
                out.setdefault(entry.conn, []).append(self._item(did, entry, full, payload))
        for conn, items in out.items():
            self._send(conn, items)
        self._timer = self.loop.call_later(INTERVAL_S, self._tick)

    @staticmethod
    def _lagging(conn: Connection) -> bool:
        transport = conn.transport
        return transport is not None and transport.get_write_buffer_size() > LAG_BYTES

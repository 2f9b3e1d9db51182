"""The head's event log: numbered history, live subscribers and the state tables behind them.

Every process sends its events here in batches (``events``). Each batch gets the next range
of a global sequence number (one per state change), is kept as received in a bounded history
and pushed to every subscriber (``event_subscribers``). The same events update the state
tables (``state_tables``) that answer snapshot queries (``state_queries``): most batches at
once, task events (most of the traffic, in batches of their own) only when a query needs
them, so a busy cluster nobody is looking at costs the head little. Memory is bounded by
``event_history`` events and ``event_max_tasks`` / ``event_max_objects`` records; finished
tasks go oldest first.

RPCs (any authenticated connection): ``events``, ``subscribe_events``, ``unsubscribe_events``,
``state_list``, ``state_get``, ``state_summary``, ``state_timeline``, ``state_memory``.
"""

from __future__ import annotations

import collections
import heapq
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from nbcluster.runtime import events as E
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.observe.event_subscribers import Subscribers
from nbcluster.runtime.observe.state_queries import StateQueries
from nbcluster.runtime.observe.state_tables import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RANK,
    RUNNING,
    SCHEDULED,
    EntityEvents,
    ObjectRecord,
    TaskRecord,
)

if TYPE_CHECKING:
    from nbcluster.runtime.control.node_directory import NodeDirectory
    from nbcluster.runtime.wire.transport import Endpoint

log = logging.getLogger("nbcluster.events")


class Source:
    """Who sent a batch: the header every batch carries."""

    __slots__ = ("address", "kind", "node_id", "pid", "worker_id")

    def __init__(self, header: list[Any]) -> None:
        self.kind, self.pid, self.node_id, self.worker_id, self.address = header


class EventLog(EntityEvents, StateQueries, Subscribers):
    def __init__(self, endpoint: Endpoint, directory: NodeDirectory | None = None) -> None:
        StateQueries.__init__(self)
        Subscribers.__init__(self)
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.directory = directory
        self.max_events = CONFIG.event_history
        self.max_tasks = CONFIG.event_max_tasks
        self.max_objects = CONFIG.event_max_objects
        #: (first sequence number, header, events, state changes) per batch, oldest first
        self.chunks: collections.deque[tuple[int, list[Any], bytes, int]] = collections.deque()
        self.size = 0
        self.next_seq = 1
        self._sources: dict[tuple[Any, ...], Source] = {}
        #: (submitted, task id) heap of finished tasks: the oldest go first, by when they were
        #: submitted, not by when news of them arrived (workers report on their own clocks)
        self._finished: list[tuple[float, bytes]] = []
        self._n_done = 0  # finished, failed or cancelled tasks in the table
        #: tasks forgotten to bound memory (recent ones) -> when their last run started: late
        #: reports about them are ignored
        self._evicted: dict[bytes, float] = {}
        #: spills (reported by the store's node) and frees of objects whose creation is not
        #: applied yet: the owner's report may arrive, or be applied, later
        self._early: dict[bytes, str] = {}
        #: (source, packed batch of task events, state changes) not applied yet
        self._unapplied: collections.deque[tuple[Source, bytes]] = collections.deque()
        self._handlers: dict[int, Callable[[Any, Source], None]] = {
            E.TASK_SUBMITTED: self._submitted, E.TASK_SCHEDULED: self._scheduled,
            E.TASK_RUNNING: self._running, E.TASK_ENDED: self._ended,
            E.TASK_FINISHED: self._finished_ok, E.TASK_FAILED: self._failed,
            E.TASK_CANCELLED: self._cancelled, E.TASK_RETRIED: self._retried,
            E.TASK_RAN: self._ran,
            E.ACTOR_STATE: self._actor, E.OBJECT_CREATED: self._object_created,
            E.OBJECT_SPILLED: self._spilled, E.OBJECT_RESTORED: self._restored,
            E.OBJECT_FREED: self._freed, E.NODE_JOINED: self._node_joined,
            E.NODE_DEAD: self._node_dead, E.NODE_STATS: self._node_stats,
            E.WORKER_STARTED: self._worker_started, E.WORKER_EXITED: self._worker_exited,
        }  # fmt: skip
        # Dispatch by list index (kinds are small ints): the hottest lookup of the head.
        self._by_kind: list[Callable[[Any, Source], None] | None] = [None] * 64
        for kind, fn in self._handlers.items():
            self._by_kind[kind] = fn
        rpc = endpoint.rpc
        rpc["events"] = lambda conn, header, *batches: self.ingest(header, *batches)
        rpc["subscribe_events"] = self.subscribe
        rpc["unsubscribe_events"] = lambda conn: self.subscribers.pop(conn, None) and None
        self.install_queries(rpc)

    def source_count(self) -> int:
        return len(self._sources)

    def also_on(self, kind: int, fn: Callable[[Any, Source], None]) -> None:
        """Also call ``fn(event, source)`` for each event of ``kind`` applied to the tables,
        after the log's own handler: how views kept beside the tables (the dashboard's
        metrics history) follow the log without a hook in its hot path."""
        own = self._by_kind[kind]

        def both(ev: Any, src: Source) -> None:
            if own is not None:
                own(ev, src)
            fn(ev, src)

        self._by_kind[kind] = both

    # -- ingest ---------------------------------------------------------------------------------
    def ingest(
        self, header: list[Any], blob: bytes | None, tasks: bytes | None = None, n_tasks: int = 0
    ) -> None:
        """One process's events, packed (``events.take``): ``blob`` is applied now; ``tasks``
        (task events, most of the traffic, ``n_tasks`` state changes) is numbered and kept as
        it is, and applied when a query needs the tables (``catch_up``)."""
        key = tuple(header)
        src = self._sources.get(key)
        if src is None:
            src = self._sources[key] = Source(header)
            if len(self._sources) > CONFIG.event_max_sources:  # processes come and go
                del self._sources[next(iter(self._sources))]
        if blob:
            self._append(header, blob, self._apply(src, blob))
        if tasks and isinstance(n_tasks, int) and n_tasks > 0:
            self._unapplied.append((src, tasks))
            self._append(header, tasks, n_tasks)
        self._bound()
        if self.subscribers:
            self._push()

    def _apply(self, src: Source, blob: bytes) -> int:
        """Update the tables with a packed batch; return how many state changes it holds."""
        try:  # tuples, not lists: tuples of plain values are not tracked by the collector
            batch = msgpack.unpackb(blob, use_list=False, raw=False, strict_map_key=False)
        except Exception as e:
            log.warning("undecodable event batch from pid %s: %r", src.pid, e)
            return 0
        handlers, weight = self._by_kind, E.weight
        n = 0
        for ev in batch:
            try:
                kind = ev[0]
                n += weight(ev)
                fn = handlers[kind]
                if fn is not None:
                    fn(ev, src)
            except Exception as e:  # one malformed event must not stop the log
                log.warning("bad event %.200r from pid %s: %r", ev, src.pid, e)
        return n

    def _append(self, header: list[Any], blob: bytes, n: int) -> None:
        self.chunks.append((self.next_seq, header, blob, n))
        self.next_seq += n
        self.size += n
        while self.size > self.max_events and len(self.chunks) > 1:
            old = self.chunks.popleft()
            self.size -= old[3]
            unapplied = self._unapplied
            if unapplied and unapplied[0][1] is old[2]:  # leaving history: apply it now
                self._apply(*unapplied.popleft())

    def catch_up(self) -> None:
        """Apply the kept batches of task events (before answering a query). Each batch is
        applied once: here, or when it leaves the history, whichever comes first."""
        while self._unapplied:
            self._apply(*self._unapplied.popleft())
        self._bound()

    def _bound(self) -> None:
        if self._n_done > self.max_tasks or len(self.tasks) > 2 * self.max_tasks:
            self._evict_tasks()
        while len(self.objects) > self.max_objects:
            del self.objects[next(iter(self.objects))]

    # -- tasks ----------------------------------------------------------------------------------
    def _task(self, tid: bytes) -> TaskRecord:
        rec = self.tasks.get(tid)
        if rec is None:
            rec = self.tasks[tid] = TaskRecord(tid)
        return rec

    def _submitted(self, ev: Any, src: Source) -> None:
        _, ts, tid, name, attempt, deps, nested, nret, tag, site, actor = ev
        rec = self.tasks.get(tid)
        if rec is None:
            started = self._evicted.get(tid) if self._evicted else None
            if started is not None and ts <= started:
                return  # its owner's report, applied after its worker's and the forgetting
            rec = self.tasks[tid] = TaskRecord(tid)
            if started is not None:
                del self._evicted[tid]  # forgotten, now rebuilt from lineage
        elif rec.creation_time is not None and not (rec.start_time and rec.start_time > ts):
            self._n_done -= RANK[rec.state] == 3
            rec.resubmitted()  # rebuilt from lineage (and not already running again)
        rec.name, rec.attempt_number, rec.args, rec.nested_args = name, attempt, deps, nested
        rec.num_returns, rec.tag, rec.creation_time = nret, tag, ts
        rec.call_site = rec.call_site or site  # a rebuild is submitted from the event loop
        rec.owner, rec.owner_pid = src.address, src.pid
        if actor is not None:
            rec.actor_id, rec.type = actor, "ACTOR_TASK"
        if rec.state is FINISHED:  # its worker's report came first: name the results' owner
            for oid in rec.return_ids():
                obj = self.objects.get(oid)
                if obj is not None:
                    obj.owner, obj.owner_pid, obj.call_site = src.address, src.pid, site

    # Worker reports (the task may be unknown yet: its owner's report can come later).
    def _worker_task(self, tid: bytes, src: Source) -> TaskRecord | None:
        rec = self.tasks.get(tid)
        if rec is None:
            if tid in self._evicted:  # a late report about a task already forgotten
                return None
            rec = self.tasks[tid] = TaskRecord(tid)
        rec.node_id, rec.worker_id, rec.worker_pid = src.node_id, src.worker_id, src.pid
        return rec

    def _scheduled(self, ev: Any, src: Source) -> None:
        rec = self._worker_task(ev[2], src)
        if rec is not None:
            rec.scheduled_time = ev[1]
            if RANK[rec.state] < 1:
                rec.state = SCHEDULED

    def _running(self, ev: Any, src: Source) -> None:
        rec = self._worker_task(ev[2], src)
        if rec is not None:
            self._started(rec, ev[1], ev[3])

    def _started(self, rec: TaskRecord, ts: float, name: str) -> None:
        if not rec.name:
            rec.name = name
            if name.endswith(".__init__"):
                rec.type = "ACTOR_CREATION_TASK"
        rec.start_time = ts
        if rec.end_time is not None and rec.end_time < ts:  # a new run (a retry)
            rec.end_time = None
        if RANK[rec.state] < 2:
            rec.state = RUNNING

    def _ran(self, ev: Any, src: Source) -> None:
        """A task that arrived, ran and ended between two of its worker's flushes."""
        _, ts, tid, name, started, queued, out = ev
        rec = self._worker_task(tid, src)
        if rec is None:
            return
        if queued is not None:
            rec.scheduled_time = queued
        self._started(rec, started, name)
        self._end(rec, ts, out)

    def _finished_ok(self, ev: Any, src: Source) -> None:
        rec = self._worker_task(ev[2], src)
        if rec is not None:
            self._end(rec, ev[1], ev[3])

    def _ended(self, ev: Any, src: Source) -> None:
        rec = self._worker_task(ev[2], src)
        if rec is not None:
            self._end(rec, ev[1], None)

    def _end(self, rec: TaskRecord, ts: float, out: Any) -> None:
        """Its run ended: with a value (``out``, see ``events.task_replied``) it finished;
        without, its owner says what happens next (retry, failure, cancellation)."""
        rec.end_time = ts
        if out is not None and RANK[rec.state] < 3:
            rec.state, rec.finish_time = FINISHED, ts
            self._n_done += 1
            heapq.heappush(self._finished, (rec.creation_time or ts, rec.task_id))
            if not isinstance(out, int):  # several values, or one in a store
                self._store_results(rec, E.results_of(out), ts)

    def _terminal(self, rec: TaskRecord, state: str, ts: float, attempt: int) -> bool:
        if attempt < rec.attempt_number:
            return False
        rec.attempt_number = attempt
        self._n_done += RANK[rec.state] != 3
        rec.state = state
        rec.finish_time = ts
        heapq.heappush(self._finished, (rec.creation_time or ts, rec.task_id))
        return True

    def _store_results(self, rec: TaskRecord, results: Any, ts: float) -> None:
        tid = rec.task_id
        for i, (kind, size, location) in enumerate(results):
            if kind != 1:  # inline (or an error): lives in its owner, not tracked here
                continue
            oid = tid + (i + 1).to_bytes(4, "big")
            state = self._early.pop(oid, "IN_MEMORY") if self._early else "IN_MEMORY"
            if state == "FREED":
                continue
            self.objects[oid] = ObjectRecord(oid, size, rec.owner, rec.owner_pid or 0,
                                             self.node_by_addr.get(location), state, tid,
                                             rec.call_site, ts)  # fmt: skip

    def _failed(self, ev: Any, src: Source) -> None:
        _, ts, tid, attempt, etype, message = ev
        rec = self.tasks.get(tid)
        if rec is None:  # forgotten (evicted): its owner reported it first
            return
        if self._terminal(rec, FAILED, ts, attempt):
            rec.error_type, rec.error_message = etype, message

    def _cancelled(self, ev: Any, src: Source) -> None:
        _, ts, tid, attempt = ev
        rec = self.tasks.get(tid)
        if rec is None:  # forgotten (evicted): its owner reported it first
            return
        if self._terminal(rec, CANCELLED, ts, attempt):
            rec.error_type, rec.error_message = "TaskCancelledError", "the task was cancelled"

    def _retried(self, ev: Any, src: Source) -> None:
        _, ts, tid, attempt, reason = ev
        rec = self.tasks.get(tid)
        if rec is None:  # forgotten (evicted): its owner reported it first
            return
        if attempt >= rec.attempt_number:
            rec.attempt_number = attempt
            if rec.state is FINISHED and rec.start_time and rec.start_time > ts:
                return  # the retry already ran (its worker's report came first)
            self._n_done -= RANK[rec.state] == 3
            rec.state = PENDING
            rec.error_message = f"attempt {attempt - 1} failed: {reason}"

    def _evict_tasks(self) -> None:
        """Keep ``max_tasks`` finished tasks, forgetting the oldest (by submission) first.

        A task looks unfinished until its worker's report arrives, which may come after many
        later tasks' (each process flushes on its own clock), so unfinished tasks are not
        counted against the bound, only against a hard cap of twice it. Late reports about
        a forgotten finished task are ignored; about a forgotten unfinished one, they bring
        it back (they are news)."""
        tasks, finished, evicted = self.tasks, self._finished, self._evicted
        while self._n_done > self.max_tasks and finished:
            tid = heapq.heappop(finished)[1]
            rec = tasks.get(tid)
            if rec is None or RANK[rec.state] != 3:
                continue  # forgotten already, or running again since
            del tasks[tid]
            self._n_done -= 1
            evicted[tid] = rec.start_time or rec.finish_time or 0.0
            if len(evicted) > max(self.max_tasks, 10_000):
                del evicted[next(iter(evicted))]
        while len(tasks) > 2 * self.max_tasks:
            rec = tasks.pop(next(iter(tasks)))
            self._n_done -= RANK[rec.state] == 3

    # -- objects --------------------------------------------------------------------------------
    def _object_created(self, ev: Any, src: Source) -> None:
        _, ts, oid, size, location, site = ev
        node = self.node_by_addr.get(location) if location else src.node_id
        state = self._early.pop(oid, "IN_MEMORY") if location else "INLINE"
        self.objects[oid] = ObjectRecord(oid, size, src.address, src.pid, node, state, None,
                                         site, ts)  # fmt: skip

    def _spilled(self, ev: Any, src: Source) -> None:
        self._store_moved(ev[2], "SPILLED")

    def _restored(self, ev: Any, src: Source) -> None:
        self._store_moved(ev[2], "IN_MEMORY")

    def _store_moved(self, oid: bytes, state: str) -> None:
        """The store's node and the object's owner report independently: a spill may arrive
        before the owner's report of the object, so it is kept until then."""
        rec = self.objects.get(oid)
        if rec is not None:
            rec.state = state
            return
        self._remember(oid, state)

    def _remember(self, oid: bytes, state: str) -> None:
        self._early[oid] = state
        if len(self._early) > self.max_objects:
            del self._early[next(iter(self._early))]

    def _freed(self, ev: Any, src: Source) -> None:
        oid = ev[2]
        if self.objects.pop(oid, None) is not None:
            self._early.pop(oid, None)
        elif not oid.endswith(b"\0\0\0\0"):
            self._remember(oid, "FREED")  # a task result its worker has not reported yet

    def available_of(self, node_id: str) -> dict[str, float] | None:
        """Logical resources free on a node, from the head's own directory (freshest)."""
        d = self.directory
        rec = d.nodes.get(node_id) if d is not None else None
        return dict(rec.available) if rec is not None else None

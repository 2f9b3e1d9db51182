"""What the dashboard shows at a glance, computed by the head so pages never walk the tables.

A page asks for the overview about once a second. Answering it must stay cheap with the
100,000 finished tasks the event log keeps, so counts are taken with C-level iteration
(``Counter(map(attrgetter(...)))``: a few milliseconds for 100,000 records) and each answer is
kept for ``CACHE_S``, so ten open pages cost what one does. Everything else a page shows
(task tables, one task's details) is the state API's ``state_list`` / ``state_get`` with
filters and limits, so only what is on screen crosses the wire.

RPCs (any authenticated connection): ``dash_overview``, ``dash_cells``, ``dash_timeline``,
``dash_metrics``, ``dash_actor_calls``.
"""

from __future__ import annotations

import collections
import heapq
import time
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events as E
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.observe.metrics_history import MetricsHistory
from nbcluster.runtime.observe.state_tables import FAILED, TaskRecord

if TYPE_CHECKING:
    from nbcluster.runtime.observe.event_log import EventLog, Source
    from nbcluster.runtime.wire.transport import Connection, Endpoint

#: How long an overview (or the cells table) is reused before it is computed again (seconds).
CACHE_S = 0.25
#: Failed tasks the overview lists, newest first.
RECENT_ERRORS = 10
#: Most task slices one timeline answer holds (the newest, when more ran in the window).
TIMELINE_LIMIT = 5000

_state_of = attrgetter("state")
_size_of = attrgetter("object_size")
_start_of = attrgetter("start_time")


def _actor_of(rec: TaskRecord) -> bytes | None:
    return rec.actor_id if rec.type == "ACTOR_TASK" else None


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def _brief(rec: TaskRecord) -> dict[str, Any]:
    """A failed task as the overview's error list shows it (its details: ``state_get``)."""
    message = rec.error_message or ""
    return {
        "task_id": rec.task_id.hex(),
        "name": rec.name,
        "error_type": rec.error_type,
        "error_message": message[:2000],
        "finish_time_ms": _ms(rec.finish_time),
        "node_id": rec.node_id,
        "tag": rec.tag,
    }


class ClusterOverview:
    """The head's aggregates over the event log's tables, plus the metrics history."""

    def __init__(self, endpoint: Endpoint, log: EventLog) -> None:
        self.log = log
        samples = max(2, int(CONFIG.metrics_history_s / max(CONFIG.resource_sample_s, 0.01)))
        self.metrics = MetricsHistory(samples)
        log.also_on(E.NODE_STATS, self._on_stats)
        self._cache: dict[str, tuple[float, Any]] = {}
        rpc = endpoint.rpc
        rpc["dash_overview"] = self.overview
        rpc["dash_cells"] = self.cells
        rpc["dash_timeline"] = self.timeline
        rpc["dash_metrics"] = lambda conn, since=None: self.metrics.series(since)
        rpc["dash_actor_calls"] = self.actor_calls

    def _on_stats(self, ev: Any, src: Source) -> None:
        self.metrics.record(ev[2], ev[1], ev[3])

    def _cached(self, key: str, compute: Any) -> Any:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
        value = compute()
        self._cache[key] = (now, value)
        return value

    # -- overview --------------------------------------------------------------------------------
    def overview(self, conn: Connection | None, since: float | None = None) -> dict[str, Any]:
        """Nodes, task / actor / object counts, recent errors and the metrics newer than
        ``since`` (None: the whole history, for a page that just opened)."""
        out = dict(self._cached("overview", self._overview))
        out["metrics"] = self.metrics.series(since)
        return out

    def _overview(self) -> dict[str, Any]:
        log = self.log
        log.catch_up()
        tasks = log.tasks
        counts = collections.Counter(map(_state_of, tasks.values()))
        failed = (r for r in tasks.values() if r.state is FAILED)
        recent = heapq.nlargest(RECENT_ERRORS, failed, key=lambda r: r.finish_time or 0.0)
        actors = collections.Counter(a.get("state") for a in log.actors.values())
        objects = log.objects
        nodes = log.state_list(None, "nodes", None, None)["items"]
        self.metrics.forget(set(log.nodes))
        alive = [n for n in nodes if n["state"] == "ALIVE"]
        total: dict[str, float] = {}
        available: dict[str, float] = {}
        for n in alive:
            for k, v in n["resources_total"].items():
                total[k] = total.get(k, 0.0) + v
            for k, v in n["resources_available"].items():
                available[k] = available.get(k, 0.0) + max(0.0, v)
        return {
            "time": time.time(),
            "seq": log.next_seq,
            "tasks": {"total": len(tasks), "by_state": dict(counts)},
            "actors": {"total": len(log.actors), "by_state": dict(actors)},
            "objects": {
                "total": len(objects),
                "bytes": sum(map(_size_of, objects.values())),
                "spilled": sum(1 for o in objects.values() if o.state == "SPILLED"),
            },
            "workers": sum(1 for w in log.workers.values() if w.state == "ALIVE"),
            "nodes": nodes,
            "resources_total": total,
            "resources_available": available,
            "recent_errors": [_brief(r) for r in recent],
        }

    # -- cells -----------------------------------------------------------------------------------
    def cells(self, conn: Connection | None) -> dict[str, Any]:
        """The work of each notebook cell (tasks grouped by their tag): counts by state,
        when it started and ended, and its first error."""
        return dict(self._cached("cells", self._cells))

    def _cells(self) -> dict[str, Any]:
        self.log.catch_up()
        groups: dict[str, dict[str, Any]] = {}
        for rec in self.log.tasks.values():
            tag = rec.tag
            if tag is None:
                continue
            key = tag.get("msg_id", "") if isinstance(tag, dict) else str(tag)
            g = groups.get(key)
            if g is None:
                g = groups[key] = {
                    "tag": tag, "call_site": rec.call_site, "tasks": 0, "by_state": {},
                    "names": {}, "first_submitted_ms": None, "last_ended_ms": None,
                    "error": None,
                }  # fmt: skip
            g["tasks"] += 1
            by_state = g["by_state"]
            by_state[rec.state] = by_state.get(rec.state, 0) + 1
            names = g["names"]
            if len(names) < 5 or rec.name in names:
                names[rec.name] = names.get(rec.name, 0) + 1
            created = _ms(rec.creation_time)
            if created is not None and (
                g["first_submitted_ms"] is None or created < g["first_submitted_ms"]
            ):
                g["first_submitted_ms"] = created
            ended = _ms(rec.finish_time or rec.end_time)
            if ended is not None and (g["last_ended_ms"] is None or ended > g["last_ended_ms"]):
                g["last_ended_ms"] = ended
            if rec.state is FAILED and g["error"] is None:
                g["error"] = _brief(rec)
        cells = sorted(groups.values(), key=lambda g: g["first_submitted_ms"] or 0)
        return {"cells": cells}

    # -- timeline --------------------------------------------------------------------------------
    def timeline(
        self,
        conn: Connection | None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int | None = TIMELINE_LIMIT,
    ) -> dict[str, Any]:
        """Task slices that overlap [start_ms, end_ms] (None: open), newest ``limit`` of them:
        ``{"rows": [[name, task id, node, worker pid, start ms, end ms or None, state, type]],
        "total": n}``. Unlike ``state_timeline`` (the export) it never sends every task."""
        self.log.catch_up()
        lo = None if start_ms is None else float(start_ms) / 1000
        hi = None if end_ms is None else float(end_ms) / 1000
        cap = TIMELINE_LIMIT if limit is None else max(0, min(int(limit), 100_000))
        # Comprehensions and a C-keyed sort: a few tens of ms for 100,000 tasks.
        ran = [r for r in self.log.tasks.values() if r.start_time is not None]
        if hi is not None:
            top: float = hi
            ran = [r for r in ran if (r.start_time or 0.0) <= top]
        if lo is not None:
            low: float = lo
            ran = [r for r in ran if (r.end_time or r.finish_time or low) >= low]
        ran.sort(key=_start_of)
        newest = ran[len(ran) - cap :] if cap else []
        rows = [
            [r.name, r.task_id.hex(), r.node_id, r.worker_pid, _ms(r.start_time),
             _ms(r.end_time or r.finish_time), r.state, r.type]
            for r in newest
        ]  # fmt: skip
        return {"rows": rows, "total": len(ran), "now_ms": _ms(time.time())}

    # -- actors ----------------------------------------------------------------------------------
    def actor_calls(self, conn: Connection | None) -> dict[str, int]:
        """Method calls the head remembers per actor (hex id -> count)."""
        return dict(self._cached("actor_calls", self._actor_calls))

    def _actor_calls(self) -> dict[str, int]:
        self.log.catch_up()
        counts = collections.Counter(map(_actor_of, self.log.tasks.values()))
        counts.pop(None, None)
        return {aid.hex(): n for aid, n in counts.items() if aid is not None}

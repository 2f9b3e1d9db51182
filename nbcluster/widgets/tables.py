"""What the widgets know of the cluster: tasks, objects and nodes, kept current by events.

One ``Tables`` per kernel is fed by the event stream (``feed``) and every open widget reads
from it, so ten widgets cost one subscription. ``apply`` returns what changed, which the
widgets turn into deltas. Plain Python, no ipywidgets: the aggregation is tested on its own.

Events from different processes reach the head in separate batches, so a worker's RUNNING
can be seen before the owner's SUBMITTED; a task's state therefore only moves forward (a
retry is the one way back to pending).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

PENDING, RUNNING, FINISHED = "pending", "running", "finished"
FAILED, CANCELLED = "failed", "cancelled"
STATES = (PENDING, RUNNING, FINISHED, FAILED, CANCELLED)
TERMINAL = frozenset((FINISHED, FAILED, CANCELLED))
_RANK = {PENDING: 0, RUNNING: 1, FINISHED: 2, FAILED: 3, CANCELLED: 3}
#: Samples of each node's use kept for sparklines (one a second: the last five minutes).
HISTORY = 300
_MSG_ID = re.compile(r"msg_id='([^']+)'")


def cell_of(tag: Any) -> str | None:
    """The cell (request msg_id) a task's tag names: a kernel tags work with its cell."""
    if isinstance(tag, str):
        m = _MSG_ID.search(tag)
        return m.group(1) if m else tag
    return None


@dataclass
class Task:
    task_id: str
    name: str = ""
    state: str = PENDING
    cell: str | None = None
    args: list[str] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)
    attempt: int = 0
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    worker: str | None = None
    error: str | None = None
    actor_id: str | None = None


@dataclass
class Obj:
    object_id: str
    size: int | None = None
    task_id: str | None = None  #: the task that returned it; None for ``put``
    location: str | None = None
    freed: bool = False
    spilled: bool = False


@dataclass
class Node:
    node_id: str
    address: str = ""
    alive: bool = True
    resources: dict[str, float] = field(default_factory=dict)
    available: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    #: (time, cpu %, memory used fraction, store used fraction)
    history: deque[tuple[float, float, float, float]] = field(
        default_factory=lambda: deque(maxlen=HISTORY)
    )


@dataclass
class Changes:
    tasks: set[str] = field(default_factory=set)
    objects: set[str] = field(default_factory=set)
    nodes: set[str] = field(default_factory=set)
    lost: bool = False

    def __bool__(self) -> bool:
        return bool(self.tasks or self.objects or self.nodes or self.lost)


class Tables:
    """Tasks, objects and nodes by id, as the event stream describes them."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.objects: dict[str, Obj] = {}
        self.nodes: dict[str, Node] = {}
        self.workers: dict[str, str] = {}  #: worker address -> node id (from node stats)

    def task(self, tid: str) -> Task:
        t = self.tasks.get(tid)
        if t is None:
            t = self.tasks[tid] = Task(tid)
        return t

    def obj(self, oid: str) -> Obj:
        o = self.objects.get(oid)
        if o is None:
            o = self.objects[oid] = Obj(oid)
        return o

    def _move(self, t: Task, state: str) -> None:
        if _RANK[state] >= _RANK[t.state]:
            t.state = state

    def apply(self, events: list[Any]) -> Changes:
        ch = Changes()
        for ev in events:
            try:
                self._apply(ev, ch)
            except (KeyError, TypeError, ValueError, IndexError):
                continue  # a malformed event is skipped; the rest still count
        return ch

    def _apply(self, ev: Any, ch: Changes) -> None:
        kind, d = ev.type, ev.data
        if kind.startswith("TASK_"):
            t = self.task(d["task_id"])
            ch.tasks.add(t.task_id)
            if kind == "TASK_SUBMITTED":
                t.name = d.get("name") or t.name
                t.cell = cell_of(d.get("tag"))
                t.args = list(d.get("args") or ()) + list(d.get("nested_args") or ())
                t.attempt = d.get("attempt") or 0
                t.submitted = t.submitted or ev.time
                t.actor_id = d.get("actor_id")
                n = d.get("num_returns") or 0
                if not t.returns and isinstance(n, int) and 0 < n < 1000:
                    t.returns = [t.task_id + (j + 1).to_bytes(4, "big").hex() for j in range(n)]
                for oid in t.returns:
                    self.obj(oid).task_id = t.task_id
            elif kind == "TASK_SCHEDULED":
                t.worker = d.get("worker_address") or t.worker
            elif kind == "TASK_RUNNING":
                t.name = t.name or d.get("name") or ""
                t.started = ev.time
                t.worker = ev.source.get("address") or t.worker
                self._move(t, RUNNING)
            elif kind in ("TASK_FINISHED", "TASK_ENDED"):
                t.ended = ev.time
                self._move(t, FINISHED)
                for r in d.get("results") or ():
                    o = self.obj(r["object_id"])
                    o.task_id, o.size, o.location = t.task_id, r.get("size"), r.get("location")
                    ch.objects.add(o.object_id)
                    if o.object_id not in t.returns:
                        t.returns.append(o.object_id)
            elif kind == "TASK_FAILED":
                t.ended = ev.time
                t.error = f"{d.get('error_type')}: {d.get('error_message') or ''}".strip()
                t.state = FAILED
            elif kind == "TASK_CANCELLED":
                t.ended = ev.time
                t.state = CANCELLED
            elif kind == "TASK_RETRIED":
                t.attempt = d.get("attempt") or t.attempt
                t.state, t.started, t.ended = PENDING, None, None
        elif kind.startswith("OBJECT_"):
            o = self.obj(d["object_id"])
            ch.objects.add(o.object_id)
            if kind == "OBJECT_CREATED":
                o.size, o.location, o.freed = d.get("size"), d.get("location"), False
            elif kind == "OBJECT_SPILLED":
                o.spilled = True
            elif kind == "OBJECT_RESTORED":
                o.spilled = False
            elif kind == "OBJECT_FREED":
                o.freed = True
        elif kind.startswith("NODE_"):
            self._node_event(kind, d, ev.time, ch)
        elif kind == "EVENTS_LOST":
            ch.lost = True

    def _node_event(self, kind: str, d: dict[str, Any], ts: float, ch: Changes) -> None:
        node = self.nodes.get(d["node_id"])
        if node is None:
            node = self.nodes[d["node_id"]] = Node(d["node_id"])
        ch.nodes.add(node.node_id)
        if kind == "NODE_JOINED":
            node.address = d.get("address") or ""
            node.resources = dict(d.get("resources") or {})
            node.alive = True
        elif kind == "NODE_DEAD":
            node.alive = False
        elif kind == "NODE_STATS":
            stats = d.get("stats") or {}
            node.stats = stats
            node.resources = dict(stats.get("total") or node.resources)
            node.available = dict(stats.get("available") or {})
            mem_total = stats.get("mem_total") or 0
            cap = stats.get("store_capacity") or 0
            node.history.append((
                ts,
                float(stats.get("cpu_percent") or 0.0),
                (stats.get("mem_used") or 0) / mem_total if mem_total else 0.0,
                (stats.get("store_used") or 0) / cap if cap else 0.0,
            ))  # fmt: skip

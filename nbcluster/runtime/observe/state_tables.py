"""The head's picture of every task, actor, object, node and worker, built from events.

Records are ``__slots__`` classes updated in place as events arrive (several per task, tens of
thousands a second), and turned into plain dicts only when someone asks. Field names are the
public ones of ``nbcluster.util.state`` (Ray's, where Ray has one), so filters name fields the
way users read them.

Events from different processes arrive in any order (the worker may report a task running
before its owner reports submitting it), so updates only ever move a task forward: a state is
applied when its rank is not below the current one, within the same attempt.
"""

from __future__ import annotations

from typing import Any

PENDING = "PENDING_NODE_ASSIGNMENT"
SCHEDULED = "SUBMITTED_TO_WORKER"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
RANK = {PENDING: 0, SCHEDULED: 1, RUNNING: 2, FINISHED: 3, FAILED: 3, CANCELLED: 3}
TERMINAL = frozenset((FINISHED, FAILED, CANCELLED))


def _ms(t: float | None) -> int | None:
    return None if t is None else int(t * 1000)


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


class TaskRecord:
    __slots__ = (
        "actor_id", "args", "attempt_number", "call_site", "creation_time", "end_time",
        "error_message", "error_type", "finish_time", "name", "nested_args", "node_id",
        "num_returns", "owner", "owner_pid", "scheduled_time", "start_time", "state", "tag",
        "task_id", "type", "worker_id", "worker_pid",
    )  # fmt: skip

    def __init__(self, task_id: bytes) -> None:
        self.task_id = task_id
        self.name = ""
        self.type = "NORMAL_TASK"
        self.state = PENDING
        self.attempt_number = 0
        self.actor_id: bytes | None = None
        self.args: list[bytes] | None = None
        self.nested_args: list[bytes] | None = None
        self.num_returns = 1
        self.tag: Any = None
        self.call_site = ""
        self.owner = ""
        self.owner_pid: int | None = None
        self.node_id: str | None = None
        self.worker_id: bytes | None = None
        self.worker_pid: int | None = None
        self.creation_time: float | None = None
        self.scheduled_time: float | None = None
        self.start_time: float | None = None
        self.end_time: float | None = None
        self.finish_time: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None

    def resubmitted(self) -> None:
        """Submitted again (rebuilt from lineage): a fresh run of the same task."""
        self.state = PENDING
        self.scheduled_time = self.start_time = self.end_time = self.finish_time = None
        self.error_type = self.error_message = None

    def return_ids(self) -> list[bytes]:
        return [self.task_id + i.to_bytes(4, "big") for i in range(1, self.num_returns + 1)]

    def returns(self) -> list[str]:
        return [oid.hex() for oid in self.return_ids()]

    def public(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id.hex(),
            "name": self.name,
            "func_or_class_name": self.name,
            "type": self.type,
            "state": self.state,
            "attempt_number": self.attempt_number,
            "actor_id": _hex(self.actor_id),
            "node_id": self.node_id,
            "worker_id": _hex(self.worker_id),
            "worker_pid": self.worker_pid,
            "owner": self.owner,
            "owner_pid": self.owner_pid,
            "call_site": self.call_site,
            "tag": self.tag,
            "args": [a.hex() for a in self.args or ()],
            "nested_args": [a.hex() for a in self.nested_args or ()],
            "returns": self.returns(),
            "creation_time_ms": _ms(self.creation_time),
            "scheduled_time_ms": _ms(self.scheduled_time),
            "start_time_ms": _ms(self.start_time),
            "end_time_ms": _ms(self.end_time if self.end_time else self.finish_time),
            "error_type": self.error_type,
            "error_message": self.error_message,
        }


class ObjectRecord:
    __slots__ = (
        "call_site", "creation_time", "node_id", "object_id", "object_size", "owner",
        "owner_pid", "state", "task_id",
    )  # fmt: skip

    def __init__(
        self, oid: bytes, size: int, owner: str, owner_pid: int, node_id: str | None,
        state: str, task_id: bytes | None, call_site: str, ts: float,
    ) -> None:  # fmt: skip
        self.object_id = oid
        self.object_size = size
        self.owner = owner
        self.owner_pid = owner_pid
        self.node_id = node_id
        self.state = state  # INLINE (in its owner's memory), IN_MEMORY (store) or SPILLED
        self.task_id = task_id  # the task that made it; None for put
        self.call_site = call_site
        self.creation_time = ts

    def public(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id.hex(),
            "object_size": self.object_size,
            "owner": self.owner,
            "owner_pid": self.owner_pid,
            "node_id": self.node_id,
            "state": self.state,
            "spilled": self.state == "SPILLED",
            "task_id": _hex(self.task_id),
            "call_site": self.call_site,
            "creation_time_ms": _ms(self.creation_time),
        }


class WorkerRecord:
    __slots__ = ("address", "end_time", "node_id", "pid", "start_time", "state", "worker_id",
                 "worker_type")  # fmt: skip

    def __init__(self, worker_id: bytes, pid: int, address: str, kind: str, node_id: str) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.address = address
        self.worker_type = kind.upper()  # WORKER or DRIVER
        self.node_id = node_id
        self.state = "ALIVE"
        self.start_time: float | None = None
        self.end_time: float | None = None

    def public(self, rss: dict[int, int]) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id.hex(),
            "worker_type": self.worker_type,
            "pid": self.pid,
            "address": self.address,
            "node_id": self.node_id,
            "state": self.state,
            "is_alive": self.state == "ALIVE",
            "memory_rss": rss.get(self.pid),
            "start_time_ms": _ms(self.start_time),
            "end_time_ms": _ms(self.end_time),
        }


class NodeRecord:
    __slots__ = ("address", "death_reason", "node_id", "resources_total", "start_time", "state",
                 "stats", "store_capacity")  # fmt: skip

    def __init__(self, node_id: str, address: str, resources: dict[str, float], cap: int) -> None:
        self.node_id = node_id
        self.address = address
        self.resources_total = resources
        self.store_capacity = cap
        self.state = "ALIVE"
        self.death_reason = ""
        self.start_time: float | None = None
        self.stats: dict[str, Any] = {}

    def public(self, available: dict[str, float] | None) -> dict[str, Any]:
        s = self.stats
        return {
            "node_id": self.node_id,
            "address": self.address,
            "state": self.state,
            "death_reason": self.death_reason,
            "resources_total": dict(s.get("total") or self.resources_total),
            "resources_available": dict(available if available is not None
                                        else s.get("available") or self.resources_total),
            "cpu_percent": s.get("cpu_percent"),
            "mem_used": s.get("mem_used"),
            "mem_total": s.get("mem_total"),
            "gpus": s.get("gpus", []),
            "object_store_used": s.get("store_used", 0),
            "object_store_capacity": s.get("store_capacity", self.store_capacity),
            "object_store_objects": s.get("store_objects", 0),
            "spilled_objects": s.get("store_spilled_objects", 0),
            "spilled_bytes": s.get("store_spilled_bytes", 0),
            "pending_demand": dict(s.get("demand") or {}),
            "start_time_ms": _ms(self.start_time),
        }  # fmt: skip


class EntityEvents:
    """How actor, node and worker events update their tables (a part of ``EventLog``)."""

    actors: dict[bytes, dict[str, Any]]
    nodes: dict[str, NodeRecord]
    workers: dict[bytes, WorkerRecord]
    worker_by_addr: dict[str, WorkerRecord]
    node_by_addr: dict[str, str]
    max_tasks: int

    def _task(self, tid: bytes) -> TaskRecord:
        raise NotImplementedError

    def _terminal(self, rec: TaskRecord, state: str, ts: float, attempt: int) -> bool:
        raise NotImplementedError

    def _actor(self, ev: Any, src: Any) -> None:
        _, ts, aid, state, cls, name, ns, owner, node, pid, restarts, death, create_id = ev
        rec = self.actors.get(aid)
        if rec is None:
            rec = self.actors[aid] = {"actor_id": aid.hex(), "start_time_ms": int(ts * 1000)}
            while len(self.actors) > self.max_tasks:
                del self.actors[next(iter(self.actors))]
        rec.update(
            state=state,
            class_name=cls,
            name=name,
            namespace=ns,
            owner=owner,
            node_id=node,
            pid=pid,
            num_restarts=restarts,
            death_cause=death or None,
        )
        if state == "DEAD":
            rec["end_time_ms"] = int(ts * 1000)
        # The creation task's owner is the head, which reports it through the actor's state.
        task = self._task(create_id)
        if not task.name:
            task.name, task.type, task.actor_id = f"{cls}.__init__", "ACTOR_CREATION_TASK", aid
            task.owner, task.creation_time = owner, ts
        if RANK[task.state] < 3:
            if state == "ALIVE":
                self._terminal(task, FINISHED, ts, task.attempt_number)
            elif state == "DEAD":
                self._terminal(task, FAILED, ts, task.attempt_number)
                task.error_type, task.error_message = "ActorDiedError", death

    def _node_joined(self, ev: Any, src: Any) -> None:
        _, ts, node_id, address, resources, cap = ev
        rec = self.nodes[node_id] = NodeRecord(node_id, address, resources, cap)
        rec.start_time = ts
        self.node_by_addr[address] = node_id

    def _node_dead(self, ev: Any, src: Any) -> None:
        rec = self.nodes.get(ev[2])
        if rec is not None:
            rec.state, rec.death_reason = "DEAD", ev[3]
        for w in self.workers.values():
            if w.node_id == ev[2] and w.state == "ALIVE":
                w.state, w.end_time = "DEAD", ev[1]

    def _node_stats(self, ev: Any, src: Any) -> None:
        rec = self.nodes.get(ev[2])
        if rec is not None:
            rec.stats = ev[3]

    def _worker_started(self, ev: Any, src: Any) -> None:
        _, ts, wid, pid, addr, kind = ev
        w = WorkerRecord(wid, pid, addr, kind, src.node_id)
        w.start_time = ts
        self.workers[wid] = w
        self.worker_by_addr[addr] = w
        if len(self.workers) > self.max_tasks:
            dead = [k for k, v in self.workers.items() if v.state != "ALIVE"]
            for k in dead[: len(dead) // 2 + 1]:
                gone = self.workers.pop(k)
                if self.worker_by_addr.get(gone.address) is gone:
                    del self.worker_by_addr[gone.address]

    def _worker_exited(self, ev: Any, src: Any) -> None:
        w = self.workers.get(ev[2])
        if w is not None:
            w.state, w.end_time = "DEAD", ev[1]


def matches(item: dict[str, Any], filters: list[Any]) -> bool:
    """Ray's filter predicates: ``(key, "=" | "!=", value)``, compared as text; states and
    types compare case-insensitively."""
    for key, op, want in filters:
        have = item.get(key)
        if isinstance(have, bool) or have is None:
            same = str(have).lower() == str(want).lower()
        elif isinstance(have, (int, float)):
            try:
                same = float(have) == float(want)
            except (TypeError, ValueError):
                same = False
        else:
            same = str(have).lower() == str(want).lower()
        if (op == "=" and not same) or (op == "!=" and same):
            return False
    return True


def check_filters(filters: Any) -> list[Any]:
    out = []
    for f in filters or ():
        if not isinstance(f, (list, tuple)) or len(f) != 3 or f[1] not in ("=", "!="):
            raise ValueError(f"a filter is (key, '=' or '!=', value), got {f!r}")
        out.append(list(f))
    return out

"""The cluster's state, as Ray's ``ray.util.state``: list, get, summarize — and subscribe.

Every answer comes from the head's event log (``runtime.event_log``), which every process
feeds, so the state of a task, actor, object, node or worker is one source of truth whether
a CLI, a widget or a test reads it::

    from nbcluster.util.state import list_tasks, subscribe
    list_tasks(filters=[("state", "=", "RUNNING")])
    with subscribe() as events:        # pushed by the head, in order, without gaps
        for event in events: ...
    subscribe_digests(callback)        # what live views show, coalesced by the head

How fresh: a query first ships this process's own buffered events and has the workers it
holds leases or actors on ship theirs, so it sees at least what this process did and saw
(a task whose ``get`` returned is FINISHED, and on the timeline). Events from other
processes reach the head within ``event_flush_s`` (0.1 s).
Without a cluster connection, the first call attaches to the local cluster (as ``init("auto")``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nbcluster.runtime.api.digest_stream import DigestStream, subscribe_digests
from nbcluster.runtime.api.event_stream import Event, EventSubscription, ask_head, subscribe

Filter = tuple[str, str, Any]
_T = TypeVar("_T")


class _Record:
    """Attribute access as Ray's state records, plus ``record["field"]`` as Ray's dicts."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class TaskState(_Record):
    task_id: str
    name: str
    state: str  # PENDING_NODE_ASSIGNMENT, SUBMITTED_TO_WORKER, RUNNING, FINISHED, FAILED, CANCELLED
    type: str  # NORMAL_TASK, ACTOR_TASK, ACTOR_CREATION_TASK
    attempt_number: int = 0
    func_or_class_name: str = ""
    actor_id: str | None = None
    node_id: str | None = None
    worker_id: str | None = None
    worker_pid: int | None = None
    owner: str = ""
    owner_pid: int | None = None
    call_site: str = ""  #: file:line of the submitting code (a notebook cell's file in Jupyter)
    tag: Any = None  #: what the tag provider said at submission: a kernel's cell msg_id
    args: list[str] = field(default_factory=list)  #: ObjectRef arguments (object ids)
    nested_args: list[str] = field(default_factory=list)  #: refs nested inside arguments
    returns: list[str] = field(default_factory=list)
    creation_time_ms: int | None = None
    scheduled_time_ms: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class ActorState(_Record):
    actor_id: str
    class_name: str
    state: str  # PENDING_CREATION, ALIVE, RESTARTING, DEAD
    name: str = ""
    namespace: str = "default"
    owner: str = ""
    node_id: str | None = None
    pid: int | None = None
    num_restarts: int = 0
    death_cause: str | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None


@dataclass(frozen=True)
class ObjectState(_Record):
    object_id: str
    object_size: int
    state: str  # INLINE (in its owner's memory), IN_MEMORY (a node's store), SPILLED
    owner: str = ""
    owner_pid: int | None = None
    node_id: str | None = None
    spilled: bool = False
    task_id: str | None = None  #: the task that returned it; None for ``put``
    call_site: str = ""
    creation_time_ms: int | None = None
    #: who holds it and how (``memory_summary`` only): pid, process, reference_type, ...
    references: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class NodeState(_Record):
    node_id: str
    address: str
    state: str  # ALIVE, DEAD
    death_reason: str = ""
    resources_total: dict[str, float] = field(default_factory=dict)
    resources_available: dict[str, float] = field(default_factory=dict)
    cpu_percent: float | None = None
    mem_used: int | None = None
    mem_total: int | None = None
    gpus: list[dict[str, Any]] = field(default_factory=list)
    object_store_used: int = 0
    object_store_capacity: int = 0
    object_store_objects: int = 0
    spilled_objects: int = 0
    spilled_bytes: int = 0
    #: lease requests waiting for resources, by shape: {"{'CPU': 1}": 3}
    pending_demand: dict[str, int] = field(default_factory=dict)
    start_time_ms: int | None = None


@dataclass(frozen=True)
class WorkerState(_Record):
    worker_id: str
    worker_type: str  # WORKER, DRIVER
    pid: int
    state: str  # ALIVE, DEAD
    is_alive: bool = True
    address: str = ""
    node_id: str | None = None
    memory_rss: int | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None


def _make(cls: type[_T], item: dict[str, Any]) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in item.items() if k in names})


# -- talking to the head -----------------------------------------------------------------------
def _list(kind: str, cls: type[_T], filters: list[Filter] | None, limit: int | None,
          address: str | None, timeout: float) -> list[_T]:  # fmt: skip
    got = ask_head("state_list", kind, [list(f) for f in filters or ()], limit, address=address,
               timeout=timeout)  # fmt: skip
    return [_make(cls, item) for item in got["items"]]


def list_tasks(filters: list[Filter] | None = None, limit: int | None = 100, *,
               address: str | None = None, timeout: float = 30, detail: bool = False,
               ) -> list[TaskState]:  # fmt: skip
    """The newest ``limit`` tasks matching ``filters`` (``[("state", "=", "RUNNING")]``)."""
    return _list("tasks", TaskState, filters, limit, address, timeout)


def list_actors(filters: list[Filter] | None = None, limit: int | None = 100, *,
                address: str | None = None, timeout: float = 30, detail: bool = False,
                ) -> list[ActorState]:  # fmt: skip
    return _list("actors", ActorState, filters, limit, address, timeout)


def list_objects(filters: list[Filter] | None = None, limit: int | None = 100, *,
                 address: str | None = None, timeout: float = 30, detail: bool = False,
                 ) -> list[ObjectState]:  # fmt: skip
    """Live objects in the object stores and those made by ``put``: size, owner, node, the
    task that made it and its call site.

    A freed object disappears; a spilled one says ``state == "SPILLED"``. Small task
    results (below ``inline_threshold``) live in their owner's memory and are not tracked
    here: ``memory_summary`` asks every process, and lists those too, with who holds each
    object and why.
    """
    return _list("objects", ObjectState, filters, limit, address, timeout)


def list_nodes(filters: list[Filter] | None = None, limit: int | None = 100, *,
               address: str | None = None, timeout: float = 30, detail: bool = False,
               ) -> list[NodeState]:  # fmt: skip
    return _list("nodes", NodeState, filters, limit, address, timeout)


def list_workers(filters: list[Filter] | None = None, limit: int | None = 100, *,
                 address: str | None = None, timeout: float = 30, detail: bool = False,
                 ) -> list[WorkerState]:  # fmt: skip
    return _list("workers", WorkerState, filters, limit, address, timeout)


def _id(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else value if isinstance(value, str) else (
        value.hex() if hasattr(value, "hex") else str(value))  # fmt: skip


def get_task(task_id: Any, *, address: str | None = None, timeout: float = 30
             ) -> TaskState | None:  # fmt: skip
    """One task by id (hex, bytes, or an ObjectRef it returned); None if unknown."""
    tid = task_id.task_id().hex() if hasattr(task_id, "task_id") else _id(task_id)
    got = ask_head("state_get", "tasks", tid, address=address, timeout=timeout)
    return None if got is None else _make(TaskState, got)


def get_actor(actor_id: Any, *, address: str | None = None, timeout: float = 30
              ) -> ActorState | None:  # fmt: skip
    """One actor by id (hex, or an ActorHandle); None if unknown."""
    aid = actor_id.actor_id if hasattr(actor_id, "actor_id") else _id(actor_id)
    got = ask_head("state_get", "actors", _id(aid), address=address, timeout=timeout)
    return None if got is None else _make(ActorState, got)


def summarize_tasks(*, address: str | None = None, timeout: float = 30) -> dict[str, Any]:
    """``{"cluster": {"summary": {name: {"state_counts": {...}, ...}}, "total_tasks": n}}``."""
    return dict(ask_head("state_summary", address=address, timeout=timeout))


def memory_summary(*, address: str | None = None, timeout: float = 30) -> dict[str, Any]:
    """Every referenced object with who references it and how (Ray's reference types), and
    each node's store use: what ``nbcluster memory`` prints."""
    got = ask_head("state_memory", address=address, timeout=timeout)
    got["objects"] = [_make(ObjectState, o) for o in got["objects"]]
    got["nodes"] = [_make(NodeState, n) for n in got["nodes"]]
    return dict(got)


def timeline_rows(*, address: str | None = None, timeout: float = 30) -> list[list[Any]]:
    """[name, task id, node id, worker pid, start, end, state, type] per task that ran."""
    return list(ask_head("state_timeline", address=address, timeout=timeout))


__all__ = [
    "ActorState", "DigestStream", "Event", "EventSubscription", "NodeState", "ObjectState",
    "TaskState", "WorkerState", "get_actor", "get_task", "list_actors", "list_nodes",
    "list_objects", "list_tasks", "list_workers", "memory_summary", "subscribe",
    "subscribe_digests", "summarize_tasks", "timeline_rows",
]  # fmt: skip

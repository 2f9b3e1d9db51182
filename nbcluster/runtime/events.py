"""State-change events: recorded where they happen, shipped to the head in batches.

Every process appends events to one per-process buffer (a deque: appending is atomic, so user
threads and the event loop need no lock) and its event loop ships the buffer to the head every
``event_flush_s`` as a single ``events`` notification. An event is a plain tuple
``(kind, time, *fields)`` — building a dict or a record per event would cost more than the
task it describes — and the batch carries who sent it (a *header*), so events need not repeat
the process's pid, node or address. The head (``event_log``) turns them into state tables and a
live stream.

The owner reports submission, placement, completion, failure, retries and cancellation; the
worker reports when it starts and stops running a task; agents report workers, spills and
resource samples; the head reports nodes and actors. With ``NBCLUSTER_EVENTS=0`` nothing is
recorded (the hooks check ``ENABLED`` first), which is how the overhead is measured.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.config import CONFIG

if TYPE_CHECKING:
    from nbcluster.runtime.core_worker import CoreWorker
    from nbcluster.runtime.node_agent import NodeAgent
    from nbcluster.runtime.transport import Connection

# Event kinds and their fields after (kind, time). ``event_log`` and ``state`` decode them.
TASK_SUBMITTED = 1  # task_id, name, attempt, arg oids, nested oids, num_returns, tag, site, actor
TASK_SCHEDULED = 2  # task_id, attempt, worker address (owner: pushed to a leased worker)
TASK_RUNNING = 3  # task_id, name (worker: started executing)
TASK_ENDED = 4  # task_id (worker: stopped executing; the owner decides what it means)
TASK_FINISHED = 5  # task_id, attempt, [[kind, size, location], ...] one per return
TASK_FAILED = 6  # task_id, attempt, error type, error message
TASK_RETRIED = 7  # task_id, new attempt, reason
TASK_CANCELLED = 8  # task_id, attempt
ACTOR_STATE = 10  # actor_id, state, class, name, namespace, owner, node, pid, restarts, death,
#                   creation task id
OBJECT_CREATED = 20  # oid, size, location (agent address; None: inline in its owner), site
OBJECT_SPILLED = 21  # oid, size
OBJECT_RESTORED = 22  # oid, size
OBJECT_FREED = 23  # oid
NODE_JOINED = 30  # node_id, address, resources, store capacity
NODE_DEAD = 31  # node_id, reason
NODE_STATS = 32  # node_id, {cpu_percent, mem_*, gpus, store_*, total, available, demand, ...}
WORKER_STARTED = 40  # worker_id, pid, address, kind ("worker" | "driver")
WORKER_EXITED = 41  # worker_id, pid, kind

NAMES = {
    TASK_SUBMITTED: "TASK_SUBMITTED", TASK_SCHEDULED: "TASK_SCHEDULED",
    TASK_RUNNING: "TASK_RUNNING", TASK_ENDED: "TASK_ENDED", TASK_FINISHED: "TASK_FINISHED",
    TASK_FAILED: "TASK_FAILED", TASK_RETRIED: "TASK_RETRIED", TASK_CANCELLED: "TASK_CANCELLED",
    ACTOR_STATE: "ACTOR_STATE", OBJECT_CREATED: "OBJECT_CREATED",
    OBJECT_SPILLED: "OBJECT_SPILLED", OBJECT_RESTORED: "OBJECT_RESTORED",
    OBJECT_FREED: "OBJECT_FREED", NODE_JOINED: "NODE_JOINED", NODE_DEAD: "NODE_DEAD",
    NODE_STATS: "NODE_STATS", WORKER_STARTED: "WORKER_STARTED", WORKER_EXITED: "WORKER_EXITED",
}  # fmt: skip

#: The names of each kind's fields after (kind, time), for decoding (``nbcluster.util.state``).
FIELDS: dict[int, tuple[str, ...]] = {
    TASK_SUBMITTED: ("task_id", "name", "attempt", "args", "nested_args", "num_returns", "tag",
                     "call_site", "actor_id"),
    TASK_SCHEDULED: ("task_id", "attempt", "worker_address"),
    TASK_RUNNING: ("task_id", "name"),
    TASK_ENDED: ("task_id",),
    TASK_FINISHED: ("task_id", "attempt", "results"),
    TASK_FAILED: ("task_id", "attempt", "error_type", "error_message"),
    TASK_RETRIED: ("task_id", "attempt", "reason"),
    TASK_CANCELLED: ("task_id", "attempt"),
    ACTOR_STATE: ("actor_id", "state", "class_name", "name", "namespace", "owner", "node_id",
                  "pid", "num_restarts", "death_cause", "creation_task_id"),
    OBJECT_CREATED: ("object_id", "size", "location", "call_site"),
    OBJECT_SPILLED: ("object_id", "size"),
    OBJECT_RESTORED: ("object_id", "size"),
    OBJECT_FREED: ("object_id",),
    NODE_JOINED: ("node_id", "address", "resources", "store_capacity"),
    NODE_DEAD: ("node_id", "reason"),
    NODE_STATS: ("node_id", "stats"),
    WORKER_STARTED: ("worker_id", "pid", "address", "kind"),
    WORKER_EXITED: ("worker_id", "pid", "kind"),
}  # fmt: skip

#: Read by every hook before it builds an event; false turns the whole machinery off.
ENABLED: bool = CONFIG.events
BUF: collections.deque[tuple[Any, ...]] = collections.deque()
_now = time.time

# A forked child starts with an empty buffer: its parent's events are the parent's to send.
os.register_at_fork(after_in_child=BUF.clear)


def emit(kind: int, *fields: Any) -> None:
    """Record one event now (any thread). Hot paths append their tuple to ``BUF`` directly."""
    if ENABLED:
        BUF.append((kind, _now(), *fields))


# -- where a task came from -----------------------------------------------------------------
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def call_site(depth: int = 2) -> str:
    """``file:line`` of the innermost caller outside the nbcluster package.

    A frame walk, not ``inspect.stack()``: this runs on every submission and must cost about
    a microsecond. In a notebook the file is the cell's (ipykernel names cells by file).
    """
    try:
        f: Any = sys._getframe(depth)
    except ValueError:
        return ""
    while f is not None:
        filename = f.f_code.co_filename
        if not filename.startswith(_PKG_DIR):
            return f"{filename}:{f.f_lineno}"
        f = f.f_back
    return ""


def _plain(tag: Any) -> Any:
    """Tags are whatever a tag provider returns (a kernel: the cell's msg_id); keep them
    encodable."""
    return tag if tag is None or type(tag) in (str, int) else str(tag)


# -- hooks called from the runtime (each one line at its call site) ------------------------------
def task_submitted(spec: Any) -> None:
    deps = [r._id for r in spec.deps] if spec.deps else None
    nested = [r._id for r in spec.held if hasattr(r, "_id")] if spec.held else None
    BUF.append(
        (TASK_SUBMITTED, _now(), spec.task_id, spec.fn.name, spec.attempt, deps, nested,
         spec.num_returns, _plain(spec.tag), call_site(3), spec.actor)
    )  # fmt: skip


def task_scheduled(spec: Any, conn: Connection) -> None:
    BUF.append((TASK_SCHEDULED, _now(), spec.task_id, spec.attempt, conn.info.get("addr")))


def task_running(task_id: bytes, name: str) -> None:
    BUF.append((TASK_RUNNING, _now(), task_id, name))


def task_ended(task_id: bytes) -> None:
    BUF.append((TASK_ENDED, _now(), task_id))


def task_finished(spec: Any, results: list[Any]) -> None:
    out = [[r[0], r[2], r[1] if r[0] == 1 else None] for r in results]  # 1: KIND_STORE
    BUF.append((TASK_FINISHED, _now(), spec.task_id, spec.attempt, out))


def task_failed(spec: Any, err_bytes: bytes | None) -> None:
    """A task's final failure; cancellation is reported as such, with the error's text."""
    kind, message = describe_error(err_bytes)
    if spec.cancelled or kind == "TaskCancelledError":
        BUF.append((TASK_CANCELLED, _now(), spec.task_id, spec.attempt))
    else:
        BUF.append((TASK_FAILED, _now(), spec.task_id, spec.attempt, kind, message))


def task_retried(spec: Any, reason: str) -> None:
    BUF.append((TASK_RETRIED, _now(), spec.task_id, spec.attempt, reason))


def describe_error(err_bytes: bytes | None) -> tuple[str, str]:
    """(type name, message) of a pickled error: the remote exception's, for a task error."""
    import pickle

    try:
        err = pickle.loads(err_bytes) if err_bytes else None
    except Exception:
        return "Error", "(the error could not be decoded)"
    if err is None:
        return "Error", ""
    cause = getattr(err, "cause", None)
    name = type(cause).__name__ if cause is not None else type(err).__name__
    return name, str(err)


def object_freed(oid: bytes) -> None:
    BUF.append((OBJECT_FREED, _now(), oid))


def object_created(oid: bytes, size: int, location: str | None) -> None:
    BUF.append((OBJECT_CREATED, _now(), oid, size, location, call_site(3)))


def actor_state(info: Any) -> None:
    """An actor changed state (head): its whole record, so any one event is enough."""
    if not ENABLED:
        return
    w = info.worker
    death = describe_error(info.death)[1] if info.death else ""
    BUF.append(
        (ACTOR_STATE, _now(), info.actor_id, info.state, info.class_name, info.name or "",
         info.namespace, info.owner, w.node_id if w else None, w.pid if w else None,
         info.restarts, death, info.create[1])
    )  # fmt: skip


# -- shipping --------------------------------------------------------------------------------
def take() -> list[tuple[Any, ...]]:
    """Everything buffered so far, oldest first (appends racing with this stay for later)."""
    popleft = BUF.popleft
    return [popleft() for _ in range(len(BUF))]


def flush_core(core: CoreWorker) -> None:
    """Ship this process's events now (loop thread); the state API calls it before a query,
    so a process sees its own events in the answer."""
    if BUF:
        head = getattr(core, "head", None)
        if head is not None and not head.closed:
            head.notify("events", _header(core), take())


def _header(core: CoreWorker) -> list[Any]:
    return [core.kind, os.getpid(), core.node_id, core.worker_id, core.address]


def attach_core(core: CoreWorker) -> None:
    """Start shipping a driver's or worker's events (called once it knows the head)."""
    from nbcluster.runtime import event_refs

    event_refs.install(core)
    if not ENABLED:
        return
    interval = CONFIG.event_flush_s

    def tick() -> None:
        if core.closed:
            return
        flush_core(core)
        core.loop.call_later(interval, tick)

    core.loop.call_later(interval, tick)


def attach_node(agent: NodeAgent, send: Callable[[list[Any], list[Any]], None] | None) -> None:
    """Ship a node process's events with ``send(header, batch)`` (None: to the head over the
    agent's connection to it) and sample its resources."""
    if not ENABLED:
        return
    if send is None:
        assert agent.head_conn is not None
        send = send_via(agent.head_conn)
    from nbcluster.runtime.node_stats import NodeSampler

    header = ["node", os.getpid(), agent.node_id, b"", agent.address]
    interval = CONFIG.event_flush_s
    sampler = NodeSampler(agent)

    def tick() -> None:
        if agent.closing:
            return
        if BUF:
            send(header, take())
        agent.loop.call_later(interval, tick)

    def sample() -> None:
        if agent.closing:
            return
        BUF.append((NODE_STATS, _now(), agent.node_id, sampler.sample()))
        agent.loop.call_later(CONFIG.resource_sample_s, sample)

    agent.loop.call_later(interval, tick)
    agent.loop.call_soon(sample)
    agent.store.store.on_event = _store_event


def _store_event(what: str, oid: bytes, size: int) -> None:
    BUF.append((OBJECT_SPILLED if what == "spilled" else OBJECT_RESTORED, _now(), oid, size))


def send_via(conn: Connection) -> Callable[[list[Any], list[Any]], None]:
    """A node's sender when the event log is in another process (the head)."""
    return lambda header, batch: conn.notify("events", header, batch)

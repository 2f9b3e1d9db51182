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

import msgpack

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
#: SUBMITTED + SCHEDULED + FINISHED of a task that finished before it was reported:
#: task_id, attempt, results, submitted, name, deps, nested, num_returns, tag, site, actor,
#: scheduled, worker address
TASK_DONE = 9
#: RUNNING + ENDED of a task that ran between two flushes: task_id, name, started
TASK_RAN = 11
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

#: How many state changes a combined event stands for (every other event: one). The head
#: numbers state changes, not tuples, so subscribers see one sequence number per change.
LOGICAL = {TASK_DONE: 3, TASK_RAN: 2}

#: Read by every hook before it builds an event; false turns the whole machinery off.
ENABLED: bool = CONFIG.events
BUF: collections.deque[tuple[Any, ...]] = collections.deque()
#: The two commonest events, TASK_DONE and TASK_RAN, travel in batches of their own: the
#: head keeps those as they are and reads them only when a query needs its tables current.
DONE_BUF: collections.deque[tuple[Any, ...]] = collections.deque()
RAN_BUF: collections.deque[tuple[Any, ...]] = collections.deque()
_now = time.time

# A forked child starts with an empty buffer: its parent's events are the parent's to send.
for _buf in (BUF, DONE_BUF, RAN_BUF):
    os.register_at_fork(after_in_child=_buf.clear)


def emit(kind: int, *fields: Any) -> None:
    """Record one event now (any thread). Hot paths append their tuple to ``BUF`` directly."""
    if ENABLED:
        BUF.append((kind, _now(), *fields))


# -- where a task came from -----------------------------------------------------------------
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def call_site(depth: int = 2) -> str:
    """``file:line`` of the innermost caller outside the nbcluster package.

    A frame walk, not ``inspect.stack()``: this runs on every submission (~0.4 us). In a
    notebook the file is the cell's (ipykernel names cells by file).
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
#
# Most tasks finish within a second of being submitted, so the owner reports a task once, as
# TASK_DONE (its submission, placement and completion in one tuple), and reports it as
# submitted separately only if it is still pending ``event_coalesce_s`` after submission (or
# fails, is retried or cancelled, or a state query asks). Likewise a worker reports TASK_RAN
# (start and end) for a task that ended between two flushes and TASK_RUNNING/TASK_ENDED for
# one running at a flush. That halves the events per task (and the head's work), while
# subscribers still see one event per state change: ``event_stream`` expands each combined
# event into the ones it stands for, and the head numbers them as such.

# What the owner and workers remember between a task's events is kept in tuples of plain
# values, which the garbage collector stops tracking: a list per pending task made the
# driver's collections measurably dearer (2.5 us a task in the async benchmark).

#: Owner: task id -> (submitted, call site[, scheduled, worker address]) of every unfinished
#: task it submitted; None once reported (the rest is read from the spec when reported).
PENDING: dict[bytes, tuple[Any, ...] | None] = {}
#: Owner: task id -> spec of the tasks in PENDING not reported yet, in submission order.
FRESH: dict[bytes, Any] = {}
#: Worker: task id -> (started, name) of the tasks running in this process; None once
#: reported as running.
RUNNING_NOW: dict[bytes, tuple[float, str] | None] = {}
_MISSING = ()


def task_submitted(spec: Any) -> None:
    tid = spec.task_id
    PENDING[tid] = (_now(), call_site(3))
    FRESH[tid] = spec


def task_scheduled(spec: Any, conn: Connection) -> None:
    tid = spec.task_id
    r = PENDING.get(tid, _MISSING)
    if r is None:  # reported already: this is news
        BUF.append((TASK_SCHEDULED, _now(), tid, spec.attempt, conn.info.get("addr")))
    elif r:
        PENDING[tid] = (r[0], r[1], _now(), conn.info.get("addr"))


def _submission(spec: Any) -> tuple[Any, ...]:
    """(name, deps, nested, num_returns, tag, actor) of a task, as events carry them."""
    deps = [x._id for x in spec.deps] if spec.deps else None
    nested = [x._id for x in spec.held if hasattr(x, "_id")] if spec.held else None
    return spec.fn.name, deps, nested, spec.num_returns, _plain(spec.tag), spec.actor


def task_finished(spec: Any, results: list[Any]) -> None:
    tid = spec.task_id
    if len(results) == 1 and results[0][0] == 0:  # the common case: one small value
        out: Any = ((0, results[0][2], None),)
    else:  # 1: KIND_STORE, whose data is the node holding it
        out = tuple((x[0], x[2], x[1] if x[0] == 1 else None) for x in results)
    r = PENDING.pop(tid, _MISSING)
    now = _now()
    if not r:  # reported already (or submitted before events were on)
        BUF.append((TASK_FINISHED, now, tid, spec.attempt, out))
        return
    del FRESH[tid]
    name, deps, nested, nret, tag, actor = _submission(spec)
    sched, addr = (r[2], r[3]) if len(r) > 2 else (now, None)
    DONE_BUF.append((TASK_DONE, now, tid, spec.attempt, out, r[0], name, deps, nested, nret,
                     tag, r[1], actor, sched, addr))  # fmt: skip


def task_failed(spec: Any, err_bytes: bytes | None) -> None:
    """A task's final failure; cancellation is reported as such, with the error's text."""
    _report(spec)
    PENDING.pop(spec.task_id, None)
    kind, message = describe_error(err_bytes)
    if spec.cancelled or kind == "TaskCancelledError":
        BUF.append((TASK_CANCELLED, _now(), spec.task_id, spec.attempt))
    else:
        BUF.append((TASK_FAILED, _now(), spec.task_id, spec.attempt, kind, message))


def task_retried(spec: Any, reason: str) -> None:
    _report(spec)
    BUF.append((TASK_RETRIED, _now(), spec.task_id, spec.attempt, reason))


def _report(spec: Any) -> None:
    """Report a task's submission (and placement) now, if not yet (event loop thread)."""
    tid = spec.task_id
    r = PENDING.get(tid)
    if not r:
        return
    PENDING[tid] = None
    FRESH.pop(tid, None)
    name, deps, nested, nret, tag, actor = _submission(spec)
    BUF.append((TASK_SUBMITTED, r[0], tid, name, spec.attempt, deps, nested, nret, tag, r[1],
                actor))  # fmt: skip
    if len(r) > 2:
        BUF.append((TASK_SCHEDULED, r[2], tid, spec.attempt, r[3]))


def report_pending(older_than: float) -> None:
    """Report the submissions waiting longer than ``older_than`` seconds, and the tasks
    running in this process (called before each flush, on the event loop thread)."""
    if FRESH:
        cutoff = _now() - older_than
        for tid in list(FRESH):
            r = PENDING.get(tid)
            if r and r[0] > cutoff:
                break
            spec = FRESH.get(tid)
            if spec is not None:
                _report(spec)
    if RUNNING_NOW:
        for tid, run in list(RUNNING_NOW.items()):
            if run is not None:
                RUNNING_NOW[tid] = None
                BUF.append((TASK_RUNNING, run[0], tid, run[1]))


def task_running(task_id: bytes, name: str) -> None:
    RUNNING_NOW[task_id] = (_now(), name)


def task_ended(task_id: bytes) -> None:
    run = RUNNING_NOW.pop(task_id, _MISSING)
    if run is None:
        BUF.append((TASK_ENDED, _now(), task_id))
    elif run:
        RAN_BUF.append((TASK_RAN, _now(), task_id, run[1], run[0]))


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


def object_freed(oid: bytes, kind: int) -> None:
    """Freed objects the head tracks: those in a store and ``put`` ones (small task results
    live and die in their owner's memory; ``memory_summary`` asks owners about those)."""
    if kind == 1 or oid.endswith(b"\x00\x00\x00\x00"):  # 1: KIND_STORE; index 0: put
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
def take(buf: collections.deque[tuple[Any, ...]] = BUF) -> bytes | None:
    """Everything ``buf`` holds, oldest first, packed; None if empty (appends racing with
    this stay for later). Batches travel and are kept as bytes: the head stores and forwards
    them as they are, and a blob holds no Python objects for the garbage collector to walk."""
    if not buf:
        return None
    popleft = buf.popleft
    return msgpack.packb([popleft() for _ in range(len(buf))])  # type: ignore[no-any-return]


def flush_core(core: CoreWorker, older_than: float = 0.0) -> None:
    """Ship this process's events now (loop thread). The state API calls it before a query
    (reporting every pending submission), so a process sees its own doings in the answer."""
    report_pending(older_than)
    if BUF or DONE_BUF or RAN_BUF:
        head = getattr(core, "head", None)
        if head is not None and not head.closed:
            head.notify("events", _header(core), take(), take(DONE_BUF), take(RAN_BUF))


def _header(core: CoreWorker) -> list[Any]:
    return [core.kind, os.getpid(), core.node_id, core.worker_id, core.address]


def attach_core(core: CoreWorker) -> None:
    """Start shipping a driver's or worker's events (called once it knows the head)."""
    from nbcluster.runtime import event_refs

    event_refs.install(core)
    if not ENABLED:
        return
    for table in (PENDING, FRESH, RUNNING_NOW):  # left by an earlier session of this process
        table.clear()
    for buf in (BUF, DONE_BUF, RAN_BUF):
        buf.clear()
    interval = CONFIG.event_flush_s

    coalesce = CONFIG.event_coalesce_s

    def tick() -> None:
        if core.closed:
            return
        flush_core(core, coalesce)
        core.loop.call_later(interval, tick)

    core.loop.call_later(interval, tick)


def attach_node(agent: NodeAgent, send: Callable[[list[Any], bytes | None], None] | None) -> None:
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
            send(header, take())  # (node processes run no tasks: no DONE or RAN)
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


def send_via(conn: Connection) -> Callable[[list[Any], bytes | None], None]:
    """A node's sender when the event log is in another process (the head)."""
    return lambda header, batch: conn.notify("events", header, batch)

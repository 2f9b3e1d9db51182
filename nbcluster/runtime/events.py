"""State-change events: recorded where they happen, shipped to the head in batches.

Every process appends events to per-process buffers (deques: appending is atomic, so user
threads and the event loop need no lock); the component that owns the process's loop ships
them (``drain``/``take``) on its own timer, every ``event_flush_s``, as one ``events``
notification: the core worker in drivers and workers (``core.event_shipping``), the node
agent in node processes (``node.event_shipping``). This module imports no component, so
every layer can record. An event is a plain tuple
``(kind, time, *fields)`` — building a dict or a record per event would cost more than the
task it describes — and the batch carries who sent it (a *header*), so events need not repeat
the process's pid, node or address. The head (``event_log``) numbers them, streams them to
subscribers and builds its state tables from them.

Who reports what is chosen for cost. The driver is what limits task throughput, so an owner
reports one thing per task, its submission (with the call site and tag only it knows), plus
retries, failures and cancellations, which are rare. The worker reports the rest in one tuple
per task (TASK_RAN: when it arrived, ran and ended, and its results); a task still queued or
running at a flush is reported as such then (SCHEDULED / RUNNING, and later its end), so
long tasks show live. ``event_stream`` expands a TASK_RAN into the state changes it stands for,
and the head numbers it as that many, so subscribers see one event per state change.

Task events travel in a *lazy* batch that the head keeps as is and applies only when a query
needs its tables; the rest (objects, actors, nodes, workers) is applied at once. With
``NBCLUSTER_EVENTS=0`` nothing is recorded (hooks check ``ENABLED`` first), which is how the
overhead is measured.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from typing import Any

import msgpack

from nbcluster.runtime.config import CONFIG

# Event kinds and their fields after (kind, time). ``event_stream`` decodes them.
TASK_SUBMITTED = 1  # task_id, name, attempt, arg oids, nested oids, num_returns, tag, site, actor
TASK_SCHEDULED = 2  # task_id, attempt (None), worker address (worker: queued there)
TASK_RUNNING = 3  # task_id, name (worker: started running)
TASK_ENDED = 4  # task_id (worker: ended without a value; the owner reports what it means)
TASK_FINISHED = 5  # task_id, results (see ``task_replied``) (worker: ended with a value)
TASK_FAILED = 6  # task_id, attempt, error type, error message (owner)
TASK_RETRIED = 7  # task_id, new attempt, reason (owner)
TASK_CANCELLED = 8  # task_id, attempt (owner)
#: Worker, a task that arrived and ended between two flushes: task_id, name, started,
#: queued (None if reported), results (None: no value) — SCHEDULED (if queued) + RUNNING +
#: FINISHED (or ENDED, without a value).
TASK_RAN = 11
#: A task's own progress (``nbcluster.util.progress``): task_id, bar key, description, done,
#: total (None: unknown), unit. Sent by the worker a few times a second at most per bar.
TASK_PROGRESS = 12
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


def weight(ev: Any) -> int:
    """How many state changes an event stands for: the head numbers changes, not tuples."""
    return (3 if ev[5] is not None else 2) if ev[0] == TASK_RAN else 1


#: Read by every hook before it builds an event; false turns the whole machinery off.
ENABLED: bool = CONFIG.events
#: Events applied by the head at once.
BUF: collections.deque[tuple[Any, ...]] = collections.deque()
#: Task events, each packed as it happens (so the many in flight hold no object for the
#: garbage collector to count: a tuple per task made the driver collect more often): the
#: head keeps these batches as they are until a query needs them. By weight: one state
#: change each, TASK_RAN without / with its arrival (2 and 3).
TASKS: collections.deque[bytes] = collections.deque()
RAN2: collections.deque[bytes] = collections.deque()
RAN3: collections.deque[bytes] = collections.deque()
_now = time.time
# One packer for every thread: its pack() runs in C without releasing the GIL, and resets
# itself when it fails, so calls from different threads cannot interleave.
_pack = msgpack.Packer().pack

# A forked child starts with empty buffers: its parent's events are the parent's to send.
for _buf in (BUF, TASKS, RAN2, RAN3):
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
def task_submitted(spec: Any) -> None:
    deps = [x.binary() for x in spec.deps] if spec.deps else None
    nested = [x.binary() for x in spec.held if hasattr(x, "binary")] if spec.held else None
    TASKS.append(_pack((TASK_SUBMITTED, _now(), spec.task_id, spec.fn.name, spec.attempt,
                        deps, nested, spec.num_returns, _plain(spec.tag), call_site(3),
                        spec.actor)))  # fmt: skip


def task_failed(spec: Any, err_bytes: bytes | None) -> None:
    """A task's final failure; cancellation is reported as such, with the error's text."""
    kind, message = describe_error(err_bytes)
    if spec.cancelled or kind == "TaskCancelledError":
        TASKS.append(_pack((TASK_CANCELLED, _now(), spec.task_id, spec.attempt)))
    else:
        TASKS.append(_pack((TASK_FAILED, _now(), spec.task_id, spec.attempt, kind, message)))


def task_progress(task_id: bytes, key: int, desc: str, n: float, total: float | None,
                  unit: str) -> None:  # fmt: skip
    """A running task reported how far it got (any thread of the task's process)."""
    if ENABLED:
        BUF.append((TASK_PROGRESS, _now(), task_id, key, desc, n, total, unit))


def task_retried(spec: Any, reason: str) -> None:
    TASKS.append(_pack((TASK_RETRIED, _now(), spec.task_id, spec.attempt, reason)))


# The worker remembers each task between its events in dicts of plain tuples, which the
# garbage collector stops tracking. Each entry is taken exactly once, by ``dict.pop`` (atomic),
# either by the task's next step or by the flush that reports it as still queued / running.

#: Worker: task id -> arrival time, for tasks queued here and not started or reported.
QUEUED: dict[bytes, float] = {}
#: Worker: task id -> (started, name, arrived or None) for tasks running, not reported.
RUNNING_NOW: dict[bytes, tuple[float, str, float | None]] = {}


#: Worker: tasks whose reply is on its way and whose run is not recorded yet (a set: adding
#: and discarding are atomic, from any executor thread). One add and one discard per task,
#: ~50 ns of the ~45 us a worker spends per no-op task: below what events_overhead.py tells
#: apart on this machine.
REPLYING: set[bytes] = set()
#: How long a confirmed flush waits for such records (they take microseconds).
_REPLYING_WAIT_S = 0.05


def task_queued(task_id: bytes) -> None:
    QUEUED[task_id] = _now()


def task_running(task_id: bytes, name: str) -> None:
    RUNNING_NOW[task_id] = (_now(), name, QUEUED.pop(task_id, None))


def task_replied(task_id: bytes, status: int, results: list[Any]) -> None:
    """The worker sent a task's outcome home (``status`` 0: a value): report its run, which
    ends here (its results are made). ``out`` is None without a value, the size of a single
    small value (the common case, kept to one int), or ((kind, size, store address), ...)."""
    end = _now()
    out: Any = None
    if status == 0:
        if len(results) == 1 and results[0][0] == 0:
            out = results[0][2]
        else:  # 1: KIND_STORE, whose data is the agent holding it
            out = tuple((x[0], x[2], x[1] if x[0] == 1 else None) for x in results)
    run = RUNNING_NOW.pop(task_id, None)
    if run is not None:
        (RAN2 if run[2] is None else RAN3).append(
            _pack((TASK_RAN, end, task_id, run[1], run[0], run[2], out))
        )
    else:
        QUEUED.pop(task_id, None)  # reported as running at a flush, or never ran (cancelled)
        if out is not None:
            TASKS.append(_pack((TASK_FINISHED, end, task_id, out)))
        else:
            TASKS.append(_pack((TASK_ENDED, end, task_id)))
    REPLYING.discard(task_id)


def results_of(out: Any) -> tuple[tuple[int, int, str | None], ...]:
    """A task's results as ``task_replied`` encodes them: ((kind, size, location), ...)."""
    if out is None:
        return ()
    if isinstance(out, int):
        return ((0, out, None),)
    return tuple(out)


def _report_worker(address: str) -> None:
    """Report the tasks still queued or running here at a flush (event loop thread).

    Each report is appended *before* its entry is taken: a task thread that takes the entry
    meanwhile reports the task's next step after this one, never before it (taking first
    let a task's end overtake its RUNNING, and the head then showed a finished task as
    running for ever). A report made twice that way is harmless: states only move forward."""
    if QUEUED:
        for tid in list(QUEUED):
            ts = QUEUED.get(tid)
            if ts is not None:
                TASKS.append(_pack((TASK_SCHEDULED, ts, tid, None, address)))
                QUEUED.pop(tid, None)
    if RUNNING_NOW:
        for tid in list(RUNNING_NOW):
            run = RUNNING_NOW.get(tid)
            if run is not None:
                if run[2] is not None:
                    TASKS.append(_pack((TASK_SCHEDULED, run[2], tid, None, address)))
                TASKS.append(_pack((TASK_RUNNING, run[0], tid, run[1])))
                RUNNING_NOW.pop(tid, None)


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


def object_created(oid: bytes, size: int, location: str | None, site: str | None = None) -> None:
    """An object its owner made (``put``, or a value a streaming task yielded); ``site``:
    where, when not the caller's caller."""
    BUF.append(
        (OBJECT_CREATED, _now(), oid, size, location, call_site(3) if site is None else site)
    )


def actor_state(info: Any) -> None:
    """An actor changed state (head): its whole record, so any one event is enough."""
    if not ENABLED:
        return
    w = info.worker
    death = describe_error(info.death)[1] if info.death else ""
    BUF.append(
        (ACTOR_STATE, _now(), info.actor_id, info.state, info.class_name, info.name or "",
         info.namespace, info.owner, w.node_id if w else None, w.pid if w else None,
         info.restarts, death, info.create.task_id)
    )  # fmt: skip


# -- shipping --------------------------------------------------------------------------------
def take(buf: collections.deque[tuple[Any, ...]] = BUF) -> bytes | None:
    """Everything ``buf`` holds, oldest first, packed; None if empty (appends racing with
    this stay for later). Batches travel and are kept as bytes: the head stores and forwards
    them as they are, and bytes hold nothing for the garbage collector to walk."""
    if not buf:
        return None
    popleft = buf.popleft
    return _pack([popleft() for _ in range(len(buf))])  # type: ignore[no-any-return]


def take_tasks() -> tuple[bytes | None, int]:
    """The packed task events, as one msgpack array, and how many state changes they are."""
    parts: list[bytes] = []
    n = 0
    for buf, w in ((TASKS, 1), (RAN2, 2), (RAN3, 3)):
        k = len(buf)
        parts.extend(buf.popleft() for _ in range(k))
        n += k * w
    if not parts:
        return None, 0
    return _array_header(len(parts)) + b"".join(parts), n


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def drain(address: str) -> tuple[bytes | None, bytes | None, int] | None:
    """Everything recorded here, ready to ship: (batch, task batch, how many task state
    changes); None when nothing waits. Tasks still queued or running are reported first, as
    seen by the process at ``address`` (event loop thread)."""
    if RUNNING_NOW or QUEUED:
        _report_worker(address)
    if not (BUF or TASKS or RAN2 or RAN3):
        return None
    blob = take()
    tasks, n = take_tasks()
    return blob, tasks, n


async def replies_recorded(timeout: float = _REPLYING_WAIT_S) -> None:
    """Wait (briefly) until every task whose reply already left has its run recorded: the
    asker may hold that reply and expect to see the run."""
    deadline = time.monotonic() + timeout
    while REPLYING and time.monotonic() < deadline:
        await asyncio.sleep(0.0005)


def reset() -> None:
    """Forget what an earlier cluster's process recorded (a driver's ``init`` after
    ``shutdown``)."""
    for table in (BUF, TASKS, RAN2, RAN3, QUEUED, RUNNING_NOW, REPLYING):
        table.clear()


def node_stats(node_id: str, stats: dict[str, Any]) -> None:
    """A node's resource sample (``node.node_stats``)."""
    BUF.append((NODE_STATS, _now(), node_id, stats))


def store_event(what: str, oid: bytes, size: int) -> None:
    """The node's store spilled or restored an object (its ``on_event`` hook)."""
    BUF.append((OBJECT_SPILLED if what == "spilled" else OBJECT_RESTORED, _now(), oid, size))

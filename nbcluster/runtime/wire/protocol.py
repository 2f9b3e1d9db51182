"""Message type numbers and layouts of the wire protocol.

Every message is a msgpack array whose first element is its type. Requests and replies
(``REQUEST``/``REPLY``) are the transport's RPC: a method name and its arguments. Every other
message has a typed record here, the one definition of its layout: senders build the record
and ``encode`` it, the transport ``decode``s a frame into its record before any handler sees
it, and a frame whose fields do not fit its record is malformed input.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: The version of this wire protocol. Tools that find a cluster through its session record
#: (the jupyter-server extension) compare it before talking, and say so when it differs.
PROTOCOL_VERSION = 1

DONE_OK = 0
DONE_APP_ERROR = 1
DONE_CANCELLED = 2
DONE_SYSTEM_ERROR = 3

# Message types. REQUEST and REPLY are the transport's RPC: [REQUEST, id, method, args]
# (id 0: no reply wanted) and [REPLY, id, ok, result or error].
REQUEST = 1
REPLY = 2
HELLO = 3
PUSH_TASK = 4
TASK_DONE = 5
TASK_REQUEUE = 6
CANCEL_TASK = 7
REMOVE_BORROWER = 9
HANDOFF_DONE = 10
OUTPUT = 11
STEAL_TASKS = 12
GENERATOR_ITEM = 13


class Hello(NamedTuple):
    """First message of a connecting side: who it is."""

    address: str  # where the sender serves
    kind: str  # "driver", "worker", "head"
    worker_id: bytes
    pid: int
    #: The driver whose work it sends; nodes and the head leave it out.
    job_id: str | None = None


class PushTask(NamedTuple):
    """An owner hands a task to a leased worker (or an actor)."""

    task_id: bytes
    fn_id: bytes
    fn_bytes: bytes | None  # sent once per worker; None when it has it
    fn_name: str
    args_blob: bytes
    #: Resolved top-level ObjectRef arguments, in order: [[kind, data, size], ...].
    deps: list[Any]
    num_returns: Any
    #: {"res": resources, "gpus": [ids], ...} or None.
    extra: dict[str, Any] | None


class TaskDone(NamedTuple):
    """A worker's reply to a task."""

    task_id: bytes
    status: int  # DONE_OK, DONE_APP_ERROR, DONE_CANCELLED, DONE_SYSTEM_ERROR
    #: [[kind, data, size], ...] one per return (errors: one [KIND_ERROR, bytes, 0]).
    results: Any
    #: [[oid, owner], ...] ObjectRefs pickled inside the returned values.
    contained: list[Any]
    #: [[oid, owner], ...] refs the arguments gave the worker that it still holds: the caller
    #: registers the worker as their borrower (see ``core.borrowing``).
    borrowed: list[Any]


class TaskRequeue(NamedTuple):
    """A worker gives back the tasks it had not started: it blocked in ``get`` (``blocked``),
    or its owner asked (STEAL_TASKS)."""

    task_ids: list[bytes]
    blocked: bool


class CancelTask(NamedTuple):
    task_id: bytes
    force: bool


class RemoveBorrower(NamedTuple):
    """A borrower's last ref is gone. (Borrowers are registered with the acknowledged
    ``add_borrowers`` request, [[oid, borrower], ...].)"""

    oid: bytes


class HandoffDone(NamedTuple):
    """The caller registered itself for the refs inside a task's result, so the worker may
    drop the holds it kept on them."""

    task_id: bytes


class Output(NamedTuple):
    """What a running task printed, sent to its owner."""

    task_id: bytes
    stream: str
    text: str
    where: Any


class StealTasks(NamedTuple):
    """The owner has an idle worker: give back the tasks queued here, not started."""


class GeneratorItem(NamedTuple):
    """A streaming generator task yielded a value: the worker sends it home at once, before
    the task ends. Its TASK_DONE follows the last item on the same connection, so an owner
    that sees the task done has seen every item."""

    task_id: bytes
    item: int  # which value: 0 for the first one yielded
    #: [kind, data, size] as one entry of TaskDone.results; [kind, node, size, oid] in a store.
    result: list[Any]
    #: [[oid, owner], ...] ObjectRefs pickled inside the value (held until HANDOFF_DONE of
    #: the item's object id).
    contained: list[Any]


#: Message type -> its record.
RECORDS: dict[int, type[Any]] = {
    HELLO: Hello, PUSH_TASK: PushTask, TASK_DONE: TaskDone, TASK_REQUEUE: TaskRequeue,
    CANCEL_TASK: CancelTask, REMOVE_BORROWER: RemoveBorrower, HANDOFF_DONE: HandoffDone,
    OUTPUT: Output, STEAL_TASKS: StealTasks, GENERATOR_ITEM: GeneratorItem,
}  # fmt: skip
TYPES: dict[type[Any], int] = {cls: code for code, cls in RECORDS.items()}


def encode(record: tuple[Any, ...]) -> tuple[Any, ...]:
    """The frame of a record: its type, then its fields (a msgpack array)."""
    return (TYPES[type(record)], *record)


def notification(method: str, *args: Any) -> tuple[Any, ...]:
    """The frame of a request that wants no reply (request id 0)."""
    return (REQUEST, 0, method, list(args))


def decode(msg: list[Any]) -> Any:
    """The record a frame holds; ``TypeError`` when its fields do not fit its type."""
    return RECORDS[msg[0]](*msg[1:])


#: Names of message types, for logs.
MESSAGE_NAMES: dict[int, str] = {
    v: k for k, v in list(globals().items())
    if k.isupper() and not k.startswith("DONE_") and k != "PROTOCOL_VERSION" and isinstance(v, int)
}  # fmt: skip

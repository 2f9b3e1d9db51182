"""Message type numbers and layouts of the wire protocol.

Every message is a msgpack array whose first element is its type. The layouts below are the
one definition of each message; senders and handlers refer to these constants only.
"""

from __future__ import annotations

from nbcluster.runtime.wire.transport import MESSAGE_NAMES, REPLY, REQUEST

__all__ = [
    "CANCEL_TASK",
    "HANDOFF_DONE",
    "HELLO",
    "OUTPUT",
    "PROTOCOL_VERSION",
    "PUSH_TASK",
    "REMOVE_BORROWER",
    "REPLY",
    "REQUEST",
    "STEAL_TASKS",
    "TASK_DONE",
    "TASK_REQUEUE",
]

#: The version of this wire protocol. Tools that find a cluster through its session record
#: (the jupyter-server extension) compare it before talking, and say so when it differs.
PROTOCOL_VERSION = 1

#: [HELLO, server_address, kind, worker_id(bytes), pid, job_id] — first message of a
#: connecting side (job_id: the driver whose work it sends; nodes and the head omit it).
HELLO = 3
#: [PUSH_TASK, task_id, fn_id, fn_bytes|None, fn_name, args_blob, deps, num_returns, extra]
#:   deps: [[kind, data, size], ...] resolved top-level ObjectRef arguments, in order
#:   extra: {"res": resources, "gpus": [ids], ...} or None
PUSH_TASK = 4
#: [TASK_DONE, task_id, status, results, contained, borrowed]
#:   status: DONE_OK, DONE_APP_ERROR, DONE_CANCELLED, DONE_SYSTEM_ERROR
#:   results: [[kind, data, size], ...] one per return (errors: one [KIND_ERROR, bytes, 0])
#:   contained: [[oid, owner], ...] ObjectRefs pickled inside the returned values
#:   borrowed: [[oid, owner], ...] refs the arguments gave the worker that it still holds:
#:     the caller registers the worker as their borrower (see ``ownership``)
TASK_DONE = 5
#: [TASK_REQUEUE, [task_id, ...], blocked] — a worker gives back the tasks it had not
#: started: it blocked in ``get`` (blocked true), or its owner asked (STEAL_TASKS).
TASK_REQUEUE = 6
#: [CANCEL_TASK, task_id, force]
CANCEL_TASK = 7
#: [REMOVE_BORROWER, oid] — sent by a borrower to the owner when its last ref is gone.
#: Borrowers are registered with the ``add_borrowers`` request, [[oid, borrower], ...],
#: which its owner acknowledges.
REMOVE_BORROWER = 9
#: [HANDOFF_DONE, task_id] — the caller registered itself for the refs inside a task's result,
#: so the worker may drop the holds it kept on them.
HANDOFF_DONE = 10
#: [STEAL_TASKS] — the owner has an idle worker: give back the tasks queued here, not started.
STEAL_TASKS = 12
#: [OUTPUT, task_id, stream, text, where] — what a running task printed, sent to its owner.
OUTPUT = 11

DONE_OK = 0
DONE_APP_ERROR = 1
DONE_CANCELLED = 2
DONE_SYSTEM_ERROR = 3

MESSAGE_NAMES.update(
    {v: k for k, v in list(globals().items()) if k.isupper() and not k.startswith("DONE_")
     and isinstance(v, int)}
)  # fmt: skip

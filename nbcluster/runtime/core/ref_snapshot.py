"""Why each object is still alive: a process's references, as ``nbcluster memory`` shows them.

Events say which objects exist; only the processes holding ObjectRefs know *why* they exist.
The head asks each driver and worker for this snapshot (the ``debug_refs`` RPC) when someone
runs ``nbcluster memory``, as Ray's ``ray memory`` asks every core worker. The reference kinds
are Ray's: a ref held by a variable (LOCAL_REFERENCE), by a queued or running task's argument
(USED_BY_PENDING_TASK), inside another object (CAPTURED_IN_OBJECT), by a reader's zero-copy
view (PINNED_IN_MEMORY), or an actor handle (ACTOR_HANDLE).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker
    from nbcluster.runtime.wire.transport import Connection

_HANDLE_SUFFIX = b"\xff\xff\xff\xff"  # actor handle objects (see runtime.actor)
#: (reference table state, kind) -> where the value is, as ``list_objects`` says it
_STATES = {(0, 0): "PENDING", (0, 1): "PENDING", (0, 2): "PENDING", (1, 0): "INLINE",
           (1, 1): "IN_MEMORY", (2, 2): "ERROR", (2, 0): "ERROR", (2, 1): "ERROR"}  # fmt: skip


def install(core: CoreWorker) -> None:
    core.endpoint.rpc["debug_refs"] = lambda conn: snapshot(core)
    core.endpoint.rpc["debug_sizes"] = lambda conn: sizes(core)


def sizes(core: CoreWorker) -> dict[str, int]:
    """How big the tables of this process are that a long session could grow: each must
    stay bounded by what is alive, not by what ever happened (runs on the loop thread)."""
    sub = core.submitter
    out = {
        "objects": len(core.refs.entries),
        "pins": len(core.store_reader.pinned()),
        "connections": len(core.conns),
        "tasks": len(sub.tasks),
        "lineage": len(sub.lineage),
        "lineage_bytes": sub.lineage.bytes,
        "scheduling_classes": len(sub.classes),
        "actor_queues": len(sub.actor_queues),
        "dead_nodes": len(sub.dead_agents),
        "handoffs": len(core.ownership.handoffs),
    }
    ex = core.executor
    if ex is not None:
        out.update(queued=len(ex.queued), cancelled=len(ex.cancelled),
                   running=len(ex.running), reported=len(ex.borrowed),
                   function_blobs=len(ex.fn_blobs))  # fmt: skip
    return out


def snapshot(core: CoreWorker, conn: Connection | None = None) -> dict[str, Any]:
    """This process's references, classified (runs on the loop thread)."""
    pending: set[bytes] = set()
    for spec in list(core.submitter.tasks.values()):
        for ref in list(spec.deps or ()):
            pending.add(ref.binary())
    pinned = core.store_reader.pinned()
    with core.refs.lock:
        entries = list(core.refs.entries.values())
    captured: set[bytes] = set()
    for e in entries:
        for ref in e.contained or ():
            oid = getattr(ref, "_id", None)
            if oid is not None:
                captured.add(oid)
    refs = []
    for e in entries:
        oid = e.oid
        if oid.endswith(_HANDLE_SUFFIX):
            kind = "ACTOR_HANDLE"
        elif oid in pinned:
            kind = "PINNED_IN_MEMORY"
        elif oid in pending:
            kind = "USED_BY_PENDING_TASK"
        elif oid in captured:
            kind = "CAPTURED_IN_OBJECT"
        elif e.local > 0:
            kind = "LOCAL_REFERENCE"
        else:
            kind = "BORROWED_BY_OTHERS"  # only other processes' refs keep it
        refs.append([oid, kind, e.owned, e.owner, e.size, e.local,
                     sum(1 for n in e.borrowers.values() if n > 0),
                     _STATES.get((e.state, e.kind), "UNKNOWN")])  # fmt: skip
    return {"pid": os.getpid(), "kind": core.kind, "address": core.address, "refs": refs}

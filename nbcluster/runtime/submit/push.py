"""Sending a task straight to the worker that runs it: a leased worker or an actor.

Both kinds of target keep the tasks they have in flight, so a reply, a lost connection or a
cancel finds the task's target from the task (``spec.lease``) and the target's tasks from it.
A function travels once per connection; later pushes name it by id.
"""

from __future__ import annotations

import time
from typing import Protocol

from nbcluster.runtime.ownership.reference_table import ReferenceTable
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection


class PushTarget(Protocol):
    """Where tasks go: a normal task's ``Lease`` or an actor's ``ActorQueue``."""

    @property
    def conn(self) -> Connection | None: ...

    @property
    def gpus(self) -> list[int]: ...

    inflight: dict[bytes, TaskSpec]
    last_used: float


def push(refs: ReferenceTable, spec: TaskSpec, lease: PushTarget) -> None:
    """Send ``spec`` to ``lease``'s worker, with its arguments' values or locations."""
    spec.lease = lease
    lease.inflight[spec.task_id] = spec
    lease.last_used = time.monotonic()
    conn = lease.conn
    assert conn is not None
    fn = spec.fn
    sent = conn.info.get("fns")
    if sent is None:
        sent = conn.info["fns"] = set()
    fn_bytes = None
    if fn.fn_id not in sent:
        sent.add(fn.fn_id)
        fn_bytes = fn.fn_bytes
    deps = []
    if spec.deps:
        for ref in spec.deps:
            e = refs.get(ref.binary())
            assert e is not None
            deps.append([e.oid, e.kind, e.data, e.size])
    extra = spec.extra
    if extra is None and (
        lease.gpus or spec.resources or spec.max_calls or spec.dynamic or spec.runtime_env
        or spec.namespace
    ):  # fmt: skip
        extra = {"res": spec.resources, "gpus": lease.gpus}
        if spec.max_calls:
            extra["max_calls"] = spec.max_calls
        if spec.dynamic:
            extra["dynamic"] = True
        if spec.runtime_env:
            extra["env"] = spec.runtime_env
        if spec.namespace:
            extra["ns"] = spec.namespace
    if spec.stream is not None:  # the worker skips the values a first attempt delivered
        extra = {**(extra or {}), "stream": spec.stream.received}
    conn.post(
        P.PushTask(spec.task_id, fn.fn_id, fn_bytes, fn.name, spec.args_blob, deps,
                   spec.num_returns, extra)
    )  # fmt: skip

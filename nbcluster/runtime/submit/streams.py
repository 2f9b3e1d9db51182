"""The owner's side of a streaming generator task: each value the worker yields, as it comes.

The worker sends each value as soon as it is yielded (``GENERATOR_ITEM``). The owner makes
it an object it owns (no lineage: a value lost with its node is not rebuilt) and hands its
ref to the task's ``ObjectRefGenerator``. A value nobody can take any more (the generator
was dropped, or the task already ended, as when it was cancelled) is freed at once. A retried
task skips the values delivered before (``push`` tells the worker how many), as Ray's does.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbcluster.runtime import events as ev
from nbcluster.runtime.ownership.generators import item_id
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import KIND_STORE, READY
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class StreamReceiver:
    """Takes in the values of this process's streaming tasks."""

    def __init__(self, core: CoreWorker, table: TaskTable) -> None:
        self.core = core
        self.table = table

    def on_item(self, conn: Connection, msg: P.GeneratorItem) -> None:
        task_id, index, result, contained = msg
        oid = item_id(task_id, index)
        spec = self.table.tasks.get(task_id)
        feed = spec.stream if spec is not None else None
        consumer = feed.consumer() if feed is not None else None
        if feed is None or index != feed.received or consumer is None:
            if feed is not None and index < feed.received:  # delivered already: keep it
                result = []
            self.table.discard_results([result] if result else [], conn, oid, contained)
            return
        feed.received += 1
        core = self.core
        held = self.table.take_contained(conn, oid, contained)
        e = core.refs.create_owned(oid)
        e.contained = held
        core.refs.resolve(e, READY, result[0], result[1], result[2])
        if ev.ENABLED and result[0] == KIND_STORE:  # the head tracks stored objects
            ev.object_created(oid, result[2], result[1], feed.site)
        consumer.deliver(index, ObjectRef(oid, core.address))


__all__ = ["StreamReceiver"]

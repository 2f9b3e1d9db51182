"""The tasks this process owns that have not finished, and how each one ends.

Every other part of the owner's side of a task (leasing, actor queues, replies, retries,
recovery, cancel) looks tasks up here and ends them here, so one place decides what a finished
task leaves behind: its results resolved in the reference table, its arguments let go, and, for
a result in a node's store, the task kept as lineage to rebuild it with.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events as ev
from nbcluster.runtime.core import output
from nbcluster.runtime.ownership.lineage import Lineage
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_ERROR,
    KIND_STORE,
    READY,
    Entry,
)
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class TaskTable:
    """Pending tasks by id, the lineage of finished ones, and their completion or failure."""

    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        #: task id -> spec, from dependency resolution until the task is done
        self.tasks: dict[bytes, TaskSpec] = {}
        self.lineage = Lineage()

    def complete(
        self, spec: TaskSpec, results: list[Any], contained: list[Any], conn: Connection
    ) -> None:
        """The task succeeded: resolve its results (``[kind, data, size]`` each)."""
        spec.done = True
        self.tasks.pop(spec.task_id, None)
        refs = self.core.refs
        held = self.take_contained(conn, spec.task_id, contained)
        in_store = False
        for oid, result in zip(spec.return_ids, results, strict=True):
            kind, data, size = result[0], result[1], result[2]
            e = refs.get(oid)
            if e is None:  # nobody holds the result any more
                self.discard_results([[kind, data, size, oid]], conn)
                continue
            if held:
                e.contained = held
            if kind == KIND_STORE and spec.actor is None:
                in_store = True  # e.spec stays: the lineage to rebuild it with
            else:
                e.spec = None
            refs.resolve(e, FAILED if kind == KIND_ERROR else READY, kind, data, size)
        if in_store:
            self.lineage.keep(spec)
        else:
            spec.deps = []
            spec.held = []

    def take_contained(
        self, conn: Connection, key: bytes, contained: list[Any]
    ) -> list[ObjectRef] | None:
        """The refs pickled inside a result, which we borrow now: the worker holds them
        (under ``key``) until their owners know us."""
        if not contained:
            return None
        refs = self.core.refs
        outer = refs.start_collecting()
        held = [ObjectRef(oid, owner) for oid, owner in contained]
        self.core.ownership.result_refs(conn, key, refs.stop_collecting(outer))
        return held

    def discard_results(
        self, results: list[Any], conn: Connection, task_id: bytes = b"", contained: Any = None
    ) -> None:
        """Nobody wants these results: free their stored copies, and let the worker drop
        the refs it kept for us inside them."""
        for r in results:
            if r[0] == KIND_STORE and len(r) > 3:
                self.core.send_to(r[1], P.notification("store_delete", r[3]))
        if contained:
            conn.post(P.HandoffDone(task_id))

    def fail(self, spec: TaskSpec, err: BaseException) -> None:
        from nbcluster.runtime.objects.serialization import error_bytes

        self.fail_raw(spec, error_bytes(err))

    def fail_raw(self, spec: TaskSpec, data: bytes) -> None:
        """Fail every result of the task with ``data`` (a pickled exception)."""
        if ev.ENABLED:
            ev.task_failed(spec, data)
        spec.done = True
        self.tasks.pop(spec.task_id, None)
        refs = self.core.refs
        for oid in spec.return_ids:
            e = refs.get(oid)
            if e is not None:
                e.spec = None
                refs.resolve(e, FAILED, KIND_ERROR, data, 0)
        spec.deps = []
        spec.held = []

    def failed_dep(self, spec: TaskSpec) -> bool:
        """An argument failed: so does this task (True when it did)."""
        for ref in spec.deps:
            e = self.core.refs.get(ref.binary())
            if e is not None and e.state == FAILED:
                self.fail_raw(spec, e.data)
                return True
        return False

    def on_return_dropped(self, e: Entry) -> None:
        """A result is no longer referenced: once none of its task's results is, its lineage
        can go (a pending task still runs; its result is dropped)."""
        spec = e.spec
        e.spec = None
        if spec is None or not spec.done:
            return
        refs = self.core.refs
        if all(refs.get(oid) is None for oid in spec.return_ids):
            self.lineage.drop(spec)

    def on_output(self, conn: Connection, msg: P.Output) -> None:
        """A task printed: show it where the cell that submitted it shows its output."""
        spec = self.tasks.get(msg.task_id)
        if spec is None:
            output.deliver(None, msg.stream, msg.text, msg.where)
        else:
            output.deliver(spec.tag, msg.stream, msg.text, msg.where, spec.parent)

    def forget(self) -> None:
        """This process left the cluster: nothing here can finish or be rebuilt any more."""
        self.tasks.clear()
        self.lineage = Lineage()

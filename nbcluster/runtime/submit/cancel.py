"""Cancelling tasks this process submitted: one, what a task submitted, or a cell's tasks.

A task not sent yet never runs and fails with ``TaskCancelledError`` here. One already sent
is the worker's to stop (``CANCEL_TASK``; ``executor.on_cancel`` says how, as Ray does), or,
with ``force``, its worker is killed, and the task fails as cancelled rather than retried.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

from typing import Any

from nbcluster import exceptions as exc
from nbcluster.runtime.submit.actor_submitter import ActorSubmitter
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire import protocol as P


class Canceller:
    """Cancels by task id, by parent task or by cell; the table says what is still pending."""

    def __init__(self, table: TaskTable, actors: ActorSubmitter) -> None:
        self.table = table
        self.actors = actors

    def cancel(self, task_id: bytes, force: bool) -> None:
        """Cancel a task we submitted. ``force`` kills the worker running a task; an actor
        call cannot be forced (killing the actor is ``kill``'s job), as in Ray."""
        spec = self.table.tasks.get(task_id)
        if spec is None or spec.done:
            return
        if force and spec.actor is not None:
            raise ValueError(
                "force=True is not supported for actor tasks; use nbcluster.kill(actor) "
                "to end the actor"
            )
        spec.cancelled = True
        lease = spec.lease
        if lease is None:  # not sent yet: it never runs
            cls = spec.cls
            if cls is not None and spec in cls.queue:
                cls.queue.remove(spec)
            aq = self.actors.actor_queues.get(spec.actor) if spec.actor is not None else None
            if aq is not None and spec in aq.queue:
                aq.queue.remove(spec)
            self.table.fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
            return
        if force:
            lease.agent.notify("kill_worker", lease.worker_id)
        else:
            assert lease.conn is not None
            lease.conn.post(P.CancelTask(task_id, False))

    def cancel_children(self, parent: bytes) -> None:
        """Cancelling a task cancels what it submitted (``recursive=True``, Ray's default)."""
        for spec in [s for s in self.table.tasks.values() if s.parent == parent and not s.done]:
            self.cancel(spec.task_id, False)

    def cancel_tagged(self, tag: Any) -> int:
        """Cancel what the cell with this output tag submitted (an interrupted cell)."""
        specs = [s for s in self.table.tasks.values() if not s.done and s.tag == tag]
        for spec in specs:
            self.cancel(spec.task_id, False)
        return len(specs)

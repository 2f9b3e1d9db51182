"""Replies from workers, and where a retry is decided.

A worker answers each task with TASK_DONE: the results, or an error. Here the owner decides
what happens next: results are resolved (``TaskTable.complete``); an application error is
retried only with ``retry_exceptions``; an argument lost with its node while the worker
fetched it sends the task back through dependency resolution, which rebuilds the argument;
everything else fails the task. A leased worker whose connection drops died: its tasks are
retried while ``max_retries`` allows. (Actor calls are retried by ``max_task_retries`` in
``actor_submitter``.)

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.submit.dependency_resolver import DependencyResolver
from nbcluster.runtime.submit.lease_requests import LEASE_RETRY_S
from nbcluster.runtime.submit.lease_scheduler import LeaseScheduler
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class TaskManager:
    """What a task's reply, or its worker's death, means for the task."""

    def __init__(
        self,
        core: CoreWorker,
        table: TaskTable,
        leases: LeaseScheduler,
        resolver: DependencyResolver,
    ) -> None:
        self.core = core
        self.table = table
        self.leases = leases
        self.resolver = resolver

    def on_task_done(self, conn: Connection, msg: P.TaskDone) -> None:
        task_id, status, results, contained, borrowed = msg
        spec = self.table.tasks.get(task_id)
        if borrowed:  # the worker keeps refs from the arguments: it borrows them now
            holds = (spec.deps, spec.held) if spec is not None else None
            self.core.ownership.task_borrowers(conn, borrowed, holds)
        if spec is None:
            self.table.discard_results(results, conn, task_id, contained)
            return
        lease = spec.lease
        if lease is not None:
            lease.inflight.pop(task_id, None)
            lease.blocked = False
            lease.last_used = time.monotonic()
            spec.lease = None
        if status == P.DONE_OK and spec.cancelled and (
            spec.actor is not None or spec.stream is not None
        ):
            # A running actor call is not interrupted but still reports as cancelled (Ray);
            # a generator stops at its next value and reports likewise.
            self.table.discard_results(results, conn, task_id, contained)
            self.table.fail(spec, exc.TaskCancelledError(f"call {spec.fn.name} was cancelled"))
        elif status == P.DONE_OK:
            self.table.complete(spec, results, contained, conn)
        elif status == P.DONE_APP_ERROR and self._should_retry_error(spec, results[0][1]):
            spec.attempt += 1
            if ev.ENABLED:
                ev.task_retried(spec, ev.describe_error(results[0][1])[1])
            self.leases.requeue(spec)
        elif status == P.DONE_CANCELLED:
            self.table.fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
        elif status == P.DONE_SYSTEM_ERROR and self._lost_argument(spec, results[0][1]):
            # An argument vanished with its node while the worker fetched it: once the death
            # is known the argument is rebuilt (or refetched) and the task runs again.
            spec.attempt += 1
            self.core.loop.call_later(LEASE_RETRY_S, self._resubmit, spec)
        else:
            self.table.fail_raw(spec, results[0][1])
        if spec.actor is None and spec.cls is not None:
            self.leases.task_finished(spec.cls, lease)

    def _lost_argument(self, spec: TaskSpec, err_bytes: bytes) -> bool:
        if spec.actor is not None or not (
            spec.max_retries == -1 or spec.attempt < spec.max_retries
        ):
            return False
        try:
            err = pickle.loads(err_bytes)
        except Exception:
            return False
        return isinstance(getattr(err, "cause", None), exc.ObjectLostError)

    def _resubmit(self, spec: TaskSpec) -> None:
        self.table.tasks.pop(spec.task_id, None)
        self.resolver.submit(spec)  # dependency resolution rebuilds arguments lost with a dead node

    def _should_retry_error(self, spec: TaskSpec, err_bytes: bytes) -> bool:
        retry = spec.retry_exceptions
        if not retry or spec.cancelled:
            return False
        if spec.max_retries != -1 and spec.attempt >= spec.max_retries:
            return False
        if retry is True:
            return True
        try:
            err = pickle.loads(err_bytes)
        except Exception:
            return False
        cause = getattr(err, "cause", None)
        return isinstance(cause, tuple(retry))

    def on_worker_lost(self, conn: Connection) -> None:
        """A leased worker's connection dropped: its process died. Retry or fail its tasks."""
        for cls in self.leases.classes.values():
            dead = [lease for lease in cls.leases if lease.conn is conn]
            for lease in dead:
                cls.leases.remove(lease)
                for spec in list(lease.inflight.values()):
                    spec.lease = None
                    if spec.cancelled:
                        self.table.fail(
                            spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled")
                        )
                    elif spec.max_retries == -1 or spec.attempt < spec.max_retries:
                        spec.attempt += 1
                        if ev.ENABLED:
                            ev.task_retried(spec, "its worker process died")
                        self.leases.requeue(spec)
                    elif lease.oom is not None:
                        self.table.fail(
                            spec, exc.OutOfMemoryError(f"task {spec.fn.name}: {lease.oom}")
                        )
                    else:
                        self.table.fail(
                            spec,
                            exc.WorkerCrashedError(
                                f"the worker running {spec.fn.name} died unexpectedly "
                                f"(pid {lease.pid}, node {lease.agent.info.get('addr')}); "
                                "retries left: 0"
                            ),
                        )
                lease.inflight.clear()
            if dead:
                self.leases.mark_dirty(cls)

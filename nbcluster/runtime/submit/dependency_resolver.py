"""Where a submitted task waits until its ObjectRef arguments are ready.

A task waits in its owner until every top-level ObjectRef argument is ready (refs nested
inside arguments travel as refs and are not waited for). A borrowed argument is fetched from
its owner meanwhile; one whose only copy died with a node is rebuilt or fetched again first.
Then a normal task joins its scheduling class's queue (``LeaseScheduler``); an actor call
joins its actor's queue at once, since calls to an actor keep their submission order.

``submit`` is called from user threads; the rest runs on the event loop thread, where
submissions are taken in as one batch per loop tick.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import TYPE_CHECKING

from nbcluster.runtime import events as ev
from nbcluster.runtime.ownership.reference_table import PENDING, Entry
from nbcluster.runtime.submit.actor_submitter import ActorSubmitter
from nbcluster.runtime.submit.lease_scheduler import LeaseScheduler
from nbcluster.runtime.submit.recovery import Recovery
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class DependencyResolver:
    """Takes submitted tasks in, and hands each on once its arguments are ready."""

    def __init__(
        self,
        core: CoreWorker,
        table: TaskTable,
        recovery: Recovery,
        leases: LeaseScheduler,
        actors: ActorSubmitter,
    ) -> None:
        self.core = core
        self.table = table
        self.recovery = recovery
        self.leases = leases
        self.actors = actors
        self._incoming: collections.deque[TaskSpec] = collections.deque()
        self._wake = False

    def submit(self, spec: TaskSpec) -> None:
        """Take a task in (any thread); it is resolved on the loop."""
        if ev.ENABLED:
            ev.task_submitted(spec)
        self._incoming.append(spec)
        if not self._wake:
            self._wake = True
            self.core.call_soon(self._drain)

    def _drain(self) -> None:
        self._wake = False
        incoming = self._incoming
        while incoming:
            spec = incoming.popleft()
            self.table.tasks[spec.task_id] = spec
            self._resolve_deps(spec)
        self.leases.dispatch_dirty()

    def _resolve_deps(self, spec: TaskSpec) -> None:
        pending = 0
        core = self.core
        for ref in spec.deps:
            e = core.entry_of(ref)
            if self.recovery.dead_agents:
                # its node died: it is pending again, rebuilt or refetched
                self.recovery.lost_dep(e)
            if e.state == PENDING and core.refs.add_waiter(e, self._dep_waiter(spec)):
                pending += 1
                if not e.owned:
                    core.fetch(e)
        spec.pending_deps = pending
        if spec.actor is not None:  # actor calls queue at once: order is submission order
            aq = self.actors.actor_queue(spec.actor)
            aq.queue.append(spec)
            self.actors.dispatch(aq)
        elif pending == 0:
            self.leases.enqueue(spec)

    def _dep_waiter(self, spec: TaskSpec) -> Callable[[Entry], None]:
        return lambda _e: self.core.call_soon(self._dep_ready, spec)

    def _dep_ready(self, spec: TaskSpec) -> None:
        spec.pending_deps -= 1
        if spec.pending_deps == 0 and not spec.done:
            if spec.actor is not None:
                self.actors.dispatch(self.actors.actor_queue(spec.actor))
                return
            self.leases.enqueue(spec)
            self.leases.dispatch_dirty()

    def forget(self) -> None:
        self._incoming.clear()

"""Dispatching normal tasks onto leased workers, and keeping those workers busy.

A task whose arguments are ready joins the queue of its *scheduling class* (its resource
shape, strategy and preferred node: the one holding its largest argument). While a class has
a backlog the scheduler asks for more leases (``lease_requests``) and pushes tasks straight to
the workers it holds: one in flight per worker, several once an agent says the cluster is full
for that shape, so in steady state a task costs one message there and one back, batched with
its neighbours. An idle lease takes back tasks stacked behind a busy one (stealing); idle
leases go back to the agent after a while.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.ownership.reference_table import KIND_STORE
from nbcluster.runtime.scheduling.placement import SPREAD
from nbcluster.runtime.submit.lease_requests import Lease, LeaseRequester, SchedClass
from nbcluster.runtime.submit.push import push
from nbcluster.runtime.submit.recovery import Recovery
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

MAX_LEASE_REQUESTS = 4
#: How long to give idle leases back at once after the node asked for them.
EAGER_RETURN_S = 1.0
#: Arguments at least this large pull their task to the node that holds them.
LOCALITY_MIN_BYTES = 1 << 20


class LeaseScheduler:
    """The scheduling classes of this owner: their queues, and dispatch onto their leases."""

    def __init__(self, core: CoreWorker, table: TaskTable, recovery: Recovery) -> None:
        self.core = core
        self.table = table
        self.recovery = recovery
        self.classes: dict[tuple[Any, ...], SchedClass] = {}
        self._dirty: set[SchedClass] = set()
        self._dispatch_scheduled = False
        self._by_token: dict[int, SchedClass] = {}
        self._eager_until = 0.0
        self.requester = LeaseRequester(core, table, self.mark_dirty)

    def start(self) -> None:
        self.core.loop.call_later(0.1, self._reap_idle)

    # -- queueing ready tasks -----------------------------------------------------------------
    def enqueue(self, spec: TaskSpec) -> None:
        """Queue a task whose arguments are ready; ``dispatch_dirty`` sends it on."""
        if spec.cancelled:
            self.table.fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
            return
        if spec.deps and self.table.failed_dep(spec):
            return
        cls = self._class_of(spec, self._preferred_node(spec))
        cls.queue.append(spec)
        self._dirty.add(cls)

    def requeue(self, spec: TaskSpec) -> None:
        """A task goes back to the front of its class's queue (a retry, or taken back)."""
        cls = spec.cls
        if cls is None or cls.prefer in self.recovery.dead_agents:
            cls = self._class_of(spec, self._preferred_node(spec))
        cls.queue.appendleft(spec)
        self.mark_dirty(cls)

    def _preferred_node(self, spec: TaskSpec) -> str | None:
        """Data locality: the node holding the task's largest argument, if not ours."""
        best, size = None, LOCALITY_MIN_BYTES
        for ref in spec.deps:
            e = self.core.refs.get(ref.binary())
            if e is not None and e.kind == KIND_STORE and e.size >= size:
                best, size = e.data, e.size
        if best == self.core.agent_address or spec.strategy is not None:
            return None
        if best in self.recovery.dead_agents:
            return None  # its node is gone: the argument is rebuilt or fetched elsewhere
        return best

    def _class_of(self, spec: TaskSpec, prefer: str | None) -> SchedClass:
        key = (spec.sched_key, spec.strategy, prefer)
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = SchedClass(key, spec.resources, spec.strategy, prefer)
            self._by_token[cls.token] = cls
        spec.cls = cls
        return cls

    # -- dispatch -----------------------------------------------------------------------------
    def mark_dirty(self, cls: SchedClass) -> None:
        """Dispatch ``cls`` again later in this loop tick (once, however often marked)."""
        self._dirty.add(cls)
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self.core.loop.call_soon(self.dispatch_dirty)

    def dispatch_dirty(self) -> None:
        self._dispatch_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for cls in dirty:
            self._dispatch(cls)

    def _dispatch(self, cls: SchedClass) -> None:
        """Idle leases first; more leases while the cluster grants them; and only once an
        agent says a request must wait for resources (``lease_queued``), several tasks in
        flight per worker — so two long tasks on two CPUs run side by side, while a burst of
        short ones is not throttled by a round trip per task."""
        queue = cls.queue
        self._push_to(cls, 1)
        # Tasks stacked behind others (pushed while the cluster was full) are backlog too: a
        # worker that frees up takes them back (``_steal``) rather than let them wait for a
        # long task ahead of them.
        stacked = sum(len(lease.inflight) - 1 for lease in cls.leases if len(lease.inflight) > 1)
        want = min(len(queue) + stacked, MAX_LEASE_REQUESTS)
        while cls.requests < want:
            cls.requests += 1
            self.requester.request(cls)
        if queue and cls.saturated and cls.strategy != SPREAD:  # SPREAD never stacks
            self._push_to(cls, CONFIG.max_tasks_in_flight_per_worker)
        if stacked and not queue:
            self._steal(cls)
        if not queue and not stacked and cls.requests:
            # The backlog is gone: so is what we knew about the cluster being full. Withdraw
            # the requests still waiting, so the next burst asks (and learns) afresh.
            cls.saturated = False
            for agent in cls.asked:
                if not agent.closed:
                    agent.notify("cancel_lease_requests", cls.token)
            cls.asked.clear()

    def _steal(self, cls: SchedClass) -> None:
        """A lease is idle while another has tasks waiting behind a running one: ask that
        worker to give back the ones it has not started (they come back as TASK_REQUEUE)."""
        if not any(not lease.inflight and not lease.blocked for lease in cls.leases):
            return
        victim = max(cls.leases, key=lambda lease: len(lease.inflight))
        if len(victim.inflight) > 1 and not victim.stealing:
            victim.stealing = True
            victim.conn.post(P.StealTasks())

    def on_requeue(self, conn: Connection, msg: P.TaskRequeue) -> None:
        """The worker gives back the tasks it had not started: it blocked in ``get``, or we
        asked (``_steal``)."""
        blocked = msg.blocked
        for cls in self.classes.values():
            for lease in cls.leases:
                if lease.conn is conn:
                    lease.stealing = False
                    if blocked:
                        lease.blocked = True
        for tid in reversed(msg.task_ids):
            spec = self.table.tasks.get(tid)
            if spec is None or spec.lease is None:
                continue
            spec.lease.inflight.pop(tid, None)
            spec.lease = None
            self.requeue(spec)

    def on_lease_queued(self, token: int) -> None:
        """An agent queued one of our requests until resources free up: the cluster is
        full for this shape, so stacking tasks on the workers we hold is now the fast way."""
        cls = self._by_token.get(token)
        if cls is not None:
            cls.saturated = True
            self.mark_dirty(cls)

    def _push_to(self, cls: SchedClass, depth: int) -> None:
        queue = cls.queue
        while queue:
            best = None
            for lease in cls.leases:
                n = len(lease.inflight)
                if n < depth and not lease.blocked and (best is None or n < len(best.inflight)):
                    best = lease
            if best is None:
                return
            push(self.core.refs, queue.popleft(), best)

    def task_finished(self, cls: SchedClass, lease: Lease | None) -> None:
        """A worker answered for a task of ``cls``: its lease may take more, or go back."""
        if (
            cls.strategy == SPREAD
            and lease is not None
            and lease in cls.leases
            and not lease.inflight
        ):
            # A SPREAD lease serves one task: the next task's lease is placed afresh.
            cls.leases.remove(lease)
            lease.agent.notify("return_lease", lease.worker_id, False)
        self.mark_dirty(cls)
        if lease is not None and not lease.inflight and time.monotonic() < self._eager_until:
            self.core.loop.call_soon(self._reap_idle, False)

    # -- workers and nodes lost ---------------------------------------------------------------
    def on_worker_oom(self, worker_id: bytes, why: str) -> None:
        """The memory monitor killed this worker: its tasks fail saying so, once it is gone."""
        for cls in self.classes.values():
            for lease in cls.leases:
                if lease.worker_id == worker_id:
                    lease.oom = why

    def on_node_dead(self, agent_address: str) -> None:
        """Tasks drawn to that node go anywhere; its leases and lease requests end now."""
        for cls in list(self.classes.values()):
            if cls.prefer == agent_address:  # tasks drawn to data on that node go anywhere
                while cls.queue:
                    spec = cls.queue.popleft()
                    self._class_of(spec, None).queue.append(spec)
                    self.mark_dirty(spec.cls)
        dead_agent = self.core.conns.get(agent_address)
        if dead_agent is not None and dead_agent.transport is not None:
            # Requests waiting there (it may be cut off, not closed) fail now and are asked
            # again elsewhere.
            dead_agent.transport.abort()
        for cls in self.classes.values():
            for lease in list(cls.leases):
                dead = lease.agent.info.get("addr") == agent_address or lease.agent.closed
                if dead and lease.conn.transport is not None:
                    lease.conn.transport.abort()  # -> on_conn_closed: retry its tasks

    # -- idle leases --------------------------------------------------------------------------
    def on_leases_wanted(self) -> None:
        """Others wait for our node's resources: for a while, give leases back as soon as
        they fall idle rather than after the idle timeout."""
        self._eager_until = time.monotonic() + EAGER_RETURN_S
        self._reap_idle(reschedule=False)

    def _reap_idle(self, reschedule: bool = True) -> None:
        if self.core.closed:
            return
        now = time.monotonic()
        timeout = 0.0 if now < self._eager_until else CONFIG.idle_lease_timeout_s
        for cls in list(self.classes.values()):
            if cls.queue:
                continue
            if cls.prefer in self.recovery.dead_agents and not (cls.leases or cls.requests):
                del self.classes[cls.key]  # drawn to a dead node: nothing will use it again
                self._by_token.pop(cls.token, None)
                continue
            for lease in list(cls.leases):
                if not lease.inflight and now - lease.last_used >= timeout:
                    cls.leases.remove(lease)
                    lease.agent.notify("return_lease", lease.worker_id, False)
        if reschedule:
            self.core.loop.call_later(0.1, self._reap_idle)

    def forget(self) -> None:
        """This process left the cluster: its classes and leases mean nothing any more."""
        self.classes.clear()
        self._by_token.clear()

    def return_all_leases(self) -> None:
        for cls in self.classes.values():
            for lease in cls.leases:
                lease.agent.notify("return_lease", lease.worker_id, False)
            cls.leases.clear()

"""The owner's side of running tasks: dependencies, worker leases, direct push, retries.

A task waits in its owner until every top-level ObjectRef argument is ready. Then it joins the
queue of its *scheduling class* (its resource shape). The owner leases workers of that shape
from its node agent and pushes tasks straight to them, several in flight per worker, so in
steady state a task costs one message there and one back, batched with its neighbours. Idle
leases go back to the agent after a short while.

Everything here runs on the event loop thread, except ``submit`` which user threads call.
"""

from __future__ import annotations

import collections
import itertools
import logging
import pickle
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import output
from nbcluster.runtime.ids import new_task_id, object_id
from nbcluster.runtime.ownership.lineage import Lineage
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_ERROR,
    KIND_STORE,
    PENDING,
    READY,
    Entry,
)
from nbcluster.runtime.scheduling.placement import SPREAD
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.submit.task_spec import FunctionDescriptor, TaskSpec, encode_args
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

log = logging.getLogger("nbcluster.submitter")

MAX_LEASE_REQUESTS = 4
_tokens = itertools.count(1)
#: Pause before asking again for a lease whose node went away.
LEASE_RETRY_S = 0.2
#: How long to give idle leases back at once after the node asked for them.
EAGER_RETURN_S = 1.0
#: Arguments at least this large pull their task to the node that holds them.
LOCALITY_MIN_BYTES = 1 << 20
#: Dead nodes an owner remembers (their objects are rebuilt when next needed).
MAX_DEAD_AGENTS = 1000


class Lease:
    __slots__ = (
        "agent", "blocked", "conn", "gpus", "inflight", "last_used", "oom", "stealing",
        "worker_id",
    )  # fmt: skip

    def __init__(
        self, conn: Connection, worker_id: bytes, gpus: list[int], agent: Connection
    ) -> None:
        self.agent = agent  # the node agent that granted it: the lease goes back there
        self.oom: str | None = None  # why the memory monitor killed its worker
        self.conn = conn
        self.worker_id = worker_id
        self.gpus = gpus
        self.inflight: dict[bytes, TaskSpec] = {}
        self.last_used = time.monotonic()
        self.blocked = False
        self.stealing = False  # asked for its tasks not started; not answered yet


class SchedClass:
    """Tasks of one shape: same resources, scheduling strategy and preferred node."""

    __slots__ = (
        "asked", "key", "leases", "prefer", "queue", "requests", "resources", "saturated",
        "strategy", "token",
    )  # fmt: skip

    def __init__(
        self, key: tuple[Any, ...], resources: dict[str, float], strategy: Any, prefer: str | None
    ) -> None:
        self.key = key
        self.resources = resources
        self.strategy = strategy
        self.prefer = prefer  # the agent of the node holding the task's largest argument
        self.saturated = False  # an agent said our requests wait for resources
        self.token = next(_tokens)  # names the class in lease_queued notifications
        self.asked: set[Connection] = set()  # agents holding our outstanding requests
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.leases: list[Lease] = []
        self.requests = 0


class ActorQueue:
    """The calls one caller has for one actor, sent in submission order."""

    __slots__ = (
        "actor_id", "addr", "blocked", "conn", "dead", "gpus", "inflight", "last_used", "node",
        "queue", "resolving",
    )  # fmt: skip

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.inflight: dict[bytes, TaskSpec] = {}
        self.conn: Connection | None = None
        self.addr = ""
        self.resolving = False
        self.dead: bytes | None = None
        self.blocked = False
        self.last_used = 0.0
        self.gpus: list[int] = []
        self.node = ""  # the agent address of the node it runs on


class Submitter:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.tasks: dict[bytes, TaskSpec] = {}
        self.classes: dict[tuple[Any, ...], SchedClass] = {}
        self._incoming: collections.deque[TaskSpec] = collections.deque()
        self._wake = False
        self._dirty: set[SchedClass] = set()
        self._dispatch_scheduled = False
        self._warned: set[tuple[Any, ...]] = set()
        self.actor_queues: dict[bytes, ActorQueue] = {}
        self.lineage = Lineage()
        self._by_token: dict[int, SchedClass] = {}
        self._eager_until = 0.0
        #: agents of nodes that died (the most recent ``MAX_DEAD_AGENTS``), in death order
        self.dead_agents: dict[str, None] = {}

    def start(self) -> None:
        self.core.loop.call_later(0.1, self._reap_idle)

    # -- submission (user threads) ----------------------------------------------------------
    def submit_task(
        self,
        fn: FunctionDescriptor,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int | str,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: Any,
        strategy: Any = None,
        max_calls: int = 0,
    ) -> list[ObjectRef]:
        core = self.core
        dynamic = num_returns == "dynamic"  # one return: the generator of the values' refs
        n = 1 if dynamic else int(num_returns)
        blob, deps, held = encode_args(args, kwargs, fn.name, core.put_serialized)
        task_id = new_task_id()
        return_ids = [object_id(task_id, i + 1) for i in range(n)]
        spec = TaskSpec(
            task_id, fn, blob, deps, held, n, resources, max_retries,
            retry_exceptions, return_ids,
        )  # fmt: skip
        spec.tag = output.current_tag()
        spec.strategy = strategy
        spec.max_calls = max_calls
        spec.dynamic = dynamic
        parent = core.current_task
        spec.parent = parent.task_id if parent is not None else None
        for oid in return_ids:
            core.refs.create_owned(oid, spec)
        refs = [ObjectRef(oid, core.address) for oid in return_ids]
        self.submit(spec)
        return refs

    def submit(self, spec: TaskSpec) -> None:
        if ev.ENABLED:
            ev.task_submitted(spec)
        self._incoming.append(spec)
        if not self._wake:
            self._wake = True
            self.core.call_soon(self._drain)

    # -- dependency resolution (loop) -------------------------------------------------------
    def _drain(self) -> None:
        self._wake = False
        incoming = self._incoming
        while incoming:
            spec = incoming.popleft()
            self.tasks[spec.task_id] = spec
            self._resolve_deps(spec)
        self._dispatch_dirty()

    def _resolve_deps(self, spec: TaskSpec) -> None:
        pending = 0
        core = self.core
        for ref in spec.deps:
            e = core._entry(ref)
            if self.dead_agents:
                self.lost_dep(e)  # its node died: it is pending again, rebuilt or refetched
            if e.state == PENDING and core.refs.add_waiter(e, self._dep_waiter(spec)):
                pending += 1
                if not e.owned:
                    core._fetch(e)
        spec.pending_deps = pending
        if spec.actor is not None:  # actor calls queue at once: order is submission order
            aq = self._actor_queue(spec.actor)
            aq.queue.append(spec)
            self._dispatch_actor(aq)
        elif pending == 0:
            self._enqueue(spec)

    def _dep_waiter(self, spec: TaskSpec) -> Callable[[Entry], None]:
        return lambda _e: self.core.call_soon(self._dep_ready, spec)

    def _dep_ready(self, spec: TaskSpec) -> None:
        spec.pending_deps -= 1
        if spec.pending_deps == 0 and not spec.done:
            if spec.actor is not None:
                self._dispatch_actor(self._actor_queue(spec.actor))
                return
            self._enqueue(spec)
            self._dispatch_dirty()

    def _enqueue(self, spec: TaskSpec) -> None:
        if spec.cancelled:
            self._fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
            return
        for ref in spec.deps:
            e = self.core.refs.get(ref._id)
            if e is not None and e.state == FAILED:  # an argument failed: so does this task
                self._fail_raw(spec, e.data)
                return
        cls = self._class_of(spec, self._preferred_node(spec))
        cls.queue.append(spec)
        self._dirty.add(cls)

    def _preferred_node(self, spec: TaskSpec) -> str | None:
        """Data locality: the node holding the task's largest argument, if not ours."""
        best, size = None, LOCALITY_MIN_BYTES
        for ref in spec.deps:
            e = self.core.refs.get(ref._id)
            if e is not None and e.kind == KIND_STORE and e.size >= size:
                best, size = e.data, e.size
        if best == self.core.agent_address or spec.strategy is not None:
            return None
        if best in self.dead_agents:
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

    # -- dispatch (loop) --------------------------------------------------------------------
    def _mark_dirty(self, cls: SchedClass) -> None:
        self._dirty.add(cls)
        if not self._dispatch_scheduled:
            self._dispatch_scheduled = True
            self.core.loop.call_soon(self._dispatch_dirty)

    def _dispatch_dirty(self) -> None:
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
            self._request_lease(cls)
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
            victim.conn.send((P.STEAL_TASKS,))

    def on_lease_queued(self, token: int) -> None:
        """An agent queued one of our requests until resources free up: the cluster is
        full for this shape, so stacking tasks on the workers we hold is now the fast way."""
        cls = self._by_token.get(token)
        if cls is not None:
            cls.saturated = True
            self._mark_dirty(cls)

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
            self._push(queue.popleft(), best)

    def _request_lease(self, cls: SchedClass) -> None:
        task = self.core.loop.create_task(self._lease(cls))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _lease(self, cls: SchedClass) -> None:
        """Get a worker for ``cls``: ask the preferred node (or ours); follow one spillback."""
        core = self.core
        try:
            agent = core.agent if cls.prefer is None else await core.connect(cls.prefer)
            self.core.loop.call_later(
                CONFIG.infeasible_warning_s, self._warn_if_infeasible, cls, agent
            )
            args = (cls.resources, cls.strategy, False, cls.token)
            cls.asked.add(agent)
            reply = await agent.call("request_lease", *args)
            for _ in range(3):  # a spilled request may move again if its node leaves
                if reply[0] != "spill":
                    break
                agent = await core.connect(reply[1])
                cls.asked.add(agent)
                reply = await agent.call(
                    "request_lease", cls.resources, cls.strategy, True, cls.token
                )
            if reply[0] == "cancelled":  # withdrawn: the backlog it was for is gone...
                cls.requests -= 1
                # ...but a new backlog may have come meanwhile, and found this request still
                # counted: look again, or its tasks wait for a lease nobody asks for.
                self._mark_dirty(cls)
                return
            _, worker_id, addr, gpus = reply
            conn = await core.connect(addr)
        except Exception as e:
            cls.requests -= 1
            if "reply" in locals() and reply[0] == "grant":
                log.warning("cannot reach leased worker %s: %s", reply[2], e)
                agent.notify("return_lease", reply[1], True)
                self._mark_dirty(cls)
            elif isinstance(e, ValueError):  # can never be placed (hard affinity to a dead node)
                self._fail_class(cls, e)
            elif not core.closed:  # its node went away: ask again (our node, by default)
                log.info("lease request failed (%s); asking again", e)
                core.loop.call_later(LEASE_RETRY_S, self._mark_dirty, cls)
            return
        # Counted as requested until connected, so a grant on its way is never mistaken
        # for a full cluster.
        cls.requests -= 1
        if not cls.requests:
            cls.saturated = False
        cls.leases.append(Lease(conn, worker_id, gpus, agent))
        self._mark_dirty(cls)

    def _fail_class(self, cls: SchedClass, err: BaseException) -> None:
        """A request that can never be placed (e.g. a hard affinity to a dead node)."""
        if cls.requests or cls.leases:
            return
        while cls.queue:
            self._fail(cls.queue.popleft(), exc.NbclusterError(f"cannot schedule the task: {err}"))

    def _warn_if_infeasible(self, cls: SchedClass, agent: Connection) -> None:
        if cls.key in self._warned or not cls.queue or cls.leases or agent.closed:
            return

        def check(f: Any) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            nodes: list[dict[str, float]] = f.result()
            if any(fits(n, cls.resources) for n in nodes):
                return
            self._warned.add(cls.key)
            total: dict[str, float] = {}
            for n in nodes:
                for k, v in n.items():
                    total[k] = total.get(k, 0.0) + v
            offers = "; ".join(
                ", ".join(f"{k}: {n.get(k, 0.0):g}" for k in sorted(cls.resources)) for n in nodes
            )
            warnings.warn(
                f"A task requires {cls.resources} but no node of the cluster has that much "
                f"(its {len(nodes)} node(s) offer {offers}; the cluster has {total} in all, "
                "and a task runs on one node); it stays pending until a node with enough "
                "resources joins.",
                stacklevel=1,
            )

        agent.call("node_totals").add_done_callback(check)

    def _push(self, spec: TaskSpec, lease: Lease | ActorQueue) -> None:
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
            refs = self.core.refs
            for ref in spec.deps:
                e = refs.get(ref._id)
                assert e is not None
                deps.append([e.oid, e.kind, e.data, e.size])
        extra = spec.extra
        if extra is None and (lease.gpus or spec.resources or spec.max_calls or spec.dynamic):
            extra = {"res": spec.resources, "gpus": lease.gpus}
            if spec.max_calls:
                extra["max_calls"] = spec.max_calls
            if spec.dynamic:
                extra["dynamic"] = True
        conn.send(
            (P.PUSH_TASK, spec.task_id, fn.fn_id, fn_bytes, fn.name, spec.args_blob, deps,
             spec.num_returns, extra)
        )  # fmt: skip

    # -- replies (loop) ---------------------------------------------------------------------
    def on_task_done(self, conn: Connection, msg: list[Any]) -> None:
        _, task_id, status, results, contained, borrowed = msg
        spec = self.tasks.get(task_id)
        if borrowed:  # the worker keeps refs from the arguments: it borrows them now
            holds = (spec.deps, spec.held) if spec is not None else None
            self.core.ownership.task_borrowers(conn, borrowed, holds)
        if spec is None:
            self._discard_results(results, conn, task_id, contained)
            return
        lease = spec.lease
        if lease is not None:
            lease.inflight.pop(task_id, None)
            lease.blocked = False
            lease.last_used = time.monotonic()
            spec.lease = None
        if status == P.DONE_OK and spec.cancelled and spec.actor is not None:
            # A running actor call is not interrupted but still reports as cancelled (Ray).
            self._discard_results(results, conn, task_id, contained)
            self._fail(spec, exc.TaskCancelledError(f"call {spec.fn.name} was cancelled"))
        elif status == P.DONE_OK:
            self._complete(spec, results, contained, conn)
        elif status == P.DONE_APP_ERROR and self._should_retry_error(spec, results[0][1]):
            spec.attempt += 1
            if ev.ENABLED:
                ev.task_retried(spec, ev.describe_error(results[0][1])[1])
            self._requeue(spec)
        elif status == P.DONE_CANCELLED:
            self._fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
        elif status == P.DONE_SYSTEM_ERROR and self._lost_argument(spec, results[0][1]):
            # An argument vanished with its node while the worker fetched it: once the death
            # is known the argument is rebuilt (or refetched) and the task runs again.
            spec.attempt += 1
            self.core.loop.call_later(LEASE_RETRY_S, self._resubmit, spec)
        else:
            self._fail_raw(spec, results[0][1])
        if spec.actor is None and spec.cls is not None:
            if spec.cls.strategy == SPREAD and lease in spec.cls.leases and not lease.inflight:
                # A SPREAD lease serves one task: the next task's lease is placed afresh.
                spec.cls.leases.remove(lease)
                lease.agent.notify("return_lease", lease.worker_id, False)
            self._mark_dirty(spec.cls)
            if lease is not None and not lease.inflight and time.monotonic() < self._eager_until:
                self.core.loop.call_soon(self._reap_idle, False)

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
        self.tasks.pop(spec.task_id, None)
        self.submit(spec)  # dependency resolution rebuilds arguments lost with a dead node

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

    def _complete(
        self, spec: TaskSpec, results: list[Any], contained: list[Any], conn: Connection
    ) -> None:
        spec.done = True
        self.tasks.pop(spec.task_id, None)
        held = None
        refs = self.core.refs
        if contained:  # we borrow them now: the worker holds them until the owners know
            outer = refs.start_collecting()
            held = [ObjectRef(oid, owner) for oid, owner in contained]
            self.core.ownership.result_refs(conn, spec.task_id, refs.stop_collecting(outer))
        in_store = False
        for oid, result in zip(spec.return_ids, results, strict=True):
            kind, data, size = result[0], result[1], result[2]
            e = refs.get(oid)
            if e is None:  # nobody holds the result any more
                self._discard_results([[kind, data, size, oid]], conn)
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

    def _discard_results(
        self, results: list[Any], conn: Connection, task_id: bytes = b"", contained: Any = None
    ) -> None:
        """Nobody wants these results: free their stored copies, and let the worker drop
        the refs it kept for us inside them."""
        for r in results:
            if r[0] == KIND_STORE and len(r) > 3:
                self.core.send_to(r[1], (P.REQUEST, 0, "store_delete", [r[3]]))
        if contained:
            conn.send((P.HANDOFF_DONE, task_id))

    def _fail(self, spec: TaskSpec, err: BaseException) -> None:
        from nbcluster.runtime.core.core_worker import error_bytes

        self._fail_raw(spec, error_bytes(err))

    def _fail_raw(self, spec: TaskSpec, data: bytes) -> None:
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

    def _requeue(self, spec: TaskSpec) -> None:
        cls = spec.cls
        if cls is None or cls.prefer in self.dead_agents:
            cls = self._class_of(spec, self._preferred_node(spec))
        cls.queue.appendleft(spec)
        self._mark_dirty(cls)

    def on_requeue(self, conn: Connection, msg: list[Any]) -> None:
        """The worker gives back the tasks it had not started: it blocked in ``get``, or we
        asked (``_steal``)."""
        blocked = msg[2]
        for cls in self.classes.values():
            for lease in cls.leases:
                if lease.conn is conn:
                    lease.stealing = False
                    if blocked:
                        lease.blocked = True
        for tid in reversed(msg[1]):
            spec = self.tasks.get(tid)
            if spec is None or spec.lease is None:
                continue
            spec.lease.inflight.pop(tid, None)
            spec.lease = None
            self._requeue(spec)

    def on_conn_closed(self, conn: Connection) -> None:
        """A leased worker's connection dropped: its process died. Retry or fail its tasks."""
        for aq in self.actor_queues.values():
            if aq.conn is conn:
                self._actor_conn_lost(aq)
        for cls in self.classes.values():
            dead = [lease for lease in cls.leases if lease.conn is conn]
            for lease in dead:
                cls.leases.remove(lease)
                for spec in list(lease.inflight.values()):
                    spec.lease = None
                    if spec.cancelled:
                        self._fail(
                            spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled")
                        )
                    elif spec.max_retries == -1 or spec.attempt < spec.max_retries:
                        spec.attempt += 1
                        if ev.ENABLED:
                            ev.task_retried(spec, "its worker process died")
                        self._requeue(spec)
                    elif lease.oom is not None:
                        self._fail(spec, exc.OutOfMemoryError(f"task {spec.fn.name}: {lease.oom}"))
                    else:
                        self._fail(
                            spec,
                            exc.WorkerCrashedError(
                                f"the worker running {spec.fn.name} died unexpectedly "
                                f"(pid {conn.info.get('pid')}); retries left: 0"
                            ),
                        )
                lease.inflight.clear()
            if dead:
                self._mark_dirty(cls)

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

    def on_worker_oom(self, worker_id: bytes, why: str) -> None:
        for cls in self.classes.values():
            for lease in cls.leases:
                if lease.worker_id == worker_id:
                    lease.oom = why

    # -- lost objects (loop) -----------------------------------------------------------------
    def on_node_dead(self, agent_address: str) -> None:
        """A node died: retry what ran there and rebuild what only it held."""
        self.dead_agents[agent_address] = None
        while len(self.dead_agents) > MAX_DEAD_AGENTS:
            del self.dead_agents[next(iter(self.dead_agents))]
        for cls in list(self.classes.values()):
            if cls.prefer == agent_address:  # tasks drawn to data on that node go anywhere
                while cls.queue:
                    spec = cls.queue.popleft()
                    self._class_of(spec, None).queue.append(spec)
                    self._mark_dirty(spec.cls)
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
        for aq in self.actor_queues.values():
            if aq.conn is not None and aq.node == agent_address and aq.conn.transport:
                aq.conn.transport.abort()
        with self.core.refs.lock:
            lost = [
                e for e in self.core.refs.entries.values()
                if e.owned and e.state == READY and e.kind == KIND_STORE and e.data == agent_address
            ]  # fmt: skip
        for e in lost:
            self.reconstruct(e)

    def reconstruct(self, e: Entry) -> None:
        """Rebuild an owned object whose every copy is gone, by running its task again."""
        from nbcluster.runtime.core.core_worker import error_bytes

        spec = e.spec
        if spec is None or spec.lineage_evicted:
            why = (
                "its lineage was evicted (raise NBCLUSTER_MAX_LINEAGE_TASKS or "
                "NBCLUSTER_MAX_LINEAGE_BYTES to keep more)"
                if spec is not None
                else "it was created by put() and its node died, so it cannot be rebuilt"
            )
            err_cls = (
                exc.ObjectReconstructionFailedError if spec is not None else exc.ObjectLostError
            )
            self.core.refs.reset_pending(e)  # a settled value only changes by going pending
            self.core.refs.resolve(e, FAILED, KIND_ERROR, error_bytes(err_cls(e.oid.hex(), why)))
            return
        if not spec.done:
            return  # already being rebuilt
        log.info("rebuilding %s from lineage (task %s)", e.oid.hex()[:12], spec.fn.name)
        refs = self.core.refs
        for oid in spec.return_ids:
            other = refs.get(oid)
            if other is not None and other.state != PENDING:
                refs.reset_pending(other)
        spec.done = False
        spec.attempt = 0
        spec.cancelled = False
        self.lineage.drop_keep(spec)
        self.submit(spec)

    def lost_dep(self, e: Entry) -> bool:
        """True if ``e`` is an argument whose only copy was on a dead node (rebuilding it)."""
        if e.kind != KIND_STORE or e.state != READY or e.data not in self.dead_agents:
            return False
        if e.owned:
            self.reconstruct(e)
        else:
            self.core.refs.reset_pending(e)
            self.core._fetch(e)
        return True

    # -- actors (loop) ------------------------------------------------------------------------
    def _actor_queue(self, actor_id: bytes) -> ActorQueue:
        aq = self.actor_queues.get(actor_id)
        if aq is None:
            aq = self.actor_queues[actor_id] = ActorQueue(actor_id)
        return aq

    def actor_dead(self, actor_id: bytes, death: bytes) -> None:
        """The actor is dead for good (we killed it): its queued and later calls fail."""
        aq = self._actor_queue(actor_id)
        aq.dead = death
        self._dispatch_actor(aq)

    def _dispatch_actor(self, aq: ActorQueue) -> None:
        if aq.dead is not None:
            while aq.queue:
                self._fail_raw(aq.queue.popleft(), aq.dead)
            if not aq.inflight and self.actor_queues.get(aq.actor_id) is aq:
                # Forget it: a later call asks the head again, and fails the same way.
                del self.actor_queues[aq.actor_id]
            return
        if aq.conn is None or aq.conn.closed:
            self._resolve_actor(aq)
            return
        queue = aq.queue
        while queue and queue[0].pending_deps == 0:
            spec = queue.popleft()
            if spec.cancelled:
                self._fail(spec, exc.TaskCancelledError(f"call {spec.fn.name} was cancelled"))
                continue
            if self._failed_dep(spec):
                continue
            self._push(spec, aq)

    def _failed_dep(self, spec: TaskSpec) -> bool:
        for ref in spec.deps:
            e = self.core.refs.get(ref._id)
            if e is not None and e.state == FAILED:
                self._fail_raw(spec, e.data)
                return True
        return False

    def _resolve_actor(self, aq: ActorQueue) -> None:
        """Ask the head where the actor lives (after creation, or again after a failure)."""
        if aq.resolving:
            return
        aq.resolving = True
        fut = self.core.head.call("wait_actor", aq.actor_id, aq.addr)

        def answered(f: Any) -> None:
            if f.cancelled() or f.exception() is not None:
                aq.resolving = False
                if not self.core.closed:
                    from nbcluster.runtime.core.core_worker import error_bytes

                    aq.dead = error_bytes(
                        exc.ActorDiedError(f"cannot locate the actor: {f.exception()}")
                    )
                    self._dispatch_actor(aq)
                return
            state, addr, death, node = f.result()
            aq.node = node
            if state != "ALIVE":
                aq.resolving = False
                aq.dead = death
                self._dispatch_actor(aq)
                return
            self.core.loop.create_task(self._connect_actor(aq, addr))

        fut.add_done_callback(answered)

    async def _connect_actor(self, aq: ActorQueue, addr: str) -> None:
        try:
            conn = await self.core.connect(addr)
        except Exception:
            aq.resolving = False
            aq.addr = addr
            self._resolve_actor(aq)  # it died meanwhile: wait for its restart or death
            return
        aq.resolving = False
        aq.conn = conn
        aq.addr = addr
        self._dispatch_actor(aq)

    def _actor_conn_lost(self, aq: ActorQueue) -> None:
        aq.conn = None
        retry = []
        for spec in list(aq.inflight.values()):
            spec.lease = None
            if not spec.cancelled and (spec.max_retries == -1 or spec.attempt < spec.max_retries):
                spec.attempt += 1
                if ev.ENABLED:
                    ev.task_retried(spec, "the actor's process died")
                retry.append(spec)
            else:
                self._fail(
                    spec,
                    exc.ActorDiedError(
                        f"The actor died while running {spec.fn.name} (its process exited); "
                        "the call was not retried (max_task_retries)"
                    ),
                )
        aq.inflight.clear()
        aq.queue.extendleft(reversed(retry))
        self._resolve_actor(aq)

    # -- cancellation -----------------------------------------------------------------------
    def cancel(self, task_id: bytes, force: bool) -> None:
        """Cancel a task we submitted. ``force`` kills the worker running a task; an actor
        call cannot be forced (killing the actor is ``kill``'s job), as in Ray."""
        spec = self.tasks.get(task_id)
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
            aq = self.actor_queues.get(spec.actor) if spec.actor is not None else None
            if aq is not None and spec in aq.queue:
                aq.queue.remove(spec)
            self._fail(spec, exc.TaskCancelledError(f"task {spec.fn.name} was cancelled"))
            return
        if force:
            lease.agent.notify("kill_worker", lease.worker_id)
        else:
            assert lease.conn is not None
            lease.conn.send((P.CANCEL_TASK, task_id, False))

    def cancel_children(self, parent: bytes) -> None:
        """Cancelling a task cancels what it submitted (``recursive=True``, Ray's default)."""
        for spec in [s for s in self.tasks.values() if s.parent == parent and not s.done]:
            self.cancel(spec.task_id, False)

    def cancel_tagged(self, tag: Any) -> int:
        specs = [s for s in self.tasks.values() if not s.done and s.tag == tag]
        for spec in specs:
            self.cancel(spec.task_id, False)
        return len(specs)

    def on_output(self, conn: Connection, msg: list[Any]) -> None:
        _, task_id, stream, text, where = msg
        spec = self.tasks.get(task_id)
        output.deliver(spec.tag if spec is not None else None, stream, text, where)

    # -- idle leases ------------------------------------------------------------------------
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
            if cls.prefer in self.dead_agents and not (cls.leases or cls.requests):
                del self.classes[cls.key]  # drawn to a dead node: nothing will use it again
                self._by_token.pop(cls.token, None)
                continue
            for lease in list(cls.leases):
                if not lease.inflight and now - lease.last_used >= timeout:
                    cls.leases.remove(lease)
                    lease.agent.notify("return_lease", lease.worker_id, False)
        if reschedule:
            self.core.loop.call_later(0.1, self._reap_idle)

    def forget_everything(self) -> None:
        """This process left the cluster: nothing here can run or be rebuilt any more."""
        self.tasks.clear()
        self.classes.clear()
        self._by_token.clear()
        self._incoming.clear()
        self.actor_queues.clear()
        self.lineage = Lineage()

    def return_all_leases(self) -> None:
        for cls in self.classes.values():
            for lease in cls.leases:
                lease.agent.notify("return_lease", lease.worker_id, False)
            cls.leases.clear()


__all__ = ["FAILED", "KIND_ERROR", "READY", "Submitter"]

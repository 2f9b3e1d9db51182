"""Asking node agents for workers: a scheduling class, its leases and its lease requests.

A lease is a worker the owner holds for tasks of one scheduling class (``SchedClass``: same
resources, strategy and preferred node). The owner asks the node holding the class's largest
argument, or its own node; an agent grants a local worker or answers with a node that fits
(spillback), which the request follows. A request counts as outstanding until its worker is
connected, so the scheduler never mistakes a grant on its way for a full cluster.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import output
from nbcluster.runtime.scheduling.bundles import group_of
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

log = logging.getLogger("nbcluster.submitter")

_tokens = itertools.count(1)
#: Pause before asking again for a lease whose node went away.
LEASE_RETRY_S = 0.2


def warn_workers_capped(core: CoreWorker, agent: Connection, cap: int) -> None:
    """A node will start no more workers for our requests (``max_workers``): they wait for
    one to finish. Nested tasks blocked in ``get`` each keep a worker, so a deep enough nest
    waits for ever: say so where the user looks."""
    output.warn_user(
        core,
        f"The node at {agent.info.get('addr')} already runs {cap} worker processes, its "
        "max_workers limit, so tasks wait for one of them to finish. Tasks blocked in get() "
        "keep their worker: a deep nest of them can wait for ever. Raise the limit with "
        "NBCLUSTER_MAX_WORKERS (or max_workers in the config file) before the cluster starts.",
    )


class Lease:
    """A worker leased from a node agent, for the tasks of one scheduling class."""

    __slots__ = (
        "agent", "blocked", "conn", "gpus", "inflight", "last_used", "oom", "pid", "stealing",
        "worker_id",
    )  # fmt: skip

    def __init__(
        self, conn: Connection, worker_id: bytes, gpus: list[int], agent: Connection, pid: int
    ) -> None:
        self.agent = agent  # the node agent that granted it: the lease goes back there
        self.oom: str | None = None  # why the memory monitor killed its worker
        self.conn = conn
        self.worker_id = worker_id
        self.pid = pid  # (named when the worker dies: the connection only knows its address)
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


class LeaseRequester:
    """Lease requests of this owner, one asyncio task each.

    ``mark_dirty`` is the scheduler's: a class whose request was answered is dispatched again
    (it is given, not imported, because the scheduler is what asks for leases).
    """

    def __init__(
        self, core: CoreWorker, table: TaskTable, mark_dirty: Callable[[SchedClass], None]
    ) -> None:
        self.core = core
        self.table = table
        self.mark_dirty = mark_dirty
        self._warned: set[tuple[Any, ...]] = set()

    def request(self, cls: SchedClass) -> None:
        """Ask for one more worker for ``cls``; the answer comes back on the loop."""
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
            if reply[0] == "removed":  # its placement group was removed
                cls.requests -= 1
                while cls.queue:
                    self.table.fail(cls.queue.popleft(), exc.TaskPlacementGroupRemoved())
                return
            if reply[0] == "cancelled":  # withdrawn: the backlog it was for is gone...
                cls.requests -= 1
                # ...but a new backlog may have come meanwhile, and found this request still
                # counted: look again, or its tasks wait for a lease nobody asks for.
                self.mark_dirty(cls)
                return
            _, worker_id, addr, gpus, pid = reply
            conn = await core.connect(addr)
        except Exception as e:
            cls.requests -= 1
            if "reply" in locals() and reply[0] == "grant":
                log.warning("cannot reach leased worker %s: %s", reply[2], e)
                agent.notify("return_lease", reply[1], True)
                self.mark_dirty(cls)
            elif isinstance(e, ValueError):  # can never be placed (hard affinity to a dead node)
                self._fail_class(cls, e)
            elif not core.closed:  # its node went away: ask again (our node, by default)
                log.info("lease request failed (%s); asking again", e)
                core.loop.call_later(LEASE_RETRY_S, self.mark_dirty, cls)
            return
        # Counted as requested until connected, so a grant on its way is never mistaken
        # for a full cluster.
        cls.requests -= 1
        if not cls.requests:
            cls.saturated = False
        cls.leases.append(Lease(conn, worker_id, gpus, agent, pid))
        self.mark_dirty(cls)

    def _fail_class(self, cls: SchedClass, err: BaseException) -> None:
        """A request that can never be placed (e.g. a hard affinity to a dead node)."""
        if cls.requests or cls.leases:
            return
        while cls.queue:
            self.table.fail(
                cls.queue.popleft(), exc.NbclusterError(f"cannot schedule the task: {err}")
            )

    def _warn_if_infeasible(self, cls: SchedClass, agent: Connection) -> None:
        if cls.key in self._warned or not cls.queue or cls.leases or agent.closed:
            return
        if group_of(cls.resources) is not None:
            return  # it waits for its placement group, which warns if it cannot be placed

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
            output.warn_user(
                self.core,
                f"A task requires {cls.resources} but no node of the cluster has that much "
                f"(its {len(nodes)} node(s) offer {offers}; the cluster has {total} in all, "
                "and a task runs on one node); it stays pending until a node with enough "
                "resources joins.",
            )

        agent.call("node_totals").add_done_callback(check)

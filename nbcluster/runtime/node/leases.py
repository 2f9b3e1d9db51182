"""Leases on this node's workers: who gets a worker, when, and holding which resources.

Owners ask for a *lease* on a worker that fits a task's resources; the lease table grants an
idle worker of the pool (``worker_pool``, which starts one when the resources are free but no
worker is), and the owner then talks to the worker directly. This is not on the per-task path:
it sees one request per lease, not per task. A request this node cannot serve well is *spilled
back* to another node (``spillback``). Actors get a worker of their own the same way, holding
only what they hold for life.

A worker blocked in ``get`` lends its CPU back, so more workers may run nested tasks. Free
resources go to the head when they change and in a heartbeat every second.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import time
from collections.abc import Callable
from typing import Any

from nbcluster.runtime.control.node_directory import HEARTBEAT_S
from nbcluster.runtime.node.spillback import Spillback
from nbcluster.runtime.node.worker_pool import WorkerInfo, WorkerPool
from nbcluster.runtime.scheduling.bundles import gpu_amount
from nbcluster.runtime.scheduling.gpus import GpuSlots
from nbcluster.runtime.scheduling.placement import Unschedulable
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.wire.transport import Connection

LEASE_ASK_INTERVAL_S = 0.1


class LeaseRequest:
    """A wish for a worker: for tasks (``resources`` held while leased), or to host an actor
    (placed where ``resources`` fit, then holding only ``hold`` for its whole life)."""

    __slots__ = ("actor", "conn", "fut", "hold", "moved", "resources", "strategy", "token")

    def __init__(
        self,
        conn: Connection | None,
        resources: dict[str, float],
        fut: asyncio.Future[Any],
        actor: bytes | None = None,
        hold: dict[str, float] | None = None,
        strategy: Any = None,
        token: int = 0,
    ) -> None:
        self.conn = conn
        self.strategy = strategy
        self.token = token  # the owner's name for the shape of tasks it asks for
        self.resources = resources
        self.fut = fut
        self.actor = actor
        self.hold = resources if hold is None else hold
        self.moved = False  # spilled here from another node: it does not move again


class Leases:
    """This node's resources, the requests waiting for them and the workers leased out."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        node_id: str,
        resources: dict[str, float],
        pool: WorkerPool,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.total = dict(resources)
        self.available = dict(resources)
        self.gpus = GpuSlots(int(resources.get("GPU", 0)))
        self.requests: collections.deque[LeaseRequest] = collections.deque()
        #: the cluster view and where requests that do not belong here go
        self.spillback = Spillback(node_id, self.total, self.available)
        #: sends this node's free resources to the head
        self.report: Callable[[dict[str, float]], None] = lambda available: None
        #: The head's current view (or an awaitable of it), for when ours may be stale.
        self.fetch_view: Callable[[], Any] = lambda: self.spillback.view
        #: the view changed; called with the addresses of nodes that left it
        self.on_nodes_gone: Callable[[list[str]], None] = lambda gone: None
        #: whether a demand belongs to a placement group removed meanwhile (``bundle_reservations``)
        self.group_removed: Callable[[dict[str, float]], bool] = lambda resources: False
        self._report_scheduled = False
        self._asked_at = 0.0
        self.loop.call_later(HEARTBEAT_S, self._heartbeat)

    def request_lease(
        self,
        conn: Connection,
        resources: dict[str, float],
        strategy: Any = None,
        spilled: bool = False,
        token: int = 0,
    ) -> Any:
        """Grant a worker (``["grant", worker_id, address, gpus, pid]``) when one fits here, or
        name a better node (``["spill", agent_address]``)."""
        if isinstance(strategy, list):
            strategy = tuple(strategy)
        if (
            isinstance(strategy, tuple)
            and strategy[1] != self.spillback.node_id
            and strategy[1] not in self.spillback.view
        ):
            # Affinity to a node our view does not have yet: it may have just joined (the
            # head pushes it a moment later). Ask the head, whose directory is the truth,
            # before a hard affinity gives up or a soft one settles for another node.
            return self.loop.create_task(
                self._request_with_fresh_view(conn, resources, strategy, spilled, token)
            )
        try:
            target = self.spillback.route(resources, strategy, spilled)
        except Unschedulable:
            return self.loop.create_task(
                self._request_with_fresh_view(conn, resources, strategy, spilled, token)
            )
        return self._serve(conn, resources, strategy, target, token, spilled)

    async def _request_with_fresh_view(
        self,
        conn: Connection,
        resources: dict[str, float],
        strategy: Any,
        spilled: bool,
        token: int,
    ) -> Any:
        fresh = self.fetch_view()
        self.cluster_view_update(None, await fresh if inspect.isawaitable(fresh) else fresh)
        try:
            target = self.spillback.route(resources, strategy, spilled)
        except Unschedulable as e:
            raise ValueError(str(e)) from None
        reply = self._serve(conn, resources, strategy, target, token, spilled)
        return await reply if isinstance(reply, asyncio.Future) else reply

    def _serve(
        self,
        conn: Connection,
        resources: dict[str, float],
        strategy: Any,
        target: str | None,
        token: int,
        spilled: bool = False,
    ) -> Any:
        """Spill to ``target``, or queue the request here (``target`` None)."""
        view = self.spillback.view
        if target is not None and target in view:
            return ["spill", view[target]["address"]]
        if not fits(self.total, resources) and self.group_removed(resources):
            return ["removed"]
        fut: asyncio.Future[Any] = self.loop.create_future()
        req = LeaseRequest(conn, resources, fut, strategy=strategy, token=token)
        req.moved = spilled
        self.requests.append(req)
        self.try_grant()
        if not fut.done() and not fits(self.available, resources) and conn is not None:
            conn.notify("lease_queued", token)  # it waits for resources, not for a worker
        return fut

    def cancel_lease_requests(self, conn: Connection, token: int) -> None:
        """The owner no longer needs the workers it asked for with ``token``."""
        for req in list(self.requests):
            if req.conn is conn and req.token == token and not req.fut.done():
                self.requests.remove(req)
                req.fut.set_result(["cancelled"])

    def lease_actor_worker(
        self, conn: Connection | None, actor_id: bytes, sched: dict[str, float],
        hold: dict[str, float],
    ) -> asyncio.Future[Any]:  # fmt: skip
        """A worker of its own for an actor; resolves to [worker_id, pid, address, gpus]."""
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.requests.append(LeaseRequest(None, sched, fut, actor_id, hold))
        self.try_grant()
        return fut

    def try_grant(self) -> None:
        """Grant idle workers to the waiting requests that fit, in order; start workers for
        those that fit but found none idle."""
        pool = self.pool
        if pool.closing:
            return
        need_spawn = 0
        starved: set[Connection | None] = set()
        spawn_for: set[Connection | None] = set()
        for req in list(self.requests):
            if req.fut.done() or (req.conn is not None and req.conn.closed):
                self.requests.remove(req)
                continue
            if not fits(self.available, req.resources) or not self.gpus.fits(
                gpu_amount(req.hold)
            ):  # (GPU fractions fit only on one device each)
                if fits(self.total, req.resources):
                    starved.add(req.conn)
                continue
            if not pool.idle:
                need_spawn += 1
                spawn_for.add(req.conn)
                continue
            w = pool.idle.popleft()
            self.requests.remove(req)
            self._grant(w, req)
        spare = len(pool.workers) + pool.starting
        while need_spawn > pool.starting and spare < pool.max_workers:
            pool.spawn()
            spare += 1
        if need_spawn > pool.starting:
            self._tell_capped(spawn_for)
        if starved:
            self._ask_for_leases(starved)

    def _tell_capped(self, waiting: set[Connection | None]) -> None:
        """Requests wait because the node runs as many workers as it may: say so, once to
        each owner, or a deep nest of tasks blocked in ``get`` just hangs."""
        for conn in waiting:
            if conn is not None and not conn.closed and not conn.info.get("told_capped"):
                conn.info["told_capped"] = True
                conn.notify("workers_capped", self.pool.max_workers)

    def _ask_for_leases(self, waiting: set[Connection | None]) -> None:
        """Someone waits for resources that leases hold: ask their owners to give back the
        ones they are not using right away, instead of keeping them for their idle timeout,
        so one busy driver cannot starve another."""
        now = time.monotonic()
        if now - self._asked_at < LEASE_ASK_INTERVAL_S:
            return
        self._asked_at = now
        owners = {w.lease[0] for w in self.pool.workers.values() if w.lease and w.actor is None}
        for conn in owners:
            # Only for someone else: an owner waiting for more of its own kind of lease
            # should keep what it has (it will stack tasks on them instead).
            if conn is not None and not conn.closed and waiting - {conn}:
                conn.notify("leases_wanted")

    def _grant(self, w: WorkerInfo, req: LeaseRequest) -> None:
        res = req.hold
        for k, v in res.items():
            self.available[k] = self.available.get(k, 0.0) - v
        w.gpu_parts = self.gpus.take(gpu_amount(res))
        gpus = sorted(w.gpu_parts)
        w.lease = (req.conn, res)
        w.lease_time = time.monotonic()
        if w.blocked:  # (its last word, on its own connection: see ``worker_blocked``)
            self.available["CPU"] = self.available.get("CPU", 0.0) + res.get("CPU", 0.0)
        self._changed()
        if req.actor is not None:
            w.actor = req.actor
            self.pool.replenish()
            req.fut.set_result([w.worker_id, w.pid, w.addr, gpus])
        else:
            req.fut.set_result(["grant", w.worker_id, w.addr, gpus, w.pid])

    def release(self, w: WorkerInfo) -> None:
        """``w``'s lease ends: what it held is free again (its CPU already, if it was lent)."""
        assert w.lease is not None
        _, res = w.lease
        for k, v in res.items():
            if w.blocked and k == "CPU":
                continue  # lent back while blocked
            self.available[k] = self.available.get(k, 0.0) + v
        self.gpus.give_back(w.gpu_parts)
        w.gpu_parts = {}
        w.lease = None
        self._changed()

    def return_lease(self, conn: Connection, worker_id: bytes, dead: bool) -> None:
        w = self.pool.workers.get(worker_id)
        if w is None or w.lease is None or w.lease[0] is not conn:
            return
        self.release(w)
        if dead:
            self.pool.fork_server.kill(w.pid)
        else:
            w.idle_since = time.monotonic()
            self.pool.idle.append(w)
        self.try_grant()

    def client_gone(self, conn: Connection) -> None:
        """A client's connection closed: its leases and waiting requests go with it."""
        # Leases this client held: the workers run tasks nobody will collect. Stop them.
        for other in list(self.pool.workers.values()):
            if other.lease is not None and other.lease[0] is conn:
                self.release(other)
                self.pool.fork_server.kill(other.pid)
        for req in list(self.requests):
            if req.conn is conn:
                self.requests.remove(req)

    def worker_blocked(self, conn: Connection) -> None:
        """A worker's task waits in ``get``: while it holds a lease, its CPU is lent.

        ``w.blocked`` is the worker's own last word, kept across leases: it comes in order on
        the worker's connection, while grants and returns come on its owner's, so a block
        reported for one lease may arrive after the next lease began. Resetting it at a grant
        once made a real block that followed look like a repeat (ignored) and the stale
        unblock then took the lent CPU back: the task that block waited for never got one."""
        w = self.pool.by_conn.get(conn)
        if w is None or w.blocked:
            return
        w.blocked = True
        if w.lease is not None:
            cpu = w.lease[1].get("CPU", 0.0)
            self.available["CPU"] = self.available.get("CPU", 0.0) + cpu
            self._changed()
            self.try_grant()

    def worker_unblocked(self, conn: Connection) -> None:
        w = self.pool.by_conn.get(conn)
        if w is None or not w.blocked:
            return
        w.blocked = False
        if w.lease is not None:
            cpu = w.lease[1].get("CPU", 0.0)
            self.available["CPU"] = self.available.get("CPU", 0.0) - cpu
            self._changed()

    # -- the cluster view and reports to the head ----------------------------------------------
    def cluster_view_update(self, conn: Connection | None, view: dict[str, Any]) -> None:
        gone = self.spillback.update(view, self.requests)
        self.on_nodes_gone(gone)
        self.try_grant()

    def _changed(self) -> None:
        if not self._report_scheduled:
            self._report_scheduled = True
            self.loop.call_soon(self._send_report)

    def _send_report(self) -> None:
        self._report_scheduled = False
        self.report(dict(self.available.items()))

    def _heartbeat(self) -> None:
        if self.pool.closing:
            return
        self._send_report()
        self.loop.call_later(HEARTBEAT_S, self._heartbeat)

"""The node agent: this node's worker pool and worker leases (its store: ``store_service``).

Owners ask it for a *lease* on a worker that fits a task's resources; it grants an idle worker
(starting one from the fork server when the resources are free but no worker is), and the
owner then talks to the worker directly. The agent is not on the per-task path: it sees one
request per lease, not per task.

A request this node cannot serve well is *spilled back*: the answer names another node's
agent (chosen from the head's view, see ``placement``) and the owner asks there instead.

A worker blocked in ``get`` lends its CPU back, so the agent may start extra workers for
nested tasks; extra workers that stay idle are stopped again. The agent reports its free
resources to the head when they change and in a heartbeat every second.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.control.node_directory import HEARTBEAT_S
from nbcluster.runtime.node.fork_server import ForkServer
from nbcluster.runtime.node.memory_monitor import MemoryMonitor, private_memory
from nbcluster.runtime.objects.store_service import StoreService
from nbcluster.runtime.scheduling import limits
from nbcluster.runtime.scheduling.gpus import GpuSlots
from nbcluster.runtime.scheduling.placement import Unschedulable, route
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.wire.protocol import HELLO
from nbcluster.runtime.wire.transport import Connection, Endpoint

log = logging.getLogger("nbcluster.agent")

#: How long requests sent to another node count against its free resources (its report,
#: sent on change and every second, shows them by then).
OFFLOAD_MEMORY_S = 2.0
LEASE_ASK_INTERVAL_S = 0.1


class WorkerInfo:
    __slots__ = (
        "actor", "addr", "blocked", "conn", "gpu_parts", "idle_since", "lease", "lease_time", "pid",
        "worker_id",
    )  # fmt: skip

    def __init__(self, worker_id: bytes, pid: int, addr: str, conn: Connection) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.addr = addr
        self.conn = conn
        self.lease: tuple[Connection | None, dict[str, float]] | None = None
        self.gpu_parts: dict[int, float] = {}  # GPU id -> the fraction of it this lease holds
        self.actor: bytes | None = None  # set for a worker dedicated to an actor
        self.lease_time = 0.0
        self.blocked = False
        self.idle_since = time.monotonic()


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


class NodeAgent:
    def __init__(
        self,
        endpoint: Endpoint,
        node_id: str,
        address: str,
        resources: dict[str, float],
        store: StoreService,
        fork_server: ForkServer,
        session_dir: str,
    ) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.node_id = node_id
        self.address = address
        self.head_address = address  # replaced when this node joins a remote head
        self.head_conn: Connection | None = None
        self.report: Callable[[dict[str, float]], None] = lambda available: None
        #: The head's current view (or an awaitable of it), for when ours may be stale.
        self.fetch_view: Callable[[], Any] = lambda: self.view
        #: node id -> {"address", "transfer", "total", "available"} of every live node
        self.view: dict[str, dict[str, Any]] = {}
        self._report_scheduled = False
        self._asked_at = 0.0
        self.total = dict(resources)
        self.available = dict(resources)
        self.gpus = GpuSlots(int(resources.get("GPU", 0)))
        self.store = store
        self.fork_server = fork_server
        self.session_dir = session_dir
        self.pool_size = max(1, int(resources.get("CPU", 1)))
        self.max_workers = max(32, 8 * self.pool_size)
        self.workers: dict[bytes, WorkerInfo] = {}
        self.by_conn: dict[Connection, WorkerInfo] = {}
        self.pids: dict[int, WorkerInfo | None] = {}
        self.starting = 0
        self._asked_to_exit = 0  # idle workers asked whether they may go, not answered yet
        self.idle: collections.deque[WorkerInfo] = collections.deque()
        self.requests: collections.deque[LeaseRequest] = collections.deque()
        self.clients: dict[Connection, dict[str, Any]] = {}
        self.closing = False
        #: node id -> (when, resources) of waiting requests recently sent there
        self._offloaded: dict[str, tuple[float, dict[str, float]]] = {}
        #: other addresses this node's processes listen on (see ``exposure``)
        self.listen_also: list[str] = []
        #: on a machine other than the head's: the head machine's address (``addresses``)
        self.loopback_alias: str | None = None
        self.on_actor_worker_gone: Callable[[WorkerInfo], None] | None = None
        self.on_owner_gone: Callable[[str], None] | None = None
        rpc = endpoint.rpc
        for name in (
            "register", "request_lease", "return_lease", "worker_blocked", "worker_unblocked",
            "kill_worker", "lease_actor_worker", "cluster_view_update", "node_stats",
            "cancel_lease_requests", "ping",
            "cluster_total", "node_totals",
        ):  # fmt: skip
            rpc[name] = getattr(self, name)
        endpoint.handlers[HELLO] = self._on_hello
        self.loop.add_reader(fork_server.ev_r, self._on_fork_events)
        self.loop.call_later(1.0, self._reap_extra_workers)
        self.loop.call_later(HEARTBEAT_S, self._heartbeat)
        #: what this user's processes may use here (reported to the head, see ``limits``)
        self.limits = limits.detect()
        if CONFIG.memory_monitor_interval_s > 0:
            self.memory_monitor = MemoryMonitor(
                self.loop,
                lambda: [w for w in self.workers.values() if w.lease and w.actor is None],
                self._kill_for_memory,
                self.limits,
                self._memory_held,
            )

    # -- pool ---------------------------------------------------------------------------------
    def start_pool(self) -> None:
        for _ in range(self.pool_size):
            self._spawn()

    def _spawn(self) -> None:
        self.starting += 1
        self.fork_server.spawn()

    def _on_fork_events(self) -> None:
        for kind, pid, status in self.fork_server.read_events():
            if kind == "s":
                self.pids.setdefault(pid, None)
            elif kind == "x":
                w = self.pids.pop(pid, None)
                if w is None:  # died before it registered
                    self.starting = max(0, self.starting - 1)
                    if not self.closing:
                        log.warning("worker pid %d exited with %d before starting", pid, status)
                        self._try_grant()
                else:
                    self._worker_gone(w)
            elif kind == "eof":
                self.loop.remove_reader(self.fork_server.ev_r)

    def _worker_gone(self, w: WorkerInfo) -> None:
        if self.workers.pop(w.worker_id, None) is None:
            return
        self.by_conn.pop(w.conn, None)
        try:
            self.idle.remove(w)
        except ValueError:
            pass
        if w.lease is not None:
            self._release(w)
        if w.actor is not None and self.on_actor_worker_gone is not None:
            self.on_actor_worker_gone(w)
        if not self.closing:
            self._replenish()
            self._try_grant()

    def _task_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.actor is None)

    def _replenish(self) -> None:
        """Keep ``pool_size`` workers for tasks, so actors never starve the task pool."""
        while self._task_workers() + self.starting < self.pool_size:
            self._spawn()

    def _reap_extra_workers(self) -> None:
        """Stop extra workers idle for ``idle_worker_timeout_s``, keeping ``pool_size``. A
        worker is only asked to go: one that owns objects someone still references refuses
        (its objects would be lost with it) and stays in the pool, as in Ray."""
        if self.closing:
            return
        now = time.monotonic()
        excess = self._task_workers() - self.pool_size - self._asked_to_exit
        for w in list(self.idle):
            if excess <= 0 or now - w.idle_since < CONFIG.idle_worker_timeout_s:
                break
            self.idle.remove(w)
            excess -= 1
            self._ask_to_exit(w)
        self.loop.call_later(min(1.0, CONFIG.idle_worker_timeout_s), self._reap_extra_workers)

    def _ask_to_exit(self, w: WorkerInfo) -> None:
        self._asked_to_exit += 1

        def answered(f: asyncio.Future[Any]) -> None:
            self._asked_to_exit -= 1
            if f.cancelled() or f.exception() is not None:
                return  # its connection closed: it is gone already
            if f.result() and not self.closing:
                self._stop_idle_worker(w)
            elif w.worker_id in self.workers and w.lease is None:
                w.idle_since = time.monotonic()
                self.idle.append(w)  # it owns objects: still a worker of the pool
                self._try_grant()

        w.conn.call("may_exit").add_done_callback(answered)

    def _stop_idle_worker(self, w: WorkerInfo) -> None:
        """Stop a worker that may go, once it has shipped its events (the tasks it ran and
        submitted would otherwise show unfinished for ever); a worker that does not answer
        within ``node_timeout_s`` is stopped all the same."""
        stopped = False

        def stop(_: Any = None) -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                self.fork_server.kill(w.pid)

        if w.conn.closed:
            stop()
            return
        w.conn.call("flush_events").add_done_callback(stop)
        self.loop.call_later(CONFIG.node_timeout_s, stop)

    # -- registration -------------------------------------------------------------------------
    def _on_hello(self, conn: Connection, msg: list[Any]) -> None:
        conn.info.update(addr=msg[1], kind=msg[2], worker_id=msg[3], pid=msg[4])

    def register(self, conn: Connection, kind: str, worker_id: bytes, pid: int, addr: str) -> Any:
        self.clients[conn] = {"kind": kind, "pid": pid, "addr": addr}
        ev.emit(ev.WORKER_STARTED, worker_id, pid, addr, kind)
        if kind == "worker":
            w = WorkerInfo(worker_id, pid, addr, conn)
            self.workers[worker_id] = w
            self.by_conn[conn] = w
            if pid in self.pids:
                self.pids[pid] = w
                self.starting = max(0, self.starting - 1)
            self.idle.append(w)
            self.loop.call_soon(self._try_grant)
        return {
            "node_id": self.node_id,
            "agent_address": self.address,
            "head_address": self.head_address,
            "store_path": self.store.store.path,
            "store_capacity": self.store.store.capacity,
            "resources": self.total,
            "cluster_resources": self.cluster_total(),
            "limits": self.limits.applied(),
            "session_dir": self.session_dir,
            # where this machine's processes must also listen, and what loopback means here
            "listen_also": list(self.listen_also),
            "loopback_alias": self.loopback_alias,
        }

    def node_totals(self, conn: Connection | None = None) -> list[dict[str, float]]:
        """What each live node offers in all (a request no single one fits waits forever)."""
        return [dict(v["total"]) for v in self.view.values()] or [dict(self.total)]

    def cluster_total(self, conn: Connection | None = None) -> dict[str, float]:
        total: dict[str, float] = {}
        for v in self.view.values() or [{"total": self.total}]:
            for k, amount in v["total"].items():
                total[k] = total.get(k, 0.0) + amount
        return total

    def on_close(self, conn: Connection) -> None:
        info = self.clients.pop(conn, None) or {}
        if info:
            ev.emit(ev.WORKER_EXITED, conn.info.get("worker_id"), info["pid"], info["kind"])
        w = self.by_conn.get(conn)
        if w is not None:
            self._worker_gone(w)
        # Leases this client held: the workers run tasks nobody will collect. Stop them.
        for other in list(self.workers.values()):
            if other.lease is not None and other.lease[0] is conn:
                self._release(other)
                self.fork_server.kill(other.pid)
        for req in list(self.requests):
            if req.conn is conn:
                self.requests.remove(req)
        self.store.client_gone(conn, info.get("addr"))
        if info.get("addr") and self.on_owner_gone is not None:
            self.on_owner_gone(info["addr"])
        self._try_grant()

    # -- leases -------------------------------------------------------------------------------
    def request_lease(
        self,
        conn: Connection,
        resources: dict[str, float],
        strategy: Any = None,
        spilled: bool = False,
        token: int = 0,
    ) -> Any:
        """Grant a worker (``["grant", worker_id, address, gpus]``) when one fits here, or
        name a better node (``["spill", agent_address]``)."""
        if isinstance(strategy, list):
            strategy = tuple(strategy)
        try:
            target = route(
                self.node_id, self.view, self.total, self.available, resources, strategy, spilled
            )
        except Unschedulable:
            # Our view may predate a node that just joined (the head pushes it a moment
            # later): ask the head, whose directory is the truth, before giving up.
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
            target = route(
                self.node_id, self.view, self.total, self.available, resources, strategy, spilled
            )
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
        if target is not None and target in self.view:
            return ["spill", self.view[target]["address"]]
        fut: asyncio.Future[Any] = self.loop.create_future()
        req = LeaseRequest(conn, resources, fut, strategy=strategy, token=token)
        req.moved = spilled
        self.requests.append(req)
        self._try_grant()
        if not fut.done() and not fits(self.available, resources) and conn is not None:
            conn.notify("lease_queued", token)  # it waits for resources, not for a worker
        return fut

    def ping(self, conn: Connection) -> bool:
        """Drivers call this every second: a head that stops answering is gone."""
        return True

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
        self._try_grant()
        return fut

    def _try_grant(self) -> None:
        if self.closing:
            return
        need_spawn = 0
        starved: set[Connection | None] = set()
        for req in list(self.requests):
            if req.fut.done() or (req.conn is not None and req.conn.closed):
                self.requests.remove(req)
                continue
            if not fits(self.available, req.resources) or not self.gpus.fits(
                req.hold.get("GPU", 0.0)
            ):  # (GPU fractions fit only on one device each)
                if fits(self.total, req.resources):
                    starved.add(req.conn)
                continue
            if not self.idle:
                need_spawn += 1
                continue
            w = self.idle.popleft()
            self.requests.remove(req)
            self._grant(w, req)
        spare = len(self.workers) + self.starting
        while need_spawn > self.starting and spare < self.max_workers:
            self._spawn()
            spare += 1
        if starved:
            self._ask_for_leases(starved)

    def _ask_for_leases(self, waiting: set[Connection | None]) -> None:
        """Someone waits for resources that leases hold: ask their owners to give back the
        ones they are not using right away, instead of keeping them for their idle timeout,
        so one busy driver cannot starve another."""
        now = time.monotonic()
        if now - self._asked_at < LEASE_ASK_INTERVAL_S:
            return
        self._asked_at = now
        owners = {w.lease[0] for w in self.workers.values() if w.lease and w.actor is None}
        for conn in owners:
            # Only for someone else: an owner waiting for more of its own kind of lease
            # should keep what it has (it will stack tasks on them instead).
            if conn is not None and not conn.closed and waiting - {conn}:
                conn.notify("leases_wanted")
    def _grant(self, w: WorkerInfo, req: LeaseRequest) -> None:
        res = req.hold
        for k, v in res.items():
            self.available[k] = self.available.get(k, 0.0) - v
        w.gpu_parts = self.gpus.take(res.get("GPU", 0.0))
        gpus = sorted(w.gpu_parts)
        w.lease = (req.conn, res)
        w.lease_time = time.monotonic()
        w.blocked = False
        self._changed()
        if req.actor is not None:
            w.actor = req.actor
            self._replenish()
            req.fut.set_result([w.worker_id, w.pid, w.addr, gpus])
        else:
            req.fut.set_result(["grant", w.worker_id, w.addr, gpus])

    def _release(self, w: WorkerInfo) -> None:
        assert w.lease is not None
        _, res = w.lease
        for k, v in res.items():
            if w.blocked and k == "CPU":
                continue  # lent back while blocked
            self.available[k] = self.available.get(k, 0.0) + v
        self.gpus.give_back(w.gpu_parts)
        w.gpu_parts = {}
        w.lease = None
        w.blocked = False
        self._changed()

    def return_lease(self, conn: Connection, worker_id: bytes, dead: bool) -> None:
        w = self.workers.get(worker_id)
        if w is None or w.lease is None or w.lease[0] is not conn:
            return
        self._release(w)
        if dead:
            self.fork_server.kill(w.pid)
        else:
            w.idle_since = time.monotonic()
            self.idle.append(w)
        self._try_grant()

    def worker_blocked(self, conn: Connection) -> None:
        w = self.by_conn.get(conn)
        if w is None or w.lease is None or w.blocked:
            return
        w.blocked = True
        cpu = w.lease[1].get("CPU", 0.0)
        self.available["CPU"] = self.available.get("CPU", 0.0) + cpu
        self._changed()
        self._try_grant()

    def worker_unblocked(self, conn: Connection) -> None:
        w = self.by_conn.get(conn)
        if w is None or w.lease is None or not w.blocked:
            return
        w.blocked = False
        cpu = w.lease[1].get("CPU", 0.0)
        self.available["CPU"] = self.available.get("CPU", 0.0) - cpu
        self._changed()

    def _memory_held(self) -> int:
        """This node's own memory: its processes' private memory and its object store."""
        pids = [os.getpid(), self.fork_server.pid, *self.pids]
        return private_memory(pids) + self.store.store.stats().used

    def _kill_for_memory(self, w: WorkerInfo, why: str) -> None:
        owner = w.lease[0] if w.lease else None
        if owner is not None and not owner.closed:
            owner.notify("worker_oom", w.worker_id, why)  # arrives before the connection drops
        self.fork_server.kill(w.pid)

    def kill_worker(self, conn: Connection, worker_id: bytes) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            self.fork_server.kill(w.pid)

    def node_stats(self, conn: Connection | None) -> Any:
        return {
            "node_id": self.node_id,
            "workers": len(self.workers),
            "available": dict(self.available),
            "store": self.store.store_stats(None),
        }

    # -- the cluster view and reports to the head ----------------------------------------------
    def cluster_view_update(self, conn: Connection | None, view: dict[str, Any]) -> None:
        gone = [v["address"] for nid, v in self.view.items() if nid not in view]
        self.view = view
        self._reroute_infeasible()
        self._offload_waiting()
        for address in gone:  # owners here retry tasks and rebuild objects that were there
            for client in list(self.clients):
                if not client.closed:
                    client.notify("node_dead", address)
        self.store.nodes_gone(gone)
        self.store.transfer_of = {v["address"]: v["transfer"] for v in view.values()}
        self._try_grant()

    def _reroute_infeasible(self) -> None:
        """Requests this node can never serve move to a node that joined and can."""
        for req in list(self.requests):
            if req.actor is not None or req.fut.done() or fits(self.total, req.resources):
                continue
            for nid, v in self.view.items():
                if nid != self.node_id and fits(v["total"], req.resources):
                    self.requests.remove(req)
                    req.fut.set_result(["spill", v["address"]])
                    break

    def _offload_waiting(self) -> None:
        """Requests waiting here for resources that another node has free now (one that just
        joined, or finished its work) move there: queued work follows new capacity, which is
        what adding nodes to a busy cluster is for. Only default-strategy task leases that
        were asked here first move, and only once (views are a moment old: two nodes must
        not pass requests back and forth); what was sent to a node in the last moments counts
        against its free resources until its own report shows it."""
        now = time.monotonic()
        recent = self._offloaded = {
            nid: (t, sent) for nid, (t, sent) in self._offloaded.items()
            if now - t < OFFLOAD_MEMORY_S and nid in self.view
        }  # fmt: skip
        free = {}
        for nid, v in self.view.items():
            if nid == self.node_id:
                continue
            avail = dict(v["available"])
            for k, amount in recent.get(nid, (now, {}))[1].items():
                avail[k] = avail.get(k, 0.0) - amount
            free[nid] = avail
        for req in list(self.requests):
            if (req.actor is not None or req.moved or req.fut.done() or req.strategy is not None
                    or fits(self.available, req.resources)):  # fmt: skip
                continue
            for nid, avail in free.items():
                if fits(avail, req.resources):
                    sent = recent.setdefault(nid, (now, {}))[1]
                    for k, amount in req.resources.items():
                        avail[k] = avail.get(k, 0.0) - amount
                        sent[k] = sent.get(k, 0.0) + amount
                    self.requests.remove(req)
                    req.fut.set_result(["spill", self.view[nid]["address"]])
                    break

    def _changed(self) -> None:
        if not self._report_scheduled:
            self._report_scheduled = True
            self.loop.call_soon(self._send_report)

    def _send_report(self) -> None:
        self._report_scheduled = False
        self.report(dict(self.available.items()))

    def _heartbeat(self) -> None:
        if self.closing:
            return
        self._send_report()
        self.loop.call_later(HEARTBEAT_S, self._heartbeat)

    # -- shutdown -----------------------------------------------------------------------------
    async def end_actors(self, grace: float) -> None:
        """The node is stopping: ask the actors here to end gracefully (their atexit handlers
        run, as when a Ray driver shuts down), and give them ``grace`` seconds to."""
        hosts = [w for w in self.workers.values() if w.actor is not None and not w.conn.closed]
        for w in hosts:
            w.conn.notify("exit_actor", False)
        deadline = self.loop.time() + grace
        while any(w.worker_id in self.workers for w in hosts) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)  # their exits arrive as fork server events

    def close(self) -> None:
        """Stop every worker and free the store. Workers are the fork server's children: it
        kills and reaps them (or, killed itself, takes them along by PDEATHSIG). Never signal
        their pids from here: once reaped, a pid may belong to anyone."""
        self.closing = True
        self.fork_server.stop()
        self.store.close()
        self.store.store.close()

"""The node agent: this node's raylet, composed of its worker pool, leases and store.

Owners ask it for a *lease* on a worker that fits a task's resources (``leases``); it grants
an idle worker of the pool (``worker_pool``) or spills the request to a better node
(``spillback``), and the owner then talks to the worker directly. The agent is not on the
per-task path: it sees one request per lease, not per task. Its object store RPCs are
``store_service``'s.

The agent itself ties the parts to the node's connections: it registers workers and drivers
(``register``), forgets what a closed connection held (``on_close``), and keeps its memory
monitor. The attributes the control plane and node process read (``workers``, ``requests``,
``total``, ``available``, ``closing``) are its parts', named here so callers need not know
which part holds them.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable
from typing import Any

from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.node.bundle_reservations import BundleReservations
from nbcluster.runtime.node.fork_server import ForkServer
from nbcluster.runtime.node.leases import LeaseRequest, Leases
from nbcluster.runtime.node.memory_monitor import MemoryMonitor, private_memory
from nbcluster.runtime.node.worker_pool import WorkerInfo, WorkerPool
from nbcluster.runtime.objects.store_service import StoreService
from nbcluster.runtime.scheduling import limits
from nbcluster.runtime.wire.protocol import Hello
from nbcluster.runtime.wire.transport import Connection, Endpoint

#: How long a worker killed for memory waits for its owner to hear why (see
#: ``_kill_for_memory``): a round trip, normally well under a millisecond.
OOM_ACK_S = 1.0


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
        self.store = store
        self.fork_server = fork_server
        self.session_dir = session_dir
        self.pool = WorkerPool(self.loop, fork_server, max(1, int(resources.get("CPU", 1))))
        self.leases = Leases(self.loop, node_id, resources, self.pool)
        self.pool.on_free = self.leases.try_grant
        self.pool.on_gone = self._worker_gone
        self.leases.on_nodes_gone = self._nodes_gone
        self.clients: dict[Connection, dict[str, Any]] = {}
        #: other addresses this node's processes listen on (see ``exposure``)
        self.listen_also: list[str] = []
        #: on a machine other than the head's: the head machine's address (``addresses``)
        self.loopback_alias: str | None = None
        self.on_actor_worker_gone: Callable[[WorkerInfo], None] | None = None
        self.on_owner_gone: Callable[[str], None] | None = None
        rpc = endpoint.rpc
        leases, spillback = self.leases, self.leases.spillback
        rpc.update(
            register=self.register, cluster_view_update=self.cluster_view_update,
            node_stats=self.node_stats, ping=self.ping, kill_worker=self.pool.kill_worker,
            request_lease=leases.request_lease, return_lease=leases.return_lease,
            worker_blocked=leases.worker_blocked, worker_unblocked=leases.worker_unblocked,
            lease_actor_worker=leases.lease_actor_worker,
            cancel_lease_requests=leases.cancel_lease_requests,
            cluster_total=spillback.cluster_total, node_totals=spillback.node_totals,
        )  # fmt: skip
        #: this node's share of placement groups
        self.bundles = BundleReservations(self.leases)
        rpc.update(self.bundles.rpcs())
        endpoint.on(Hello, self._on_hello)
        #: what this user's processes may use here (reported to the head, see ``limits``)
        self.limits = limits.detect()
        #: Workers killed for memory whose owner is being told (not candidates again).
        self._oom_killing: set[bytes] = set()
        if CONFIG.memory_monitor_interval_s > 0:
            self.memory_monitor = MemoryMonitor(
                self.loop,
                lambda: [w for w in self.workers.values()
                         if w.lease and w.actor is None and w.worker_id not in self._oom_killing],
                self._kill_for_memory,
                self.limits,
                self._memory_held,
            )

    # -- its parts' state, as the node process and the control plane read it -------------------
    @property
    def workers(self) -> dict[bytes, WorkerInfo]:
        return self.pool.workers

    @property
    def requests(self) -> collections.deque[LeaseRequest]:
        return self.leases.requests

    @property
    def total(self) -> dict[str, float]:
        return self.leases.total

    @property
    def available(self) -> dict[str, float]:
        return self.leases.available

    @property
    def view(self) -> dict[str, dict[str, Any]]:
        return self.leases.spillback.view

    @property
    def closing(self) -> bool:
        return self.pool.closing

    @property
    def report(self) -> Callable[[dict[str, float]], None]:
        """Sends this node's free resources to the head (set by whoever connects it)."""
        return self.leases.report

    @report.setter
    def report(self, fn: Callable[[dict[str, float]], None]) -> None:
        self.leases.report = fn

    @property
    def fetch_view(self) -> Callable[[], Any]:
        """The head's current view (or an awaitable of it), for when ours may be stale."""
        return self.leases.fetch_view

    @fetch_view.setter
    def fetch_view(self, fn: Callable[[], Any]) -> None:
        self.leases.fetch_view = fn

    def start_pool(self) -> None:
        self.pool.start()

    def kill_worker(self, conn: Connection, worker_id: bytes) -> None:
        self.pool.kill_worker(conn, worker_id)

    def lease_actor_worker(
        self, conn: Connection | None, actor_id: bytes, sched: dict[str, float],
        hold: dict[str, float],
    ) -> asyncio.Future[Any]:  # fmt: skip
        """A worker of its own for an actor; resolves to [worker_id, pid, address, gpus]."""
        return self.leases.lease_actor_worker(conn, actor_id, sched, hold)

    def cluster_total(self, conn: Connection | None = None) -> dict[str, float]:
        return self.leases.spillback.cluster_total(conn)

    def cluster_view_update(self, conn: Connection | None, view: dict[str, Any]) -> None:
        self.leases.cluster_view_update(conn, view)

    # -- registration and connections ---------------------------------------------------------
    def _on_hello(self, conn: Connection, msg: Hello) -> None:
        conn.info.update(addr=msg.address, kind=msg.kind, worker_id=msg.worker_id, pid=msg.pid)

    def register(self, conn: Connection, kind: str, worker_id: bytes, pid: int, addr: str) -> Any:
        self.clients[conn] = {"kind": kind, "pid": pid, "addr": addr}
        ev.emit(ev.WORKER_STARTED, worker_id, pid, addr, kind)
        if kind == "worker":
            self.pool.add(worker_id, pid, addr, conn)
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

    def on_close(self, conn: Connection) -> None:
        info = self.clients.pop(conn, None) or {}
        if info:
            ev.emit(ev.WORKER_EXITED, conn.info.get("worker_id"), info["pid"], info["kind"])
        w = self.pool.by_conn.get(conn)
        if w is not None:
            self.pool.worker_gone(w)
        self.leases.client_gone(conn)
        self.store.client_gone(conn, info.get("addr"))
        if info.get("addr") and self.on_owner_gone is not None:
            self.on_owner_gone(info["addr"])
        self.leases.try_grant()

    def _worker_gone(self, w: WorkerInfo) -> None:
        """A worker left the pool: free its lease, and tell the actor manager if it hosted
        an actor (the actor restarts or dies)."""
        if w.lease is not None:
            self.leases.release(w)
        if w.actor is not None and self.on_actor_worker_gone is not None:
            self.on_actor_worker_gone(w)

    def _nodes_gone(self, gone: list[str]) -> None:
        """The cluster view changed: owners here retry tasks and rebuild objects that were on
        nodes that left it, and the store pulls from the nodes in it."""
        for address in gone:
            for client in list(self.clients):
                if not client.closed:
                    client.notify("node_dead", address)
        self.store.nodes_gone(gone)
        self.store.transfer_of = {v["address"]: v["transfer"] for v in self.view.values()}

    def ping(self, conn: Connection) -> bool:
        """Drivers call this every second: a head that stops answering is gone."""
        return True

    def node_stats(self, conn: Connection | None) -> Any:
        return {
            "node_id": self.node_id,
            "workers": len(self.workers),
            "available": dict(self.available),
            "store": self.store.store_stats(None),
        }

    # -- memory -------------------------------------------------------------------------------
    def _memory_held(self) -> int:
        """This node's own memory: its processes' private memory and its object store."""
        pids = [os.getpid(), self.fork_server.pid, *self.pool.pids]
        return private_memory(pids) + self.store.store.stats().used

    def _kill_for_memory(self, w: WorkerInfo, why: str) -> None:
        """Kill ``w`` for memory, once its owner knows why: the owner hears of the death on
        the worker's own connection, which could otherwise overtake a notification on ours,
        and would then report a crash (and retry as for one) instead of running out of
        memory. An owner that does not answer within ``OOM_ACK_S`` does not hold it up."""
        owner = w.lease[0] if w.lease else None
        if owner is None or owner.closed:
            self.fork_server.kill(w.pid)
            return
        self._oom_killing.add(w.worker_id)
        self.pool.kill_after(w, owner.call("worker_oom", w.worker_id, why), OOM_ACK_S,
                             lambda: self._oom_killing.discard(w.worker_id))  # fmt: skip

    # -- shutdown -----------------------------------------------------------------------------
    async def end_actors(self, grace: float) -> None:
        """The node is stopping: ask the actors here to end gracefully, within ``grace`` s."""
        await self.pool.end_actors(grace)

    def close(self) -> None:
        """Stop every worker and free the store. Workers are the fork server's children: it
        kills and reaps them (or, killed itself, takes them along by PDEATHSIG). Never signal
        their pids from here: once reaped, a pid may belong to anyone."""
        self.pool.closing = True
        self.fork_server.stop()
        self.store.close()
        self.store.store.close()

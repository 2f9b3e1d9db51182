"""A process's connections: to its node agent, to the head, and to every peer it talks to.

All I/O runs on the core worker's event loop thread (``nbcluster-io``). User threads reach it
through ``call_soon`` / ``run_sync`` and send with ``send_to``, which connects on first use and
queues what is sent meanwhile, so a burst of sends to a new peer costs one connection, not one
per message. Every connection opens with ``HELLO`` (who we are, whose job), so the other side
knows a peer's address and kind however the connection was made.

A connection's end means something: a peer that goes may have held our tasks, our objects'
borrows or the objects we borrow from it (``on_conn_closed`` tells each of those); losing the
agent or the head means the cluster is gone for this process (``_cluster_lost``). A driver also
pings the head, because a head that is cut off or frozen closes nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.objects.serialization import error_bytes
from nbcluster.runtime.ownership.reference_table import FAILED, KIND_ERROR, PENDING
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection, parse_address

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

log = logging.getLogger("nbcluster.core")

#: How often a driver checks that the head still answers.
HEAD_PING_S = 1.0


class Connections:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.loop = core.loop
        self.endpoint = core.endpoint
        #: address -> the open connection to that process (made by either side)
        self.conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._queued: dict[str, list[Any]] = {}
        self._head_answered = 0.0
        self.endpoint.on(P.Hello, self.on_hello)
        self.endpoint.on_close = self.on_conn_closed

    # -- threads ----------------------------------------------------------------------------
    def on_loop(self) -> bool:
        return threading.get_ident() == self.endpoint.loop_thread

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.on_loop():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def run_sync(self, coro_fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run a coroutine on the loop from a user thread and wait for its result."""
        assert not self.on_loop(), "run_sync from the event loop would deadlock"
        fut = asyncio.run_coroutine_threadsafe(coro_fn(), self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def agent_call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A request to this node's agent, from a user thread."""

        async def go() -> Any:
            return await self.core.agent.call(method, *args)

        return self.run_sync(go, timeout)

    def head_call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A request to the head (cluster membership, actors), from a user thread."""

        async def go() -> Any:
            return await self.core.head.call(method, *args)

        return self.run_sync(go, timeout)

    # -- connections ------------------------------------------------------------------------
    async def connect(self, address: str) -> Connection:
        conn = self.conns.get(address)
        if conn is not None and not conn.closed:
            return conn
        pending = self._connecting.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Connection] = self.loop.create_future()
        self._connecting[address] = fut
        try:
            host, port = parse_address(address)
            conn = await self.endpoint.connect(host, port)
            conn.info["addr"] = address
            core = self.core
            conn.post(P.Hello(core.address, core.kind, core.worker_id, os.getpid(), core.job_id))
            self.conns[address] = conn
            fut.set_result(conn)
            for msg in self._queued.pop(address, []):
                conn.send(msg)
            return conn
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            self._queued.pop(address, None)
            raise
        finally:
            self._connecting.pop(address, None)

    def send_to(self, address: str, msg: tuple[Any, ...]) -> None:
        """Send a frame (``protocol.encode`` of a record, or a ``protocol.notification``) to a
        process by address, connecting first if needed. Any thread."""
        conn = self.conns.get(address)
        if conn is not None and not conn.closed:
            conn.send(msg)
            return
        self.call_soon(self._send_to_loop, address, msg)

    def _send_to_loop(self, address: str, msg: Any) -> None:
        conn = self.conns.get(address)
        if conn is not None and not conn.closed:
            conn.send(msg)
            return
        self._queued.setdefault(address, []).append(msg)
        if address not in self._connecting:
            task = self.loop.create_task(self.connect(address))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def local_node(self) -> str | None:
        """The agent address of a live node on this machine (the head's, if it is local);
        None when no node runs here."""
        import psutil

        agent_address = self.core.agent_address
        local = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        head = await self.endpoint.connect(*parse_address(agent_address))
        try:
            nodes = [n for n in await head.call("get_nodes") if n["Alive"]]
        finally:
            head.close()
        mine = [n for n in nodes if n["NodeManagerAddress"] in local]
        for n in mine:
            if n["Address"] == agent_address:
                return str(n["Address"])
        return str(mine[0]["Address"]) if mine else None

    def on_hello(self, conn: Connection, msg: P.Hello) -> None:
        addr = msg.address
        conn.info.update(addr=addr, kind=msg.kind, worker_id=msg.worker_id, pid=msg.pid)
        if msg.job_id is not None:
            conn.info["job"] = msg.job_id  # whose work comes on this connection (a driver's id)
        existing = self.conns.get(addr)
        if existing is None or existing.closed:
            self.conns[addr] = conn

    def on_conn_closed(self, conn: Connection) -> None:
        addr = conn.info.get("addr")
        if addr and self.conns.get(addr) is conn:
            del self.conns[addr]
        core = self.core
        if core.closed:
            return
        if conn is getattr(core, "agent", None) or conn is getattr(core, "head", None):
            self._cluster_lost(conn)
            return
        core.submitter.on_conn_closed(conn)
        if addr:
            refs = core.refs
            refs.drop_borrower_everywhere(addr)
            core.ownership.caller_gone(addr)
            err = error_bytes(
                exc.OwnerDiedError("", f"the owner process at {addr} died or disconnected")
            )
            for e in refs.borrowed_from(addr):
                if e.state == PENDING:
                    refs.resolve(e, FAILED, KIND_ERROR, err)

    # -- the cluster ------------------------------------------------------------------------
    def start_head_ping(self) -> None:
        self._head_answered = time.monotonic()
        self.loop.call_later(HEAD_PING_S, self._ping_head)

    def _ping_head(self) -> None:
        """A head that is cut off or frozen closes no connection: notice its silence."""
        head = self.core.head
        if self.core.closed or head.closed:
            return
        if time.monotonic() - self._head_answered > CONFIG.node_timeout_s:
            log.error("the head at %s has not answered for %g s", head.peer,
                      CONFIG.node_timeout_s)  # fmt: skip
            if head.transport is not None:
                head.transport.abort()  # -> _cluster_lost
            return

        def answered(f: Any) -> None:
            if not f.cancelled() and f.exception() is None:
                self._head_answered = time.monotonic()

        head.call("ping").add_done_callback(answered)
        self.loop.call_later(HEAD_PING_S, self._ping_head)

    def _cluster_lost(self, conn: Connection) -> None:
        """The head or our node is gone: nothing pending can finish, so fail it all now."""
        core = self.core
        what = "head node" if conn is getattr(core, "head", None) else "node agent"
        reason = f"lost the connection to the cluster's {what} at {conn.peer}"
        if core.kind == "driver":
            log.error("%s; call nbcluster.init() to start or attach to a cluster again", reason)
        else:  # a worker goes with its node, which says why in the same log
            log.debug("%s; this worker exits", reason)
        core.lost_reason = reason
        err = error_bytes(exc.ClusterConnectionError(reason))
        with core.refs.lock:
            pending = [e for e in core.refs.entries.values() if e.state == PENDING]
        for e in pending:
            core.refs.resolve(e, FAILED, KIND_ERROR, err)
        if core.on_agent_lost:
            core.on_agent_lost()

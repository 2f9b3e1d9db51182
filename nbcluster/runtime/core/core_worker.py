"""The core library every nbcluster process runs: drivers and workers alike.

It owns the process's event loop thread, its server (other processes reach it to borrow
objects it owns and to push it tasks), its connection to the local node agent, the reference
table, the task submitter and the reading/writing of the node's shared-memory store.

User threads call ``get``/``put``/``submit`` directly; they touch the reference table under its
lock and hand I/O to the loop thread with one wake-up per burst, never a round trip per call.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import event_shipping, exposure
from nbcluster.runtime.core.borrowing import Ownership
from nbcluster.runtime.ids import put_object_id, random_id
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.objects.remote_store import RemoteStore
from nbcluster.runtime.objects.store_client import StoreMapping
from nbcluster.runtime.ownership import object_ref as object_ref_mod
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_ERROR,
    KIND_INLINE,
    KIND_STORE,
    PENDING,
    READY,
    Entry,
    ReferenceTable,
)
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.addresses import route_to
from nbcluster.runtime.wire.transport import Connection, Endpoint, install_rpc, parse_address

log = logging.getLogger("nbcluster.core")

#: How often a driver checks that the head still answers.
HEAD_PING_S = 1.0
#: Threads resolving futures of ObjectRefs (``ref.future()``, ``await ref``).
FUTURE_THREADS = 4

# Per thread and per asyncio task, so concurrent actor calls each see their own task.
_CURRENT_TASK: contextvars.ContextVar[Any] = contextvars.ContextVar("nbcluster_task", default=None)


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a ``time.monotonic`` time), never negative; None: no limit."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def error_bytes(err: BaseException) -> bytes:
    try:
        return pickle.dumps(err, protocol=5)
    except Exception:
        return pickle.dumps(exc.NbclusterError(f"{type(err).__name__}: {err}"))


class CoreWorker:
    def __init__(
        self,
        kind: str,
        agent_address: str,
        token: str,
        *,
        worker_id: bytes | None = None,
        host: str = "127.0.0.1",
        attach: bool = False,
        advertise: str | None = None,
        login: str | None = None,
    ) -> None:
        self._attach = attach  # agent_address is a head: find this machine's node through it
        self.kind = kind
        self.worker_id = worker_id or random_id()
        #: The job this process works for: a driver is its own job; a worker takes the job
        #: of the task it runs (tasks it submits belong to it too), as Ray's job ids.
        self.job_id = self.worker_id[:4].hex() if kind == "driver" else ""
        self.token = token
        self.agent_address = agent_address
        self.loop = asyncio.new_event_loop()
        self.endpoint = Endpoint(self.loop, token)
        self.endpoint.login = login  # a JupyterHub token: the first connection logs in
        install_rpc(self.endpoint)
        self.conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Future[Connection]] = {}
        self._queued: dict[str, list[Any]] = {}
        self.address = ""
        self.node_id = ""
        self.node_info: dict[str, Any] = {}
        self.store: StoreMapping | None = None
        #: No node on this machine: objects' bytes go through the agent (``remote_store``).
        self.client_mode = False
        self._pins: dict[bytes, list[Any]] = {}  # oid -> [offset, size, live views]
        self._pins_lock = threading.Lock()
        # Releases queued by finalizers, applied on the loop (see ``release_ref``).
        self._dropped_refs: collections.deque[bytes] = collections.deque()
        self._dropped_pins: collections.deque[bytes] = collections.deque()
        self._release_scheduled = False
        self._futures_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.closed = False
        self.executor: Any = None  # set in worker processes (executor.Executor)
        self.owned_actors: dict[bytes, bool] = {}  # handle object id -> detached
        self._host = host  # where our server listens
        self._advertise = advertise or host  # how other processes reach it
        self.port = 0
        self.listening_also: set[str] = set()  # other hosts we serve on (``exposure``)
        self._thread = threading.Thread(target=self._run_loop, name="nbcluster-io", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        # The one import up a layer (tests/test_layers.py allows it): the core builds its
        # process's submitter and routes task replies to it; the submitter uses the core.
        from nbcluster.runtime.submit.submitter import Submitter

        self.refs: ReferenceTable = None  # type: ignore[assignment]
        self.submitter = Submitter(self)
        self.ownership = Ownership(self)
        h = self.endpoint.handlers
        h[P.HELLO] = self._on_hello
        h[P.TASK_DONE] = self.submitter.on_task_done
        h[P.TASK_REQUEUE] = self.submitter.on_requeue
        h[P.OUTPUT] = self.submitter.on_output
        self.endpoint.rpc["get_object"] = self._rpc_get_object
        self.endpoint.rpc["may_exit"] = lambda conn: self.may_exit()
        self.endpoint.rpc["listen_also"] = lambda conn, hosts: exposure.listen_also(self, hosts)
        self.endpoint.rpc["node_dead"] = lambda conn, addr: self.submitter.on_node_dead(addr)
        self.endpoint.rpc["leases_wanted"] = lambda conn: self.submitter.on_leases_wanted()
        self.endpoint.rpc["lease_queued"] = lambda conn, token: self.submitter.on_lease_queued(
            token
        )
        self.endpoint.rpc["worker_oom"] = lambda conn, wid, why: self.submitter.on_worker_oom(
            wid, why
        )
        self.endpoint.on_close = self._on_conn_closed
        self.on_agent_lost: Callable[[], None] | None = None
        self.lost_reason: str | None = None

    @property
    def current_task(self) -> Any:
        """The TaskContext of the task running in this thread or asyncio task, if any."""
        return _CURRENT_TASK.get()

    @current_task.setter
    def current_task(self, ctx: Any) -> None:
        _CURRENT_TASK.set(ctx)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        object_ref_mod.set_core(self)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.endpoint.loop_thread = threading.get_ident()
        try:
            self.loop.run_until_complete(self._startup())
        except BaseException as e:
            self._start_error = e
            self._started.set()
            return
        self._started.set()
        try:
            self.loop.run_forever()
        finally:
            self._let_go()

    async def _startup(self) -> None:
        target = self.agent_address
        if self._attach:  # our node is the one on this machine; serve where it does
            local = await self._local_node()
            if local is None:  # none here: client mode, through the node we were given
                self.client_mode = True
                self._host = self._advertise = route_to(parse_address(target)[0])
                log.info("no node on this machine: client mode through %s", target)
            else:
                target = local
                self._host = self._advertise = parse_address(target)[0]
        server = await self.endpoint.serve(self._host, 0)
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.port = port
        self.address = f"{self._advertise}:{port}"
        self.refs = ReferenceTable(
            self.address, self._free_owned, self.ownership.register_directly,
            self.ownership.released,
        )
        self.agent = await self.connect(target)
        info = await self.agent.call(
            "register", self.kind, self.worker_id, os.getpid(), self.address
        )
        self.node_info = info
        self.node_id = info["node_id"]
        await exposure.on_registered(self, info)
        self.agent_address = info["agent_address"]  # as other nodes know our node
        self.head = self.agent
        if info["head_address"] != info["agent_address"]:
            self.head = await self.connect(info["head_address"])
        if not self.client_mode:
            try:
                self.store = StoreMapping(info["store_path"], info["store_capacity"])
            except PermissionError:  # the node is another account's (a shared Hub service)
                self.client_mode = True
                log.info("the node's store is not ours to map: client mode through %s", target)
        if self.client_mode:
            self.store = RemoteStore(self, info["store_capacity"])
        self.submitter.start()
        if self.kind == "driver":
            self._head_answered = time.monotonic()
            self.loop.call_later(HEAD_PING_S, self._ping_head)
        event_shipping.start(self)  # ship this process's events to the head

    async def _local_node(self) -> str | None:
        """The agent address of a live node on this machine (the head's, if it is local);
        None when no node runs here."""
        import psutil

        local = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
        head = await self.endpoint.connect(*parse_address(self.agent_address))
        try:
            nodes = [n for n in await head.call("get_nodes") if n["Alive"]]
        finally:
            head.close()
        mine = [n for n in nodes if n["NodeManagerAddress"] in local]
        for n in mine:
            if n["Address"] == self.agent_address:
                return str(n["Address"])
        return str(mine[0]["Address"]) if mine else None

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        if object_ref_mod.get_core() is self:
            object_ref_mod.set_core(None)

        def stop() -> None:
            event_shipping.flush(self)
            for server in self.endpoint.servers:
                server.close()
            for c in [*self.conns.values(), *self.endpoint.connections]:
                c.close()  # every one: their owners (subscriptions, say) hear of it
            self.loop.call_later(0.05, self.loop.stop)  # the closes above go out first

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            return
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2)

    def _let_go(self) -> None:
        """The loop stopped for good (on its own thread): close it and the store mapping,
        and drop every table, so that ObjectRefs a notebook keeps after ``shutdown`` hold
        nothing of the old cluster (its shared memory is gigabytes)."""
        for server in self.endpoint.servers:
            server.close()
        for conn in [*self.conns.values(), *self.endpoint.connections]:
            if conn.transport is not None:
                conn.transport.abort()
        self.conns.clear()
        self.endpoint.connections.clear()
        self.loop.close()
        if self.store is not None:
            self.store.close()  # views a user still holds keep their pages, nothing more
        with self._pins_lock:
            self._pins.clear()
        if self.refs is not None:
            with self.refs.lock:
                self.refs.entries.clear()
        self.submitter.forget_everything()
        self.ownership.handoffs.clear()
        self.owned_actors.clear()
        if self._futures_pool is not None:
            self._futures_pool.shutdown(wait=False)

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
            return await self.agent.call(method, *args)

        return self.run_sync(go, timeout)

    def head_call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """A request to the head (cluster membership, actors), from a user thread."""

        async def go() -> Any:
            return await self.head.call(method, *args)

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
            conn.send((P.HELLO, self.address, self.kind, self.worker_id, os.getpid(), self.job_id))
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

    def send_to(self, address: str, msg: Any) -> None:
        """Send to a process by address, connecting first if needed. Any thread."""
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

    def _on_hello(self, conn: Connection, msg: list[Any]) -> None:
        _, addr, kind, worker_id, pid = msg[:5]
        conn.info.update(addr=addr, kind=kind, worker_id=worker_id, pid=pid)
        if len(msg) > 5:
            conn.info["job"] = msg[5]  # whose work comes on this connection (a driver's id)
        existing = self.conns.get(addr)
        if existing is None or existing.closed:
            self.conns[addr] = conn

    def _on_conn_closed(self, conn: Connection) -> None:
        addr = conn.info.get("addr")
        if addr and self.conns.get(addr) is conn:
            del self.conns[addr]
        if self.closed:
            return
        if conn is getattr(self, "agent", None) or conn is getattr(self, "head", None):
            self._cluster_lost(conn)
            return
        self.submitter.on_conn_closed(conn)
        if addr:
            self.refs.drop_borrower_everywhere(addr)
            self.ownership.caller_gone(addr)
            err = error_bytes(
                exc.OwnerDiedError("", f"the owner process at {addr} died or disconnected")
            )
            for e in self.refs.borrowed_from(addr):
                if e.state == PENDING:
                    self.refs.resolve(e, FAILED, KIND_ERROR, err)

    def _ping_head(self) -> None:
        """A head that is cut off or frozen closes no connection: notice its silence."""
        if self.closed or self.head.closed:
            return
        if time.monotonic() - self._head_answered > CONFIG.node_timeout_s:
            log.error("the head at %s has not answered for %g s", self.head.peer,
                      CONFIG.node_timeout_s)  # fmt: skip
            if self.head.transport is not None:
                self.head.transport.abort()  # -> _cluster_lost
            return

        def answered(f: Any) -> None:
            if not f.cancelled() and f.exception() is None:
                self._head_answered = time.monotonic()

        self.head.call("ping").add_done_callback(answered)
        self.loop.call_later(HEAD_PING_S, self._ping_head)

    def _cluster_lost(self, conn: Connection) -> None:
        """The head or our node is gone: nothing pending can finish, so fail it all now."""
        what = "head node" if conn is getattr(self, "head", None) else "node agent"
        reason = f"lost the connection to the cluster's {what} at {conn.peer}"
        if self.kind == "driver":
            log.error("%s; call nbcluster.init() to start or attach to a cluster again", reason)
        else:  # a worker goes with its node, which says why in the same log
            log.debug("%s; this worker exits", reason)
        self.lost_reason = reason
        err = error_bytes(exc.ClusterConnectionError(reason))
        with self.refs.lock:
            pending = [e for e in self.refs.entries.values() if e.state == PENDING]
        for e in pending:
            self.refs.resolve(e, FAILED, KIND_ERROR, err)
        if self.on_agent_lost:
            self.on_agent_lost()

    # -- ownership ----------------------------------------------------------------------------
    def _free_owned(self, e: Entry) -> None:
        """The last reference to an object we own is gone: free every copy."""
        if self.closed:
            return
        if ev.ENABLED:
            ev.object_freed(e.oid, e.kind)
        if e.state == READY and e.kind == KIND_STORE:
            self.send_to(e.data, (P.REQUEST, 0, "store_delete", [e.oid]))
        detached = self.owned_actors.pop(e.oid, None)
        if detached is False:  # the last handle to an actor we created is gone: it ends
            self.head.notify("terminate_actor", e.oid[:16], "its last handle is gone")
        e.contained = None
        if e.spec is not None:
            self.call_soon(self.submitter.on_return_dropped, e)

    def may_exit(self) -> bool:
        """Whether this idle worker can go without losing anything: it owns no object that
        is still referenced (here or by borrowers), no actor, and no unfinished task."""
        with self.refs.lock:
            owns = any(e.owned for e in self.refs.entries.values())
        return not (owns or self.owned_actors or self.submitter.tasks or self.ownership.handoffs)

    def _rpc_get_object(self, conn: Connection, oid: bytes) -> Any:
        e = self.refs.get(oid)
        if e is None or not e.owned:
            return [FAILED, KIND_ERROR, error_bytes(exc.ObjectLostError(oid.hex(), "freed")), 0]
        if self.submitter.dead_agents and self.submitter.lost_dep(e):
            pass  # its node died: being rebuilt, answer when it is back
        elif e.state != PENDING:
            return [e.state, e.kind, e.data, e.size]
        fut: asyncio.Future[Any] = self.loop.create_future()

        def done(e: Entry) -> None:
            def set_() -> None:
                if not fut.done():
                    fut.set_result([e.state, e.kind, e.data, e.size])

            self.call_soon(set_)

        if not self.refs.add_waiter(e, done):
            return [e.state, e.kind, e.data, e.size]
        return fut

    # -- borrowed objects -------------------------------------------------------------------
    def _fetch(self, e: Entry) -> None:
        """Ask the owner of a borrowed object for its value (once; the answer is cached)."""
        if e.fetching or e.state != PENDING:
            return
        e.fetching = True
        self.call_soon(self._start_fetch, e)

    def _start_fetch(self, e: Entry) -> None:
        async def go() -> None:
            try:
                conn = await self.connect(e.owner)
                state, kind, data, size = await conn.call("get_object", e.oid)
            except Exception as err:
                state, kind, size = FAILED, KIND_ERROR, 0
                data = error_bytes(
                    exc.OwnerDiedError(e.oid.hex(), f"cannot reach its owner {e.owner}: {err}")
                )
            self.refs.resolve(e, state, kind, data, size)

        self.loop.create_task(go())

    # -- put --------------------------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling put on an ObjectRef is not allowed")
        return self.put_serialized(ser.serialize(value, "value passed to put"))

    def put_serialized(self, s: ser.Serialized) -> ObjectRef:
        oid = put_object_id()
        e = self.refs.create_owned(oid)
        if s.contained:
            e.contained = list(s.contained)
        if s.size < CONFIG.inline_threshold:
            e.state, e.kind, e.data, e.size = READY, KIND_INLINE, s.inline(), s.size
        else:
            self.store_write(oid, s, self.address)
            e.state, e.kind, e.data, e.size = READY, KIND_STORE, self.agent_address, s.size
        if ev.ENABLED:
            ev.object_created(oid, s.size, e.data if e.kind == KIND_STORE else None)
        return ObjectRef(oid, self.address)

    def store_write(self, oid: bytes, s: ser.Serialized, owner: str) -> int:
        _, total = s.store_layout()
        offset = self.agent_call("store_create", oid, total, owner)
        if offset < 0:  # this node already holds it, byte for byte (same task, same inputs)
            return total
        assert self.store is not None
        s.write_to(self.store, offset)
        self.store.commit(offset)
        self.agent.notify("store_seal", oid)
        return total

    # -- get --------------------------------------------------------------------------------
    def get(self, refs: Any, timeout: float | None = None) -> Any:
        if isinstance(refs, ObjectRef):
            return self.get([refs], timeout)[0]
        if not isinstance(refs, (list, tuple)):
            raise TypeError(
                f"get() expects an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}"
            )
        for r in refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(f"get() expects ObjectRefs, got {type(r).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout
        entries = [self._entry(r) for r in refs]
        pending = [e for e in entries if e.state == PENDING]
        # As Ray: the first error among the objects is raised as soon as it is known, without
        # waiting for the others.
        if pending and not self.wait_entries(pending, len(pending), timeout, stop_on_error=True):
            raise self._timed_out(timeout, sum(e.state == PENDING for e in pending), len(refs))
        for e in entries:
            if e.state == FAILED:
                self.value_of(e)  # raises its error
        return [self.value_of(e, deadline) for e in entries]

    @staticmethod
    def _timed_out(timeout: float | None, waiting: int, total: int) -> exc.GetTimeoutError:
        return exc.GetTimeoutError(
            f"get timed out after {timeout} s: {waiting} of {total} objects not ready"
        )

    def _entry(self, ref: ObjectRef) -> Entry:
        e = self.refs.get(ref._id)
        if e is None:  # a ref created before this core existed (e.g. after re-init)
            self.refs.add_local(ref._id, ref._owner)
            ref._core = self
            e = self.refs.get(ref._id)
            assert e is not None
        return e

    def wait_entries(
        self,
        entries: Sequence[Entry],
        num: int,
        timeout: float | None,
        stop_on_error: bool = False,
    ) -> bool:
        """Block until ``num`` of ``entries`` are no longer pending (or, with
        ``stop_on_error``, until one of them failed); False on timeout."""
        ev = threading.Event()
        lock = threading.Lock()
        remaining = [num]

        def waiter(e: Entry) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] <= 0 or (stop_on_error and e.state == FAILED):
                    ev.set()

        registered = []
        for e in entries:
            if self.refs.add_waiter(e, waiter):
                registered.append(e)
                if not e.owned:
                    self._fetch(e)
            else:
                waiter(e)
        if not ev.is_set():
            executor = self.executor
            blocked = executor is not None and self.current_task is not None
            if blocked:
                executor.notify_blocked()
            try:
                ok = ev.wait(timeout)
            finally:
                if blocked:
                    executor.notify_unblocked()
            if not ok:
                for e in registered:
                    self.refs.remove_waiter(e, waiter)
                return False
        return True

    def value_of(self, e: Entry, deadline: float | None = None, _recover: bool = True) -> Any:
        """The value of a settled entry (raising its error); ``deadline`` bounds the reads
        from the store, which may pull the object from another node or rebuild it."""
        if e.state == FAILED:
            err = pickle.loads(e.data) if e.data else exc.ObjectLostError(e.oid.hex(), "freed")
            if isinstance(err, exc.TaskError):
                raise err.as_instanceof_cause()
            raise err
        refs = self.refs
        outer = refs.start_collecting()  # refs inside the value: we are to borrow them
        try:
            if e.kind == KIND_INLINE:
                return ser.deserialize_inline(e.data)
            return self.store_read(e.oid, e.data, deadline)
        except exc.ObjectLostError:
            if not _recover:
                raise
        finally:
            fresh = refs.stop_collecting(outer)
            if fresh:
                self.ownership.held_until_registered(fresh, e)
        # Every copy is gone: the owner rebuilds it from lineage (a borrower asks the owner).
        if e.owned:
            self.call_soon(self.submitter.reconstruct, e)
        else:
            self.call_soon(self._refetch, e)
        self._wait_changed(e, deadline)
        return self.value_of(e, deadline, _recover=False)

    def _refetch(self, e: Entry) -> None:
        self.refs.reset_pending(e)
        self._fetch(e)

    def _wait_changed(self, e: Entry, deadline: float | None) -> None:
        """Wait until ``e`` went pending and then resolved again (or failed)."""
        done = threading.Event()

        def check() -> None:
            if e.state == PENDING and self.refs.add_waiter(e, lambda _: done.set()):
                return
            done.set()

        self.call_soon(check)  # runs after the reconstruct/refetch queued before it
        if not done.wait(_left(deadline)):
            raise exc.GetTimeoutError("get timed out while the object was being rebuilt")

    def store_read(self, oid: bytes, location: str | None = None,
                   deadline: float | None = None) -> Any:  # fmt: skip
        """Read an object from this node's store, zero-copy; pinned while a view lives.

        ``location`` is the agent of the node holding it; if that is another node, our agent
        pulls a copy first, within ``deadline`` (``GetTimeoutError`` past it).
        """
        assert self.store is not None
        with self._pins_lock:
            pin = self._pins.get(oid)
            if pin is not None:
                pin[2] += 1
        if pin is None:
            got = self._store_open(oid, location, deadline)
            if got is None:
                raise exc.ObjectLostError(oid.hex(), "it is no longer in the object store")
            with self._pins_lock:
                pin = self._pins.get(oid)
                if pin is None:
                    pin = self._pins[oid] = [got[0], got[1], 1]
                else:  # another thread opened it meanwhile: keep one agent pin
                    pin[2] += 1
                    self.agent.notify("store_release", oid)
        view, exporter = self.store.exported(pin[0], pin[1])
        try:
            value, buffers = ser.deserialize_store(view)
        except BaseException:
            self._unpin(oid)
            raise
        del view
        if buffers:  # the value reads the store in place: pinned until the last reader goes
            del buffers
            weakref.finalize(exporter, self._release_pin, oid)
        else:
            self._unpin(oid)
        return value

    def _store_open(self, oid: bytes, location: str | None, deadline: float | None) -> Any:
        """Ask our agent to pin ``oid`` (pulling it here first if need be). A caller that
        gives up at its deadline leaves no pin behind: an answer that comes later is
        released at once."""
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:
            def done(f: asyncio.Future[Any]) -> None:
                got = None if f.cancelled() or f.exception() is not None else f.result()
                if not answer.set_running_or_notify_cancel():  # the reader gave up
                    if got is not None:
                        self.agent.notify("store_release", oid)
                    return
                if f.cancelled() or f.exception() is not None:
                    answer.set_exception(
                        exc.ObjectLostError(oid.hex(), str(f.exception() or "cancelled"))
                    )
                else:
                    answer.set_result(got)

            self.agent.call("store_open", oid, location).add_done_callback(done)

        self.call_soon(start)
        try:
            return answer.result(_left(deadline))
        except concurrent.futures.TimeoutError:
            if answer.cancel():
                raise exc.GetTimeoutError(
                    f"get timed out reading object {oid.hex()} (fetching it from {location})"
                ) from None
            return answer.result()

    def _unpin(self, oid: bytes) -> None:
        with self._pins_lock:
            pin = self._pins.get(oid)
            if pin is None:
                return
            pin[2] -= 1
            if pin[2] > 0:
                return
            del self._pins[oid]
        if not self.closed:
            self.agent.notify("store_release", oid)

    # -- releases from finalizers -------------------------------------------------------------
    def release_ref(self, oid: bytes) -> None:
        """An ObjectRef died. The garbage collector may call this on any thread, even one
        holding the reference table's lock (the I/O thread, say): so it only appends to a
        lock-free queue that the loop applies."""
        self._dropped_refs.append(oid)
        if not self._release_scheduled:
            self._release_scheduled = True
            self._schedule_releases()

    def _release_pin(self, oid: bytes) -> None:
        """The last zero-copy view of ``oid`` died (a finalizer): as ``release_ref``."""
        self._dropped_pins.append(oid)
        if not self._release_scheduled:
            self._release_scheduled = True
            self._schedule_releases()

    def _schedule_releases(self) -> None:
        try:
            if self.on_loop():
                self.loop.call_soon(self._apply_releases)
            else:
                self.loop.call_soon_threadsafe(self._apply_releases)
        except RuntimeError:  # the loop is closed: this process left the cluster
            pass

    def _apply_releases(self) -> None:
        self._release_scheduled = False  # before draining: a later append schedules again
        refs, pins = self._dropped_refs, self._dropped_pins
        while refs:
            self.refs.remove_local(refs.popleft())
        while pins:
            self._unpin(pins.popleft())

    # -- wait -------------------------------------------------------------------------------
    def wait(
        self, refs: Sequence[ObjectRef], num_returns: int, timeout: float | None
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        # Ray's rules, in Ray's order and words.
        if isinstance(refs, ObjectRef):
            raise TypeError(f"wait() expected a list of ObjectRef, got a single ObjectRef {refs}")
        if not isinstance(refs, list):
            raise TypeError(f"wait() expected a list of ObjectRef, got {type(refs)}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
        for r in refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(
                    f"wait() expected a list of ObjectRef, got list containing {type(r)}"
                )
        if not refs:
            return [], []
        if len(set(refs)) != len(refs):
            raise ValueError("Wait requires a list of unique ObjectRefs.")
        if num_returns <= 0:
            raise ValueError(f"Invalid number of objects to return {num_returns}.")
        if num_returns > len(refs):
            raise ValueError(
                "num_returns cannot be greater than the number of ObjectRefs provided to wait."
            )
        entries = [self._entry(r) for r in refs]
        pending = [e for e in entries if e.state == PENDING]
        need = num_returns - (len(entries) - len(pending))
        if need > 0:
            self.wait_entries(pending, need, timeout)
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for r, e in zip(refs, entries, strict=False):
            if e.state != PENDING and len(ready) < num_returns:
                ready.append(r)
            else:
                not_ready.append(r)
        return ready, not_ready

    def _resolver(self) -> concurrent.futures.ThreadPoolExecutor:
        """The few threads that turn ready objects into values for futures (``await ref``):
        a thread each would be thousands in a burst."""
        pool = self._futures_pool
        if pool is None:
            with self._pins_lock:
                if self._futures_pool is None:
                    self._futures_pool = concurrent.futures.ThreadPoolExecutor(
                        FUTURE_THREADS, thread_name_prefix="nbcluster-future"
                    )
                pool = self._futures_pool
        return pool

    def future_of(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        e = self._entry(ref)

        def done(_: Entry) -> None:
            try:
                fut.set_result(self.value_of(e))
            except BaseException as err:
                fut.set_exception(err)
            finally:
                del holder[:]  # the ref lived until the value was taken

        holder = [ref]  # keep the object alive while only this future refers to it

        def in_thread(e2: Entry) -> None:  # (reading the value may block: not on the loop)
            try:
                self._resolver().submit(done, e2)
            except RuntimeError:  # shut down meanwhile
                fut.set_exception(exc.ClusterConnectionError("nbcluster was shut down"))

        if self.refs.add_waiter(e, in_thread):
            if not e.owned:
                self._fetch(e)
        else:
            done(e)
        return fut

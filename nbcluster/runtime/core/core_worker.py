"""The core library every nbcluster process runs: drivers and workers alike.

It owns the process's event loop thread, its server (other processes reach it to borrow
objects it owns and to push it tasks), its connection to the local node agent, the reference
table, the task submitter and the reading/writing of the node's shared-memory store.

User threads call ``get``/``put``/``submit`` directly; they touch the reference table under its
lock and hand I/O to the loop thread with one wake-up per burst, never a round trip per call.

``CoreWorker`` is the process's one instance: it starts and stops the loop thread, registers
with its node, and composes the parts, each in a module of its own:

- ``connections``: the loop thread's helpers, connections to peers, the agent and the head;
- ``object_api``: ``put``, ``get``, ``wait``, values and futures of ObjectRefs;
- ``store_reader``: zero-copy reads from the node's store and their pins;
- ``release_queue``: releases from finalizers (ObjectRefs, views), applied on the loop;
- ``owned_objects``: freeing owned objects, answering borrowers, asking owners;
- ``borrowing``: registering borrowers with owners; ``submit.submitter``: tasks.

Other modules call the parts through the names bound here (``core.get``, ``core.call_soon``,
``core.store_read``...), so a caller does not depend on which part implements them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from nbcluster import exceptions as exc
from nbcluster.runtime.core import event_shipping, exposure
from nbcluster.runtime.core.borrowing import Ownership
from nbcluster.runtime.core.connections import Connections
from nbcluster.runtime.core.object_api import ObjectAPI
from nbcluster.runtime.core.owned_objects import OwnedObjects
from nbcluster.runtime.core.release_queue import ReleaseQueue
from nbcluster.runtime.core.store_reader import StoreReader
from nbcluster.runtime.ids import random_id
from nbcluster.runtime.objects.remote_store import RemoteStore
from nbcluster.runtime.objects.serialization import error_bytes
from nbcluster.runtime.objects.store_client import StoreMapping
from nbcluster.runtime.ownership import object_ref as object_ref_mod
from nbcluster.runtime.ownership.reference_table import ReferenceTable
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.addresses import route_to
from nbcluster.runtime.wire.transport import Endpoint, install_rpc, parse_address

__all__ = ["CoreWorker"]

log = logging.getLogger("nbcluster.core")

# Per thread and per asyncio task, so concurrent actor calls each see their own task.
_CURRENT_TASK: contextvars.ContextVar[Any] = contextvars.ContextVar("nbcluster_task", default=None)


class CoreWorker:
    """The core worker of this process (one per driver or worker): its identity, its loop
    thread and the parts that run on it; ``start`` joins the node, ``shutdown`` leaves."""

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
        self.address = ""
        self.node_id = ""
        self.node_info: dict[str, Any] = {}
        self.store: StoreMapping | None = None
        #: No node on this machine: objects' bytes go through the agent (``remote_store``).
        self.client_mode = False
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
        self.on_agent_lost: Callable[[], None] | None = None
        self.lost_reason: str | None = None

        # The parts, and the names other modules call them by.
        io = self.connections = Connections(self)
        self.conns = io.conns
        self.on_loop = io.on_loop
        self.call_soon = io.call_soon
        self.run_sync = io.run_sync
        self.agent_call = io.agent_call
        self.head_call = io.head_call
        self.connect = io.connect
        self.send_to = io.send_to
        self.store_reader = StoreReader(self)
        self.store_read = self.store_reader.read
        self.releases = ReleaseQueue(self)
        self.release_ref = self.releases.release_ref  # ObjectRef.__del__
        self.owned = OwnedObjects(self)
        self.fetch = self.owned.fetch
        self.may_exit = self.owned.may_exit
        objects = self.objects = ObjectAPI(self)
        self.put = objects.put
        self.put_serialized = objects.put_serialized
        self.store_write = objects.store_write
        self.get = objects.get
        self.wait = objects.wait
        self.wait_entries = objects.wait_entries
        self.block_on = objects.block_on
        self.value_of = objects.value_of
        self.future_of = objects.future_of
        self.entry_of = objects.entry_of

        # The one import up a layer (tests/test_layers.py allows it): the core builds its
        # process's submitter and routes task replies to it; the submitter uses the core.
        from nbcluster.runtime.submit.submitter import Submitter

        self.refs: ReferenceTable = None  # type: ignore[assignment]
        self.submitter = Submitter(self)
        self.ownership = Ownership(self)
        self.endpoint.on(P.TaskDone, self.submitter.on_task_done)
        self.endpoint.on(P.TaskRequeue, self.submitter.on_requeue)
        self.endpoint.on(P.Output, self.submitter.on_output)
        self.endpoint.on(P.GeneratorItem, self.submitter.on_generator_item)
        self.endpoint.rpc["listen_also"] = lambda conn, hosts: exposure.listen_also(self, hosts)
        self.endpoint.rpc["node_dead"] = lambda conn, addr: self.submitter.on_node_dead(addr)
        self.endpoint.rpc["leases_wanted"] = lambda conn: self.submitter.on_leases_wanted()
        self.endpoint.rpc["lease_queued"] = lambda conn, token: self.submitter.on_lease_queued(
            token
        )
        self.endpoint.rpc["worker_oom"] = lambda conn, wid, why: self.submitter.on_worker_oom(
            wid, why
        )
        self.endpoint.rpc["workers_capped"] = self.submitter.on_workers_capped

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
            local = await self.connections.local_node()
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
            self.address, self.owned.free, self.ownership.register_directly,
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
            self.connections.start_head_ping()
        event_shipping.start(self)  # ship this process's events to the head

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
        self.store_reader.forget()
        if self.refs is not None:
            gone = exc.ClusterConnectionError("nbcluster was shut down before the object was ready")
            self.refs.fail_pending(error_bytes(gone))
            with self.refs.lock:
                self.refs.entries.clear()
        self.submitter.forget_everything()
        self.ownership.handoffs.clear()
        self.owned_actors.clear()
        self.objects.stop_futures()

"""The node agent's object-store service: the RPCs clients use, and transfers between nodes.

Clients on the node create, seal, open (pin), release and delete objects through these calls
and touch the bytes themselves in the shared arena. Opening an object that lives on another
node first pulls it into this node's store (see ``transfer``); the node that served it
remembers the copy, so freeing the original frees every copy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from nbcluster.runtime.objects.object_store import ObjectStore
from nbcluster.runtime.objects.store_client import StoreMapping
from nbcluster.runtime.objects.transfer import Puller, TransferServer
from nbcluster.runtime.wire.transport import Connection, Endpoint

log = logging.getLogger("nbcluster.store")


class StoreService:
    def __init__(
        self, endpoint: Endpoint, store: ObjectStore, host: str, address: str, token: str
    ) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.store = store
        self.address = address
        self.arena = StoreMapping(store.path, store.capacity)
        self.server = TransferServer(host, token, self._open_for_transfer)
        connect_host = address.rpartition(":")[0]
        self.transfer_address = f"{connect_host}:{self.server.port}"
        self.puller = Puller(token)
        #: agent address -> transfer address of every live node (from the cluster view)
        self.transfer_of: dict[str, str] = {}
        #: objects we pulled: oid -> the agent that holds the original
        self.copies: dict[bytes, str] = {}
        #: objects others pulled from us: oid -> their agent addresses
        self.copied_to: dict[bytes, set[str]] = {}
        self.send_to_agent: Callable[[str, str, list[Any]], None] = lambda a, m, args: None
        self._seal_waiters: dict[bytes, list[asyncio.Future[Any]]] = {}
        self._xfer_ids = itertools.count()
        for name in (
            "store_create", "store_seal", "store_open", "store_release", "store_delete",
            "store_stats", "store_objects", "store_copied",
        ):  # fmt: skip
            endpoint.rpc[name] = getattr(self, name)

    # -- local clients ------------------------------------------------------------------------
    def store_create(self, conn: Connection, oid: bytes, size: int, owner: str) -> int:
        """Room for a new object, or -1 when this node already holds it sealed: a copy pulled
        here (a task re-run from lineage lands where its lost result had been pulled to), or
        the result an earlier attempt of the same task stored before its worker died."""
        if self.store.contains(oid):
            probe = ("create", oid)
            if self.store.open(oid, probe) is not None:  # sealed: a copy, or an earlier
                self.store.release(oid, probe)  # attempt's complete result: keep it
                self.copies.pop(oid, None)
                return -1
            with contextlib.suppress(ValueError):  # (a deleted object still being read stays)
                self.store.abort(oid)  # half written by an attempt that died: start over
        return self.store.create(oid, size, owner, creator=conn)

    def store_seal(self, conn: Connection | None, oid: bytes) -> None:
        self.store.seal(oid)
        for fut in self._seal_waiters.pop(oid, []):
            if not fut.done():
                fut.set_result(None)

    def store_open(self, conn: Connection, oid: bytes, location: str | None = None) -> Any:
        """Pin and locate an object for a reader on this node, pulling it here if needed."""
        got = self.store.open(oid, conn)
        if got is not None:
            return list(got)
        if self.store.contains(oid):  # being written (or pulled): wait for its seal
            return self._after_seal(conn, oid)
        if not location or location == self.address:
            return None
        source = self.transfer_of.get(location)
        if source is None:
            raise LookupError(f"the node at {location} holding the object is not alive")
        self._pull(oid, location, source)
        return self._after_seal(conn, oid)

    def _after_seal(self, conn: Connection, oid: bytes) -> Any:
        fut: asyncio.Future[Any] = self.loop.create_future()
        self._seal_waiters.setdefault(oid, []).append(fut)

        async def opened() -> Any:
            await fut
            again = self.store.open(oid, conn)
            return list(again) if again is not None else None

        return opened()

    def store_release(self, conn: Connection, oid: bytes) -> None:
        self.store.release(oid, conn)

    def store_delete(self, conn: Connection | None, oid: bytes) -> None:
        self.store.delete(oid)
        self.copies.pop(oid, None)
        for agent in self.copied_to.pop(oid, ()):
            self.send_to_agent(agent, "store_delete", [oid])

    def store_copied(self, conn: Connection, oid: bytes, agent: str) -> None:
        """Another node pulled ``oid`` from us: free its copy when ours is freed."""
        if self.store.contains(oid):
            self.copied_to.setdefault(oid, set()).add(agent)
        else:
            self.send_to_agent(agent, "store_delete", [oid])

    def store_stats(self, conn: Connection | None) -> Any:
        st = self.store.stats()
        return {k: getattr(st, k) for k in st.__dataclass_fields__}

    def store_objects(self, conn: Connection | None) -> Any:
        return [
            {"oid": o.oid.hex(), "size": o.size, "owner": str(o.owner), "pins": o.pins,
             "spilled": o.spilled, "sealed": o.sealed}
            for o in self.store.object_info()
        ]  # fmt: skip

    def client_gone(self, conn: Connection, owner_addr: str | None) -> None:
        self.store.release_reader(conn)  # also aborts what it was still writing
        for oid in [o for o in self._seal_waiters if not self.store.contains(o)]:
            for fut in self._seal_waiters.pop(oid):
                if not fut.done():
                    fut.set_result(None)  # never sealed: readers see it as lost
        if owner_addr:
            for oid in self.store.delete_owned_by(owner_addr):
                for agent in self.copied_to.pop(oid, ()):
                    self.send_to_agent(agent, "store_delete", [oid])

    # -- between nodes ------------------------------------------------------------------------
    def _on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the agent's loop from a transfer thread and wait for its result."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def go() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(go)
        return fut.result()

    def _open_for_transfer(self, oid: bytes) -> Any:
        reader = ("transfer", next(self._xfer_ids))
        got = asyncio.run_coroutine_threadsafe(self._open_sealed(oid, reader), self.loop).result()
        if got is None:
            return None
        offset, size = got
        return self.arena.readonly(offset, size), lambda: self.loop.call_soon_threadsafe(
            self.store.release, oid, reader
        )

    async def _open_sealed(self, oid: bytes, reader: object) -> Any:
        """Open for a transfer; an object still being written is served once sealed (a ref
        can reach another node before its writer's seal reaches us)."""
        got = self.store.open(oid, reader)
        if got is None and self.store.contains(oid):
            fut: asyncio.Future[Any] = self.loop.create_future()
            self._seal_waiters.setdefault(oid, []).append(fut)
            await fut
            got = self.store.open(oid, reader)
        return got

    def nodes_gone(self, agents: list[str]) -> None:
        """Nodes were declared dead: pulls from them fail now (they may be frozen, not
        closed), so their readers move on to a rebuilt copy."""
        for agent in agents:
            source = self.transfer_of.get(agent)
            if source is not None:
                self.puller.abort(source)

    def _pull(self, oid: bytes, location: str, source: str) -> None:
        created = []

        def allocate(size: int) -> memoryview:
            offset = self._on_loop(self.store.create, oid, size, ("copy", location))
            created.append(True)
            return self.arena.writable(offset, size)

        def done(err: BaseException | None) -> None:
            self.loop.call_soon_threadsafe(self._pulled, oid, location, err, bool(created))

        self.puller.pull(oid, source, allocate, done)

    def _pulled(self, oid: bytes, location: str, err: BaseException | None, created: bool) -> None:
        if err is None:
            self.copies[oid] = location
            self.store_seal(None, oid)
            self.send_to_agent(location, "store_copied", [oid, self.address])
            return
        log.warning("pulling object %s from %s failed: %s", oid.hex()[:12], location, err)
        if created:
            self.store.abort(oid)
        for fut in self._seal_waiters.pop(oid, []):
            if not fut.done():
                fut.set_exception(err)

    def close(self) -> None:
        self.server.close()
        self.arena.close()

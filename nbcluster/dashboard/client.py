"""A web server's connection to one cluster's head, on the web server's own event loop.

The dashboard's servers (the head's own and the jupyter-server extension) talk to a cluster
the way any nbcluster process does: over an authenticated connection, with the state API's
requests (``state_list``, ``dash_overview``...). The extension never imports anything from
the kernel's environment, so a kernel from another virtualenv, with the same protocol
version, is read the same way.

One connection answers requests; each live event feed (a browser's WebSocket) gets its own,
so a flood of events never delays a table's answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from nbcluster.exceptions import ClusterConnectionError
from nbcluster.runtime.wire.transport import Connection, Endpoint, install_rpc, parse_address

#: Seconds a request to a head may take before the page is told it timed out.
CALL_TIMEOUT_S = 10.0
#: Seconds to connect to a head (it is on this machine or close by).
CONNECT_TIMEOUT_S = 3.0

BatchCallback = Callable[[int, list[Any], bytes], None]
LostCallback = Callable[[int, int], None]


class Subscription:
    """A head pushing its event batches to ``on_batch``; ``on_close`` when it ends."""

    def __init__(
        self, on_batch: BatchCallback, on_lost: LostCallback, on_close: Callable[[], None]
    ) -> None:
        self.on_batch = on_batch
        self.on_lost = on_lost
        self.on_close = on_close
        self.conn: Connection | None = None
        self.closed = False
        #: the head's answer: {"next_seq", "oldest_seq"}
        self.reply: dict[str, Any] = {}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self._ended()

    def _ended(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_close()


class ClusterClient:
    """Requests to one cluster's head. Create and use it on the event loop's thread."""

    def __init__(self, address: str, token: str) -> None:
        self.address = address
        self.loop = asyncio.get_running_loop()
        self.endpoint = Endpoint(self.loop, token)
        self.endpoint.loop_thread = threading.get_ident()
        install_rpc(self.endpoint)
        self._subs: dict[Connection, Subscription] = {}
        self.endpoint.rpc["event_batch"] = self._on_batch
        self.endpoint.rpc["events_lost"] = self._on_lost
        self.endpoint.on_close = self._on_close
        self._conn: Connection | None = None
        self._connecting: asyncio.Future[Connection] | None = None
        self.closed = False

    async def _connect(self) -> Connection:
        if self.closed:
            raise ClusterConnectionError(f"the client of {self.address} is closed")
        host, port = parse_address(self.address)
        return await self.endpoint.connect(host, port, timeout=CONNECT_TIMEOUT_S)

    async def connection(self) -> Connection:
        """The request connection, opened (again) when needed; concurrent callers share one."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        fut = self._connecting
        try:
            conn = await asyncio.shield(fut)
        finally:
            if self._connecting is fut and fut.done():
                self._connecting = None
        self._conn = conn
        return conn

    async def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """One request to the head; raises ``ClusterConnectionError`` if it cannot be reached
        and ``asyncio.TimeoutError`` if it does not answer in ``timeout`` seconds."""
        conn = await self.connection()
        return await asyncio.wait_for(conn.call(method, *args), timeout)

    async def subscribe(
        self,
        from_seq: int | None,
        on_batch: BatchCallback,
        on_lost: LostCallback,
        on_close: Callable[[], None],
    ) -> Subscription:
        """Have the head push its events (from ``from_seq``; None: new ones only) on a
        connection of their own. Returns once the head has accepted."""
        sub = Subscription(on_batch, on_lost, on_close)
        conn = await self._connect()
        sub.conn = conn
        self._subs[conn] = sub
        try:
            sub.reply = await asyncio.wait_for(
                conn.call("subscribe_events", from_seq), CALL_TIMEOUT_S
            )
        except BaseException:
            self._subs.pop(conn, None)
            conn.close()
            raise
        return sub

    def _on_batch(self, conn: Connection, first: int, header: list[Any], blob: bytes) -> None:
        sub = self._subs.get(conn)
        if sub is not None and not sub.closed:
            sub.on_batch(first, header, blob)

    def _on_lost(self, conn: Connection, first: int, upto: int) -> None:
        sub = self._subs.get(conn)
        if sub is not None and not sub.closed:
            sub.on_lost(first, upto)

    def _on_close(self, conn: Connection) -> None:
        sub = self._subs.pop(conn, None)
        if sub is not None:
            sub._ended()

    def close(self) -> None:
        self.closed = True
        if self._conn is not None:
            self._conn.close()
        for sub in list(self._subs.values()):
            sub.close()
        self._subs.clear()

"""Opening a loopback cluster to the network, without restarting it.

A notebook's cluster starts on loopback: nothing of it is reachable from the network. When a
node on another machine is added, every process on the head's machine — the head node, nodes
the ``local`` launcher started there, their workers, the driver — also listens on the address
of the interface that routes to the new node's machine, on the port it already has. The
addresses they advertise (``127.0.0.1:PORT``) stay what they are, so nothing already handed
out (ObjectRef owners, leases, the cluster view) changes; a process on another machine dials a
loopback address at the head machine's address instead (``addresses.dial_host``). Every
connection still has to prove it holds the cluster token.

Who opens what:

* ``expose_head(host)`` (a driver asks the head): the head node listens on ``host`` too, tells
  its clients, and tells every other loopback node, which does the same with its own;
* a loopback node that joins later is told at once (``join``);
* a process that registers with its node later learns it from the registration reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nbcluster.runtime.wire.addresses import is_loopback, set_loopback_alias
from nbcluster.runtime.wire.transport import Connection, Endpoint, tls_server_args

log = logging.getLogger("nbcluster.exposure")

#: How long opening waits for each process on the machine to confirm.
CONFIRM_TIMEOUT_S = 10.0


# -- any process with a CoreWorker (drivers, workers) ------------------------------------------
async def on_registered(core: Any, info: dict[str, Any]) -> None:
    """Apply what the node said at registration."""
    if info.get("loopback_alias"):
        set_loopback_alias(info["loopback_alias"])
    await listen_also(core, info.get("listen_also") or [])


async def listen_also(core: Any, hosts: list[str]) -> list[str]:
    """Serve on each of ``hosts`` too, on the port this process already listens on."""
    opened: set[str] = core.listening_also
    for host in hosts:
        if host in opened:
            continue
        try:
            await core.endpoint.serve(host, core.port)
        except OSError as e:
            log.error("cannot also listen on %s:%d: %s", host, core.port, e)
            raise
        opened.add(host)
    return sorted(opened)


# -- a node process ------------------------------------------------------------------------------
class NodeExposure:
    """A node's side: its agent server, its store's transfer server and its clients."""

    def __init__(self, endpoint: Endpoint, agent: Any, store: Any, port: int) -> None:
        self.endpoint = endpoint
        self.agent = agent
        self.store = store
        self.port = port
        endpoint.rpc["listen_also"] = self.listen_also

    async def listen_also(self, conn: Connection | None, hosts: list[str]) -> list[str]:
        new = [h for h in hosts if h not in self.agent.listen_also]
        for host in new:
            await self.endpoint.loop.create_server(
                lambda: Connection(self.endpoint, True), host, self.port, **tls_server_args()
            )
            self.store.server.listen_also(host)
            self.agent.listen_also.append(host)
            log.warning("this node now also listens on %s (port %d)", host, self.port)
        if new:
            clients = [c for c in self.agent.clients if not c.closed]
            await _confirm([c.call("listen_also", new) for c in clients], "a process")
        return list(self.agent.listen_also)


class HeadExposure:
    """The head's side: ``expose_head`` opens the head's machine to ``host``'s network."""

    def __init__(self, endpoint: Endpoint, node: NodeExposure, nodes: Callable[[], Any]) -> None:
        self.node = node
        self.nodes = nodes  # the live NodeRecords
        endpoint.rpc["expose_head"] = self.expose_head

    @property
    def hosts(self) -> list[str]:
        return list(self.node.agent.listen_also)

    async def expose_head(self, conn: Connection | None, host: str) -> list[str]:
        await self.node.listen_also(None, [host])
        others = [
            rec.conn
            for rec in self.nodes()
            if rec.alive and rec.conn is not None and is_loopback(rec.host)
        ]
        await _confirm([c.call("listen_also", [host]) for c in others], "a node")
        return self.hosts

    def tell_joining(self, conn: Connection, address: str) -> None:
        """A loopback node joined: it listens where the head's machine does."""
        if self.hosts and is_loopback(address.rpartition(":")[0]):
            conn.notify("listen_also", self.hosts)


async def _confirm(calls: list[asyncio.Future[Any]], what: str) -> None:
    if not calls:
        return
    try:
        done = await asyncio.wait_for(
            asyncio.gather(*calls, return_exceptions=True), CONFIRM_TIMEOUT_S
        )
    except asyncio.TimeoutError:
        log.warning("%s did not confirm it listens on the new address", what)
        return
    for result in done:
        if isinstance(result, BaseException):
            log.warning("%s could not listen on the new address: %s", what, result)

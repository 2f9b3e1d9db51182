"""The head's view of the cluster: which nodes exist, what they offer, whether they live.

Each node agent registers with the head and then reports its free resources when they change
and in a heartbeat every second. A node silent for ``node_timeout_s`` is declared dead. The
head pushes the resulting *view* (every node's address, total and free resources) to every
agent, so an agent can send a lease request it cannot serve to a node that can, without
asking the head on the task path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.wire.transport import Connection, Endpoint

log = logging.getLogger("nbcluster.nodes")

HEARTBEAT_S = 1.0


class NodeRecord:
    __slots__ = (
        "address", "alive", "available", "conn", "death", "draining", "host", "labels",
        "last_seen", "limits", "node_id", "resources", "started", "store_capacity", "transfer",
    )  # fmt: skip

    def __init__(self, node_id: str, info: dict[str, Any], conn: Connection | None) -> None:
        self.node_id = node_id
        self.address: str = info["address"]
        self.host = self.address.rpartition(":")[0]
        self.resources: dict[str, float] = dict(info["resources"])
        self.available: dict[str, float] = dict(info["resources"])
        self.store_capacity: int = info.get("store_capacity", 0)
        self.transfer: str = info.get("transfer", "")
        self.conn = conn
        #: e.g. {"nbcluster.io/group": "local-1"}: the node group a launcher started it for
        self.labels: dict[str, str] = dict(info.get("labels") or {})
        #: what limits the node besides the machine's size (``limits.Limits.applied``)
        self.limits: dict[str, Any] = dict(info.get("limits") or {})
        #: being removed: other nodes stop sending it work (see ``view``)
        self.draining = False
        self.alive = True
        self.death = ""
        self.last_seen = time.monotonic()
        self.started = time.time()

    def public(self) -> dict[str, Any]:
        """One entry of ``nodes()``, with Ray's field names."""
        return {
            "NodeID": self.node_id,
            "Alive": self.alive,
            "NodeManagerAddress": self.host,
            "NodeManagerPort": int(self.address.rpartition(":")[2]),
            "Address": self.address,
            "Resources": dict(self.resources),
            "Available": dict(self.available),
            "ObjectStoreCapacity": self.store_capacity,
            "DeathReason": self.death,
            "Labels": dict(self.labels),
            "Limits": dict(self.limits),
            "Draining": self.draining,
        }

    def view(self) -> dict[str, Any]:
        # A draining node offers nothing, so no other node spills work to it; its own
        # agent still runs what its workers submit, and hard NodeAffinity still finds it.
        return {
            "address": self.address,
            "transfer": self.transfer,
            "total": {} if self.draining else self.resources,
            "available": {} if self.draining else self.available,
        }


class NodeDirectory:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.nodes: dict[str, NodeRecord] = {}
        self.by_conn: dict[Connection, NodeRecord] = {}
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # in-process agents
        self.on_node_dead: list[Callable[[NodeRecord], None]] = []
        self._push_scheduled = False
        for name in ("register_node", "node_update", "get_nodes", "cluster_view", "drain_node",
                     "stop_node"):  # fmt: skip
            endpoint.rpc[name] = getattr(self, name)
        self.loop.call_later(HEARTBEAT_S, self._check)

    # -- RPCs ---------------------------------------------------------------------------------
    def register_node(self, conn: Connection | None, node_id: str, info: dict[str, Any]) -> Any:
        rec = NodeRecord(node_id, info, conn)
        self.nodes[node_id] = rec
        if conn is not None:
            self.by_conn[conn] = rec
        log.info("node %s joined at %s with %s", node_id[:8], rec.address, rec.resources)
        ev.emit(ev.NODE_JOINED, node_id, rec.address, rec.resources, rec.store_capacity)
        self._changed()
        return self.view()

    def node_update(
        self, conn: Connection | None, node_id: str, available: dict[str, float]
    ) -> None:
        rec = self.nodes.get(node_id)
        if rec is None:
            return
        rec.last_seen = time.monotonic()
        if not rec.alive:
            return
        if rec.available != available:
            rec.available = dict(available)
            self._changed()

    def drain_node(self, conn: Connection | None, node_id: str) -> bool:
        """Send no more work to this node: it is about to be removed. False if not alive."""
        rec = self.nodes.get(node_id)
        if rec is None or not rec.alive:
            return False
        rec.draining = True
        self._changed()
        return True

    def stop_node(self, conn: Connection | None, node_id: str) -> bool:
        """Ask a node that joined to stop cleanly (its group is being removed)."""
        rec = self.nodes.get(node_id)
        if rec is None or not rec.alive or rec.conn is None or rec.conn.closed:
            return False
        rec.conn.notify("leave")
        return True

    def get_nodes(self, conn: Connection | None) -> Any:
        return [rec.public() for rec in self.nodes.values()]

    def cluster_view(self, conn: Connection | None) -> Any:
        return self.view()

    def view(self) -> dict[str, Any]:
        return {nid: rec.view() for nid, rec in self.nodes.items() if rec.alive}

    def totals(self) -> tuple[dict[str, float], dict[str, float]]:
        total: dict[str, float] = {}
        avail: dict[str, float] = {}
        for rec in self.nodes.values():
            if not rec.alive:
                continue
            for k, v in rec.resources.items():
                total[k] = total.get(k, 0.0) + v
            for k, v in rec.available.items():
                avail[k] = avail.get(k, 0.0) + max(0.0, v)
        return total, avail

    # -- liveness -----------------------------------------------------------------------------
    def on_close(self, conn: Connection) -> None:
        rec = self.by_conn.pop(conn, None)
        if rec is not None and rec.alive:
            self._declare_dead(rec, "its connection to the head closed")

    def _check(self) -> None:
        now = time.monotonic()
        for rec in list(self.nodes.values()):
            if rec.alive and rec.conn is not None and now - rec.last_seen > CONFIG.node_timeout_s:
                self._declare_dead(rec, f"no heartbeat for {CONFIG.node_timeout_s:g} s")
                rec.conn.close()
        self.loop.call_later(HEARTBEAT_S, self._check)

    def _declare_dead(self, rec: NodeRecord, why: str) -> None:
        rec.alive = False
        rec.death = why
        rec.available = {}
        ev.emit(ev.NODE_DEAD, rec.node_id, why)
        log.warning("node %s at %s is dead: %s", rec.node_id[:8], rec.address, why)
        for fn in self.on_node_dead:
            fn(rec)
        self._changed()

    # -- pushing the view ---------------------------------------------------------------------
    def _changed(self) -> None:
        if not self._push_scheduled:
            self._push_scheduled = True
            self.loop.call_later(0.02, self._push)

    def _push(self) -> None:
        self._push_scheduled = False
        view = self.view()
        for fn in self.listeners:
            fn(view)
        for rec in self.nodes.values():
            if rec.alive and rec.conn is not None and not rec.conn.closed:
                rec.conn.notify("cluster_view_update", view)

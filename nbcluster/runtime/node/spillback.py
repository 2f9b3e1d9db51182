"""The cluster as this node sees it, and which lease requests belong on another node.

A request this node cannot serve well is *spilled back*: the answer names another node's
agent (chosen from the head's view, see ``placement``) and the owner asks there instead.
The view also moves requests already waiting here: to a node that joined and can serve what
this one never could, or to one with resources free now while this one has none.
"""

from __future__ import annotations

import collections
import time
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.scheduling.placement import route
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.node.leases import LeaseRequest

#: How long requests sent to another node count against its free resources (its report,
#: sent on change and every second, shows them by then).
OFFLOAD_MEMORY_S = 2.0


class Spillback:
    """The head's view of every live node, pushed on change, and the routing it informs."""

    def __init__(
        self, node_id: str, total: dict[str, float], available: dict[str, float]
    ) -> None:
        self.node_id = node_id
        #: this node's resources, in all and free now (the lease table's; read here only)
        self.total = total
        self.available = available
        #: node id -> {"address", "transfer", "total", "available"} of every live node
        self.view: dict[str, dict[str, Any]] = {}
        #: node id -> (when, resources) of waiting requests recently sent there
        self._offloaded: dict[str, tuple[float, dict[str, float]]] = {}

    def route(self, resources: dict[str, float], strategy: Any, spilled: bool) -> str | None:
        """The node a request should go to, or None for this one; raises ``Unschedulable``
        when no node in the view could ever serve it."""
        return route(
            self.node_id, self.view, self.total, self.available, resources, strategy, spilled
        )

    def node_totals(self, conn: Connection | None = None) -> list[dict[str, float]]:
        """What each live node offers in all (a request no single one fits waits forever)."""
        return [dict(v["total"]) for v in self.view.values()] or [dict(self.total)]

    def cluster_total(self, conn: Connection | None = None) -> dict[str, float]:
        total: dict[str, float] = {}
        for v in self.view.values() or [{"total": self.total}]:
            for k, amount in v["total"].items():
                total[k] = total.get(k, 0.0) + amount
        return total

    def update(
        self, view: dict[str, Any], requests: collections.deque[LeaseRequest]
    ) -> list[str]:
        """Take the head's new ``view`` and move waiting ``requests`` it shows a better place
        for; returns the addresses of the nodes that left it."""
        gone = [v["address"] for nid, v in self.view.items() if nid not in view]
        self.view = view
        self._reroute_infeasible(requests)
        self._offload_waiting(requests)
        return gone

    def _reroute_infeasible(self, requests: collections.deque[LeaseRequest]) -> None:
        """Requests this node can never serve move to a node that joined and can."""
        for req in list(requests):
            if req.actor is not None or req.fut.done() or fits(self.total, req.resources):
                continue
            for nid, v in self.view.items():
                if nid != self.node_id and fits(v["total"], req.resources):
                    requests.remove(req)
                    req.fut.set_result(["spill", v["address"]])
                    break

    def _offload_waiting(self, requests: collections.deque[LeaseRequest]) -> None:
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
        for req in list(requests):
            if (req.actor is not None or req.moved or req.fut.done() or req.strategy is not None
                    or fits(self.available, req.resources)):  # fmt: skip
                continue
            for nid, avail in free.items():
                if fits(avail, req.resources):
                    sent = recent.setdefault(nid, (now, {}))[1]
                    for k, amount in req.resources.items():
                        avail[k] = avail.get(k, 0.0) - amount
                        sent[k] = sent.get(k, 0.0) + amount
                    requests.remove(req)
                    req.fut.set_result(["spill", self.view[nid]["address"]])
                    break

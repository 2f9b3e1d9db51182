"""The cluster view's picture: the nodes as their samples arrive, with their recent history
(``digest`` says how digests work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbcluster.runtime.observe.digest import Digest

if TYPE_CHECKING:
    from nbcluster.runtime.observe.event_log import EventLog
    from nbcluster.runtime.observe.metrics_history import MetricsHistory


def node_info(rec: Any) -> dict[str, Any]:
    """A node as the cluster view draws it: its record and newest resource sample."""
    return {"node_id": rec.node_id, "address": rec.address, "alive": rec.state == "ALIVE",
            "resources": rec.resources_total, "stats": rec.stats,
            "death_reason": rec.death_reason}  # fmt: skip


class NodeList(Digest):
    """The cluster's nodes as their samples arrive (about once a second each), their recent
    history in whole pictures, and (``{"objects": True}``) how many objects changed."""

    def __init__(self, log: EventLog, spec: dict[str, Any],
                 metrics: MetricsHistory | None = None) -> None:  # fmt: skip
        self.log = log
        self.metrics = metrics
        self.watch_objects = bool(spec.get("objects"))
        self.rebuild()

    def rebuild(self) -> None:
        self.dirty: set[str] = set()
        self.objects_changed = 0

    def absorb(self, tasks: set[bytes], objects: set[bytes], nodes: set[str],
               freed: set[bytes]) -> None:  # fmt: skip
        self.dirty |= nodes
        if self.watch_objects:
            self.objects_changed += len(objects)

    def take(self) -> tuple[dict[str, Any], bool] | None:
        if not (self.dirty or self.objects_changed):
            return None
        nodes = self.log.nodes
        out = {"nodes": [node_info(nodes[n]) for n in self.dirty if n in nodes],
               "objects_changed": self.objects_changed}  # fmt: skip
        self.dirty = set()
        self.objects_changed = 0
        return out, False

    def pushed_full(self) -> None:
        self.dirty = set()
        self.objects_changed = 0

    def full(self) -> dict[str, Any]:
        nodes = self.log.nodes.values()
        history = self.metrics.series() if self.metrics is not None else None
        return {"nodes": [node_info(n) for n in nodes], "history": history,
                "objects_changed": 0}  # fmt: skip

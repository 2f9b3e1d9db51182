"""The cluster at a glance: per node CPU, GPU, memory and object-store use as bars, their
last minutes as sparklines, workers and pending demand. Node samples arrive once a second
per node (``NODE_STATS``), so this widget redraws at most that often."""

from __future__ import annotations

from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets.tables import Changes, Node, Tables

#: Samples sent for each sparkline (one a second).
SPARK_POINTS = 120


def node_row(n: Node) -> dict[str, Any]:
    st = n.stats
    gpus = st.get("gpus") or []
    return {
        "node_id": n.node_id, "address": n.address, "alive": n.alive,
        "cpu": float(st.get("cpu_percent") or 0.0),
        "cpus": n.resources.get("CPU", 0.0), "cpus_free": n.available.get("CPU", 0.0),
        "gpus": n.resources.get("GPU", 0.0), "gpus_free": n.available.get("GPU", 0.0),
        "gpu_util": [float(g.get("utilization") or 0.0) for g in gpus],
        "mem_used": st.get("mem_used") or 0, "mem_total": st.get("mem_total") or 0,
        "store_used": st.get("store_used") or 0, "store_capacity": st.get("store_capacity") or 0,
        "spilled": st.get("store_spilled_bytes") or 0,
        "workers": len(st.get("workers") or {}),
        "demand": dict(st.get("demand") or {}),
        "history": [list(h[1:]) for h in list(n.history)[-SPARK_POINTS:]],
    }  # fmt: skip


class ClusterView:
    finished = False

    def __init__(self) -> None:
        self.widget: Any = None
        self.state: dict[str, Any] = {"nodes": []}
        self._dirty = True

    def changed(self, tables: Tables, changes: Changes) -> None:
        if changes.nodes or changes.lost:
            self._dirty = True

    def tick(self, tables: Tables) -> None:
        if not self._dirty:
            return
        self._dirty = False
        nodes = sorted(tables.nodes.values(), key=lambda n: (not n.alive, n.address))
        self.state = {"nodes": [node_row(n) for n in nodes]}
        self.resync(tables)

    def resync(self, tables: Tables) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def on_request(self, msg: dict[str, Any]) -> None:
        if msg.get("kind") == "resync":
            self._dirty = True

    def _rows(self) -> list[list[Any]]:
        rows = []
        for n in self.state["nodes"]:
            cpus = n["cpus"]
            rows.append([
                n["address"] + ("" if n["alive"] else " (dead)"),
                f"{cpus - n['cpus_free']:g}/{cpus:g} used, {n['cpu']:.0f}% busy",
                f"{n['gpus'] - n['gpus_free']:g}/{n['gpus']:g}" if n["gpus"] else "-",
                f"{H.fmt_bytes(n['mem_used'])} / {H.fmt_bytes(n['mem_total'])}",
                f"{H.fmt_bytes(n['store_used'])} / {H.fmt_bytes(n['store_capacity'])}",
                n["workers"],
                ", ".join(f"{k} x{v}" for k, v in n["demand"].items()) or "-",
            ])  # fmt: skip
        return rows

    _HEAD = ("node", "CPU", "GPU", "memory", "object store", "workers", "pending")

    def html(self) -> str:
        alive = sum(1 for n in self.state["nodes"] if n["alive"])
        return H.box(f"Cluster: {alive} node{'s' if alive != 1 else ''} alive",
                     H.table(self._HEAD, self._rows()), "nbcluster-cluster-static")  # fmt: skip

    def text(self) -> str:
        return "Cluster\n" + H.text_table(self._HEAD, self._rows())

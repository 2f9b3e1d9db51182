"""The cluster at a glance: per node CPU, GPU, memory and object-store use as bars, their
last minutes as sparklines, workers and pending demand. Node samples arrive once a second
per node (``NODE_STATS``), so this widget redraws at most that often."""

from __future__ import annotations

from collections import deque
from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets.feed import FedView

#: Samples sent for each sparkline (one a second).
SPARK_POINTS = 120


def _fraction(used: Any, total: Any) -> float:
    return float(used or 0) / float(total) if total else 0.0


class Nodes:
    """The nodes as the head's ``nodes`` digest describes them, with each one's recent use
    ((cpu %, memory used fraction, store used fraction) per sample) for the sparklines."""

    def __init__(self) -> None:
        self.info: dict[str, dict[str, Any]] = {}
        self.history: dict[str, deque[tuple[float, float, float]]] = {}

    def apply(self, payload: Any, full: bool) -> bool:
        """Take a digest item in; whether anything changed."""
        if full:
            self.info.clear()
            self.history.clear()
        series = (payload.get("history") or {}).get("nodes") or {}
        for node_id, cols in series.items():
            ring = self.history[node_id] = deque(maxlen=SPARK_POINTS)
            for cpu, mu, mt, su, sc in zip(cols["cpu_percent"], cols["mem_used"],
                                           cols["mem_total"], cols["store_used"],
                                           cols["store_capacity"], strict=False):  # fmt: skip
                ring.append((cpu, _fraction(mu, mt), _fraction(su, sc)))
        for n in payload.get("nodes") or ():
            self.info[n["node_id"]] = n
            st = n.get("stats") or {}
            if st and n["node_id"] not in series:
                ring = self.history.setdefault(n["node_id"], deque(maxlen=SPARK_POINTS))
                ring.append((
                    float(st.get("cpu_percent") or 0.0),
                    _fraction(st.get("mem_used"), st.get("mem_total")),
                    _fraction(st.get("store_used"), st.get("store_capacity")),
                ))  # fmt: skip
        return bool(full or payload.get("nodes") or series)

    def rows(self) -> list[dict[str, Any]]:
        nodes = sorted(self.info.values(), key=lambda n: (not n["alive"], n["address"]))
        return [node_row(n, self.history.get(n["node_id"], ())) for n in nodes]


def node_row(n: dict[str, Any], history: Any) -> dict[str, Any]:
    st = n.get("stats") or {}
    gpus = st.get("gpus") or []
    total = st.get("total") or n.get("resources") or {}
    available = st.get("available") or {}
    return {
        "node_id": n["node_id"], "address": n["address"], "alive": n["alive"],
        "cpu": float(st.get("cpu_percent") or 0.0),
        "cpus": total.get("CPU", 0.0), "cpus_free": available.get("CPU", 0.0),
        "gpus": total.get("GPU", 0.0), "gpus_free": available.get("GPU", 0.0),
        "gpu_util": [float(g.get("utilization") or 0.0) for g in gpus],
        "mem_used": st.get("mem_used") or 0, "mem_total": st.get("mem_total") or 0,
        "store_used": st.get("store_used") or 0, "store_capacity": st.get("store_capacity") or 0,
        "spilled": st.get("store_spilled_bytes") or 0,
        "workers": len(st.get("workers") or {}),
        "demand": dict(st.get("demand") or {}),
        "history": [list(h) for h in history],
    }  # fmt: skip


class ClusterView(FedView):
    kind = "nodes"

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        self.nodes = Nodes()
        #: a heading: how to reach the cluster (``nc.init()``'s display)
        self.info = info
        self.state: dict[str, Any] = {"nodes": [], "info": info}

    def on_digest(self, payload: Any, full: bool) -> None:
        if self.nodes.apply(payload, full):
            self.state = {"nodes": self.nodes.rows(), "info": self.info}
            self.show()

    def show(self) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def on_request(self, msg: dict[str, Any]) -> None:
        if msg.get("kind") == "resync":
            self.show()

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

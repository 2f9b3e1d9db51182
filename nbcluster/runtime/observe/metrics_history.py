"""The last minutes of every node's resource use, kept by the head for the dashboard.

Each node samples itself about once a second (``node_stats``) and the sample reaches the
head as a ``NODE_STATS`` event. The event log keeps only the newest sample per node; this
ring buffer keeps the last ``metrics_history`` of them, as a few numbers each, so a page that
opens shows the history at once instead of starting from an empty chart, and no Prometheus or
Grafana is needed to see what happened a minute ago.

A sample is a tuple of floats (time, CPU %, memory used, memory total, store used, store
capacity, GPU utilisation %, GPU memory used, GPU memory total): about 150 bytes, so a
10-minute history of a 100-node cluster costs under 10 MB.
"""

from __future__ import annotations

import bisect
import collections
from typing import Any

#: The series every sample has, in tuple order after its time.
SERIES = (
    "cpu_percent", "mem_used", "mem_total", "store_used", "store_capacity",
    "gpu_percent", "gpu_mem_used", "gpu_mem_total",
)  # fmt: skip

Sample = tuple[float, ...]


def _sample(ts: float, stats: dict[str, Any]) -> Sample:
    gpus = stats.get("gpus") or []
    gpu_util = sum(float(g.get("utilization", 0.0)) for g in gpus) / len(gpus) if gpus else 0.0
    return (
        float(ts),
        float(stats.get("cpu_percent") or 0.0),
        float(stats.get("mem_used") or 0),
        float(stats.get("mem_total") or 0),
        float(stats.get("store_used") or 0),
        float(stats.get("store_capacity") or 0),
        gpu_util,
        float(sum(int(g.get("mem_used", 0)) for g in gpus)),
        float(sum(int(g.get("mem_total", 0)) for g in gpus)),
    )


class MetricsHistory:
    """Per-node ring buffers of resource samples, oldest first."""

    def __init__(self, samples_per_node: int) -> None:
        self.maxlen = max(2, int(samples_per_node))
        self.nodes: dict[str, collections.deque[Sample]] = {}

    def record(self, node_id: str, ts: float, stats: dict[str, Any]) -> None:
        """One node's sample (called by the event log for each ``NODE_STATS``)."""
        ring = self.nodes.get(node_id)
        if ring is None:
            ring = self.nodes[node_id] = collections.deque(maxlen=self.maxlen)
        elif ring and ts < ring[-1][0]:
            return  # a late or duplicate sample: keep each ring in time order
        ring.append(_sample(ts, stats))

    def forget(self, node_ids: set[str]) -> None:
        """Drop the rings of nodes no longer listed (dead nodes the log forgot)."""
        for node_id in [n for n in self.nodes if n not in node_ids]:
            del self.nodes[node_id]

    def series(self, since: float | None = None) -> dict[str, Any]:
        """``{"series": [...names], "nodes": {node_id: {"time": [...], name: [...]}}}`` of
        the samples newer than ``since`` (a UNIX time; None: all kept)."""
        out: dict[str, Any] = {}
        for node_id, ring in self.nodes.items():
            samples = list(ring)
            if since is not None:
                samples = samples[bisect.bisect_right([s[0] for s in samples], since) :]
            columns = list(zip(*samples, strict=True)) if samples else [()] * (len(SERIES) + 1)
            entry: dict[str, Any] = {"time": list(columns[0])}
            for i, name in enumerate(SERIES, start=1):
                entry[name] = list(columns[i])
            out[node_id] = entry
        return {"series": ["time", *SERIES], "nodes": out}

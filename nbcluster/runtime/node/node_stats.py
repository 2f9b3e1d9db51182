"""What a node is using right now: CPU, memory, GPUs, its object store and unmet demand.

Sampled by the node agent about once a second and sent as a ``NODE_STATS`` event, so the
dashboard, widgets and ``nbcluster status`` read one stream instead of polling every node.
Physical use comes from psutil (and NVML where the ``pynvml`` package and a GPU are present);
logical use (``1.0/2.0 CPU``) and pending demand (lease requests that do not fit yet) come
from the agent itself. A sample costs well under a millisecond of the agent's loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from nbcluster.runtime.node.node_agent import NodeAgent


class NodeSampler:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process, kept for cpu_percent deltas
        psutil.cpu_percent(None)  # the first call only sets the baseline
        self._nvml: Any = _open_nvml()

    def sample(self) -> dict[str, Any]:
        agent = self.agent
        vm = psutil.virtual_memory()
        st = agent.store.store.stats()
        demand: dict[str, int] = {}
        for req in agent.requests:
            key = _shape(req.resources)
            demand[key] = demand.get(key, 0) + 1
        return {
            "cpu_percent": psutil.cpu_percent(None),
            "num_cpus": psutil.cpu_count() or 1,
            "mem_total": vm.total,
            "mem_used": vm.total - vm.available,
            "gpus": self._gpus(),
            "store_capacity": st.capacity,
            "store_used": st.used,
            "store_objects": st.num_objects,
            "store_spilled_objects": st.num_spilled,
            "store_spilled_bytes": st.spilled_bytes,
            "total": dict(agent.total),
            "available": dict(agent.available),
            "demand": demand,
            "workers": self._workers(),
        }

    def _workers(self) -> dict[int, int]:
        """Resident memory of each worker process on this node (pid -> bytes)."""
        out: dict[int, int] = {}
        pids = {w.pid for w in self.agent.workers.values()}
        for pid in list(self._procs):
            if pid not in pids:
                del self._procs[pid]
        for pid in pids:
            try:
                proc = self._procs.get(pid) or self._procs.setdefault(pid, psutil.Process(pid))
                out[pid] = int(proc.memory_info().rss)
            except psutil.Error:
                self._procs.pop(pid, None)
        return out

    def _gpus(self) -> list[dict[str, Any]]:
        nvml = self._nvml
        if nvml is None:
            return []
        out = []
        try:
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                util = nvml.nvmlDeviceGetUtilizationRates(h)
                out.append(
                    {"index": i, "utilization": float(util.gpu), "mem_used": int(mem.used),
                     "mem_total": int(mem.total)}
                )  # fmt: skip
        except Exception:
            self._nvml = None  # the driver went away: stop asking
        return out


def _shape(resources: dict[str, float]) -> str:
    """A lease request's shape as ``status`` prints it: ``{'CPU': 1.0}``."""
    return "{" + ", ".join(f"{k!r}: {v:g}" for k, v in sorted(resources.items())) + "}"


def _open_nvml() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None

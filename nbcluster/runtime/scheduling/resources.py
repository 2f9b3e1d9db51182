"""What a node offers: CPUs, GPUs, object store memory and custom resources.

By default a node offers the CPUs this user may use here and an object store of
``object_store_fraction`` of the memory they may use (``limits``: the machine, its cgroup,
the spawner's and the site's limits, the smallest of each). GPUs are detected the way users
expect from Ray: ``CUDA_VISIBLE_DEVICES`` when set, otherwise NVML (``pynvml``) or
``nvidia-smi -L`` when present, otherwise none. Any figure can be given explicitly instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.scheduling import limits
from nbcluster.status_report import format_bytes


def detect_cpus() -> int:
    return int(limits.detect().cpus.amount)


def detect_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        done = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=10)
        out = done.stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def object_store_memory(requested: int | None = None) -> int:
    """The size of a node's store: ``requested``, or ``object_store_fraction`` of the memory
    this user may use here. A request larger than that memory is refused, as Ray does: the
    store is memory, and one that cannot fit would take puts until the kernel kills the node."""
    memory = limits.detect().memory
    if requested is None:
        return int(memory.amount * CONFIG.object_store_fraction)
    if requested <= 0:
        raise ValueError(f"object_store_memory must be a positive number of bytes, not {requested}")
    if requested > memory.amount:
        raise ValueError(
            f"object_store_memory={requested} ({format_bytes(requested)}) is more than the "
            f"{format_bytes(memory.amount)} of memory this node may use ({memory.source})"
        )
    return int(requested)


def node_resources(
    num_cpus: float | None, num_gpus: float | None, resources: dict[str, float] | None
) -> dict[str, float]:
    res: dict[str, float] = {
        "CPU": float(detect_cpus() if num_cpus is None else num_cpus),
        "GPU": float(detect_gpus() if num_gpus is None else num_gpus),
    }
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus, not resources={{{name!r}: ...}}")
        res[name] = float(amount)
    if res["GPU"] == 0:
        del res["GPU"]
    return res


def fits(available: dict[str, float], demand: dict[str, float]) -> bool:
    return all(available.get(k, 0.0) >= v - 1e-9 for k, v in demand.items() if v > 0)


def task_resources(
    num_cpus: float | None, num_gpus: float | None, resources: dict[str, float] | None,
    default_cpus: float = 1.0,
) -> dict[str, float]:  # fmt: skip
    """The demand of a task or actor; zero amounts are dropped."""
    demand = {"CPU": float(default_cpus if num_cpus is None else num_cpus)}
    if num_gpus:
        demand["GPU"] = float(num_gpus)
    for name, amount in (resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"use num_cpus/num_gpus, not resources={{{name!r}: ...}}")
        if amount < 0:
            raise ValueError(f"resource {name!r} must be non-negative, got {amount}")
        demand[name] = float(amount)
    return {k: v for k, v in demand.items() if v > 0}

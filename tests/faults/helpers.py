"""Injecting faults into real clusters, and the small pieces of work the fault tests run.

Everything here acts on real processes: a worker is killed with a signal, a node with its
whole process group (node agent, fork server, workers), as if its machine had died; a node is
*cut off* by stopping its process group, so its sockets stay open but nothing answers, as
after a network partition. Nothing is mocked.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from cluster_helpers import CliCluster, CliNode, node_entry, node_id_of, poll

import nbcluster as nc

#: A 100 MB object: 12.5 million float64s, every one equal to its key.
BIG_LEN = 12_500_000
#: Object store of each CLI node in the fault tests (room to spare: nothing must spill).
STORE_BYTES = str(1 << 30)
#: The chaos suite's nodes: bigger stores (more 100 MB objects), and the resource ``pool``.
CHAOS_STORE_BYTES = str(2 << 30)
POOL = '{"pool": 100}'


# ------------------------------------------------------------------------ work the tests run


def big(k: float) -> np.ndarray:
    """The 100 MB object of key ``k``."""
    return np.full(BIG_LEN, k, dtype=np.float64)


def big_sum(k: float) -> float:
    """What ``float(big(k).sum())`` must be."""
    return float(k) * BIG_LEN


def record(directory: str | os.PathLike[str], name: str = "run") -> int:
    """Count one execution in ``directory``; how many came before it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    before = len(list(d.iterdir()))
    (d / f"{name}-{os.getpid()}-{uuid.uuid4().hex}").touch()
    return before


def runs(directory: str | os.PathLike[str]) -> int:
    d = Path(directory)
    return len(list(d.iterdir())) if d.exists() else 0


#: Ways a worker process dies in the middle of a task, as a user's code could make it.
DEATHS: dict[str, Callable[[], None]] = {
    "sigkill": lambda: os.kill(os.getpid(), signal.SIGKILL),
    "segfault": lambda: ctypes.string_at(0),  # reads address 0: SIGSEGV
    "os_exit": lambda: os._exit(1),
}


# ----------------------------------------------------------------------- memory, for the OOM


def used_memory() -> int:
    """Bytes of RAM in use, as the memory monitor counts them."""
    vm = psutil.virtual_memory()
    return int(vm.total - vm.available)


# ---------------------------------------------------------------------------------- nodes


def join(cluster: CliCluster, name: str, resources: str, cpus: int = 1) -> tuple[CliNode, str]:
    """Start a node with ``resources`` (JSON) that joins ``cluster``; it and its NodeID."""
    node = cluster.join(
        name, "--num-cpus", str(cpus), "--resources", resources,
        "--object-store-memory", STORE_BYTES,
    )  # fmt: skip
    node_id = node_id_of(node.address)
    node.processes()
    return node, node_id


def kill_node(node: CliNode) -> float:
    """The node's machine dies: SIGKILL to its whole process group. When it happened."""
    node.processes()  # remember its workers, so cleanup can check them
    t = time.monotonic()
    try:
        os.killpg(node.node_pid, signal.SIGKILL)  # the node leads its own process group
    except ProcessLookupError:
        pass
    poll(node.all_gone, 15, node.left)
    return t


def cut_off(node: CliNode) -> float:
    """The node stops answering but keeps its connections open (a network partition, or a
    machine that froze): SIGSTOP to its process group. When it happened."""
    node.processes()
    t = time.monotonic()
    os.killpg(node.node_pid, signal.SIGSTOP)
    return t


def dead_entry(node_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``nodes()`` until the head reports the node dead; its entry."""

    def dead() -> dict[str, Any] | None:
        entry = node_entry(node_id)
        return None if entry["Alive"] else entry

    return poll(dead, timeout, lambda: f"node {node_id} still alive: {node_entry(node_id)}")


def node_of_this_task() -> str:
    return nc.get_runtime_context().get_node_id()


# ------------------------------------------------------------- the chaos suite's cluster


@dataclass
class ChaosCluster:
    cluster: CliCluster
    head: CliNode
    #: the worker nodes alive now (killed ones are replaced in place)
    workers: list[CliNode] = field(default_factory=list)
    started: int = 0  # worker nodes started so far (names them)

    def start_worker(self) -> CliNode:
        """A worker node with the pool resource (a new one, or a dead one's replacement)."""
        self.started += 1
        node = self.cluster.join(
            f"worker-{self.started}", "--num-cpus", "1", "--resources", POOL,
            "--object-store-memory", CHAOS_STORE_BYTES,
        )  # fmt: skip
        node_id_of(node.address)  # the head knows it
        node.processes()
        return node

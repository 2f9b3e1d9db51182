"""``ps`` names every process of a cluster by its role, as Ray does, not as one more
``python -m nbcluster.runtime.node.node_main``."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from conftest import descendants

import nbcluster as nc


class Counter:
    def pid(self) -> int:
        return os.getpid()


def worker_pid() -> int:
    return os.getpid()


def ps(pid: int, field: str) -> str:
    done = subprocess.run(["ps", "-o", f"{field}=", "-p", str(pid)], capture_output=True,
                          text=True, timeout=10, check=True)  # fmt: skip
    return done.stdout.strip()


def test_ps_shows_each_process_by_its_role(cluster: Any) -> None:
    actor = nc.remote(Counter).remote()
    actor_pid = nc.get(actor.pid.remote())
    task_pid = nc.get(nc.remote(worker_pid).remote())
    assert ps(actor_pid, "args") == "nbcluster::Counter"
    assert ps(task_pid, "args") == "nbcluster::worker"
    assert ps(task_pid, "comm") == "nbcluster::work"  # the kernel keeps 15 bytes of it
    roles = {ps(p.pid, "args") for p in descendants()}
    assert {"nbcluster::head", "nbcluster::fork_server", "nbcluster::worker"} <= roles, roles
    assert not [r for r in roles if "nbcluster.runtime.node.node_main" in r], roles
    nc.kill(actor)

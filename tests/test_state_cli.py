"""``nbcluster status / list / summary / memory / timeline`` against a running cluster.

The commands run as separate processes, as a user runs them from a terminal next to a
notebook: they attach with ``--address`` and the cluster's token, print, and leave the
cluster running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO_ROOT, wait_for_file, wait_until

import nbcluster as nc
from nbcluster.util import state

MiB = 1 << 20


def hold(gate: str) -> int:
    wait_for_file(gate)
    return os.getpid()


def fail(msg: str) -> None:
    raise RuntimeError(msg)


def run_cli(*args: str) -> str:
    """Run ``nbcluster ARGS --address <this cluster>`` and return what it printed."""
    info = nc.init()  # already connected: returns this cluster's address and session
    token = Path(info["session_dir"], "token").read_text().strip()
    env = dict(os.environ, NBCLUSTER_TOKEN=token)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "nbcluster.cli", *args, "--address", info["address"]],
        check=False, capture_output=True, text=True, env=env, timeout=60, cwd=str(REPO_ROOT),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def gate(tmp_path: Path) -> Any:
    path = tmp_path / "gate"
    yield path
    path.touch()  # whatever a test left waiting finishes


def test_status_shows_resources_store_use_and_pending_demand(cluster: Any, gate: Path) -> None:
    holder = nc.remote(hold).options(num_cpus=2).remote(str(gate))  # both CPUs
    wait_until(lambda: state.get_task(holder).state == "RUNNING")  # type: ignore[union-attr]
    waiting = nc.remote(hold).remote(str(gate))  # cannot start until the holder ends
    stored = nc.put(np.zeros(3 * MiB, dtype=np.uint8))

    def status() -> str:
        out = run_cli("status")
        return out if "{'CPU': 1}: 1+" in out and "2/2 CPU" in out else ""

    out = wait_until(status, timeout=20, message="status never showed the pending demand")
    assert "Object store (used/capacity):" in out and "1 objects" in out
    assert "Usage (physical):" in out and "memory" in out
    gate.touch()
    assert all(nc.get([holder, waiting], timeout=30))
    assert stored.hex() not in out  # status sums up; `memory` lists objects


def test_list_and_summary_show_a_failed_task_with_its_error(cluster: Any) -> None:
    ref = nc.remote(fail).remote("out of coffee")
    with pytest.raises(RuntimeError):
        nc.get(ref)
    out = run_cli("list", "tasks", "--filter", "state=FAILED", "--filter", "name=fail")
    line = next(ln for ln in out.splitlines() if ref.task_id().hex() in ln)
    assert "FAILED" in line and "RuntimeError" in line and "test_state_cli.py:" in line
    items = json.loads(run_cli("list", "tasks", "--filter", "name=fail", "--format", "json"))
    mine = next(t for t in items if t["task_id"] == ref.task_id().hex())
    assert "out of coffee" in mine["error_message"]
    summary = run_cli("summary")
    assert any(ln.startswith("fail ") and "FAILED: " in ln for ln in summary.splitlines())
    nodes = run_cli("list", "nodes")
    assert "ALIVE" in nodes and "CPU: " in nodes
    workers = run_cli("list", "workers")
    assert "DRIVER" in workers and str(os.getpid()) in workers


def test_memory_lists_each_object_with_owner_reference_and_call_site(cluster: Any) -> None:
    big = nc.put(np.zeros(5 * MiB, dtype=np.uint8))
    small = nc.put("a short string")
    out = run_cli("memory")
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert "5.0 MiB" in lines[big.hex()] and "IN_MEMORY" in lines[big.hex()]
    assert f"LOCAL_REFERENCE (pid {os.getpid()})" in lines[big.hex()]
    assert "test_state_cli.py:" in lines[big.hex()]
    assert "INLINE" in lines[small.hex()]
    assert any(ln.startswith("Total: ") for ln in out.splitlines())
    assert "spilled 0 objects" in out
    del big, small


def test_list_objects_says_spilled(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=40 * MiB)
    refs = [nc.put(np.full(10 * MiB, i, dtype=np.uint8)) for i in range(6)]

    def spilled_rows() -> list[str]:
        out = run_cli("list", "objects", "--filter", "state=SPILLED")
        return [ln for ln in out.splitlines() if any(r.hex() in ln for r in refs)]

    rows = wait_until(spilled_rows, timeout=20)
    assert all("SPILLED" in r and "10.0 MiB" in r for r in rows)
    assert "spilled " in run_cli("status")


def test_timeline_writes_a_trace_file(cluster: Any, tmp_path: Path) -> None:
    refs = [nc.remote(os.getpid).remote() for _ in range(6)]
    pids = set(nc.get(refs))
    path = tmp_path / "t.json"
    out = run_cli("timeline", "--output", str(path))
    assert "wrote" in out and "perfetto" in out
    trace = json.loads(path.read_text())
    assert pids <= {e["tid"] for e in trace if e["ph"] == "X"}

"""Node groups on the ``local`` backend: the launcher machinery every backend shares.

``nc.cluster.add_nodes`` starts real ``nbcluster start`` processes that join this test's
cluster; the stories: nodes join and take pinned work, removal drains before it cancels, a
node that cannot start or never joins is reported with its own output within the wait
timeout, the driver's shutdown cancels its groups, and nodes whose driver was killed leave.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from cluster_helpers import kill_quietly
from conftest import read_report, start_driver, wait_for_file, wait_until
from kernel_helpers import kernelspec, new_kernel  # noqa: F401

import nbcluster as nc
from nbcluster.cluster import LaunchError, LaunchTimeoutError
from nbcluster.cluster.launcher import available, load
from nbcluster.cluster.local import LocalLauncher
from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy

JOIN_TIMEOUT_S = 60.0


def pinned(node_id: str) -> dict[str, Any]:
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


@nc.remote
def where() -> str:
    return str(nc.get_runtime_context().get_node_id())


@nc.remote
def wait_then_where(gate: str, started: str = "") -> str:
    if started:
        Path(started).touch()
    wait_for_file(gate)
    return str(nc.get_runtime_context().get_node_id())


def test_backends_are_entry_points() -> None:
    assert {"local"} <= set(available())
    assert load("local") is LocalLauncher
    with pytest.raises(ValueError, match=r"no nbcluster launcher named 'nope'; installed: .*local"):
        load("nope")


def test_local_nodes_join_take_pinned_work_and_leave_when_removed(cluster: Any) -> None:
    group = nc.cluster.add_nodes(2, backend="local", cpus=1, resources={"grp": 1})
    try:
        nodes = group.wait(timeout=JOIN_TIMEOUT_S)
        ids = [n["NodeID"] for n in nodes]
        assert len(set(ids)) == 2 and set(ids) == set(group.node_ids)
        assert all(n["Resources"] == {"CPU": 1.0, "grp": 1.0} for n in nodes)
        assert nc.get([where.options(**pinned(i)).remote() for i in ids]) == ids
        assert nc.get(where.options(resources={"grp": 1}).remote()) in ids
        assert [g.id for g in nc.cluster.groups()] == [group.id]
        assert nc.cluster.status()[0]["nodes"] == "2/2"
    finally:
        group.remove()
    dead = {n["NodeID"]: n["Alive"] for n in nc.nodes() if n["NodeID"] in ids}
    assert dead == dict.fromkeys(ids, False)
    assert nc.cluster.groups() == []
    assert all(job.handle.poll() is not None for job in group.jobs)  # the processes ended


def test_remove_lets_running_work_finish_first(cluster: Any, gate: Path) -> None:
    group = nc.cluster.add_nodes(1, backend="local", cpus=1)
    (node,) = group.wait(timeout=JOIN_TIMEOUT_S)
    started = gate.with_name("started")
    running = wait_then_where.options(**pinned(node["NodeID"]), max_retries=0).remote(
        str(gate), str(started)
    )
    # Running, not merely leased somewhere: free CPUs also drop for another test's lingering
    # lease, and a node removed before its task starts has nothing to drain.
    wait_until(started.exists, timeout=30, message="task not running")
    remover = threading.Thread(target=group.remove, kwargs={"drain_timeout": 60})
    remover.start()
    try:
        wait_until(
            lambda: any(n["Draining"] for n in nc.nodes() if n["NodeID"] == node["NodeID"]),
            message="the node was not marked draining",
        )
        assert remover.is_alive()  # it waits for the running task
        gate.touch()
        assert nc.get(running, timeout=30) == node["NodeID"]  # finished where it ran
    finally:
        gate.touch()
        remover.join(60)
    assert not remover.is_alive()
    assert not next(n for n in nc.nodes() if n["NodeID"] == node["NodeID"])["Alive"]


def test_a_python_that_does_not_exist_is_refused_at_once(cluster: Any) -> None:
    with pytest.raises(LaunchError, match="cannot run /no/such/python"):
        nc.cluster.add_nodes(1, backend="local", python="/no/such/python")
    assert nc.cluster.groups() == []
    assert nc.get(where.remote(), timeout=30)  # the cluster carries on


def test_a_python_without_nbcluster_fails_wait_with_its_output(
    cluster: Any, tmp_path: Path
) -> None:
    bare = tmp_path / "python"
    # this interpreter, but with no site-packages and no PYTHONPATH: no nbcluster
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -I -S "$@"\n')
    bare.chmod(0o755)
    group = nc.cluster.add_nodes(1, backend="local", python=str(bare))
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as err:
        group.wait(timeout=JOIN_TIMEOUT_S)
    assert time.monotonic() - t0 < JOIN_TIMEOUT_S
    text = str(err.value)
    assert "failed: exit code 1" in text and "No module named nbcluster" in text, text
    group.remove()
    assert nc.get(where.remote(), timeout=30)


def test_a_node_that_never_joins_times_out_with_each_jobs_state(
    cluster: Any, tmp_path: Path
) -> None:
    stuck = tmp_path / "python"
    stuck.write_text("#!/bin/sh\necho starting up slowly\nexec sleep 600\n")
    stuck.chmod(0o755)
    group = nc.cluster.add_nodes(2, backend="local", python=str(stuck))
    t0 = time.monotonic()
    with pytest.raises(LaunchTimeoutError) as err:
        group.wait(timeout=2)
    assert time.monotonic() - t0 < 10
    text = str(err.value)
    assert "0 of 2 nodes joined within 2 s" in text and "running" in text, text
    assert "starting up slowly" in text, text
    group.remove()
    assert all(job.handle.poll() is not None for job in group.jobs)


DRIVER = """
import json, os, sys, time, nbcluster as nc
nc.init(num_cpus=1)
group = nc.cluster.add_nodes(2, backend="local", cpus=1)
group.wait(timeout=60)
print("NODES", json.dumps([job.handle.pid for job in group.jobs]), flush=True)
if sys.argv[1] == "shutdown":
    while not os.path.exists(sys.argv[2]):  # the test has seen the nodes
        time.sleep(0.01)
    nc.shutdown()
    print("DONE {}", flush=True)
else:
    time.sleep(600)  # until the test kills this driver
"""


def _launched(pids: list[int]) -> list[psutil.Process]:
    """The launched CLIs and the node processes under them."""
    procs = []
    for pid in pids:
        proc = psutil.Process(pid)
        procs += [proc, *proc.children(recursive=True)]
    return procs


def _all_gone(procs: list[psutil.Process]) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in procs)


def test_shutdown_cancels_the_drivers_groups(no_cluster: None, gate: Path) -> None:
    driver = start_driver(DRIVER, "shutdown", str(gate))
    try:
        procs = _launched(read_report(driver, "NODES"))
        assert len(procs) >= 4  # two CLIs, two nodes (and their workers)
        gate.touch()
        read_report(driver, "DONE")
        wait_until(lambda: _all_gone(procs), timeout=15, message=lambda: str(procs))
    finally:
        driver.kill()
        driver.wait()


def test_nodes_leave_when_their_driver_is_killed(no_cluster: None) -> None:
    driver = start_driver(DRIVER, "wait")
    try:
        procs = _launched(read_report(driver, "NODES"))
        os.kill(driver.pid, signal.SIGKILL)  # no shutdown, no cancel: the head goes with it
        wait_until(lambda: _all_gone(procs), timeout=15, message=lambda: str(procs))
    finally:
        driver.kill()
        driver.wait()


def test_a_kernel_restart_cancels_its_groups(new_kernel: Any, tmp_path: Path) -> None:  # noqa: F811
    # A job that has not joined yet: only cancelling it ends it (joined nodes also leave
    # when their head goes).
    stuck = tmp_path / "python"
    stuck.write_text("#!/bin/sh\nexec sleep 600\n")
    stuck.chmod(0o755)
    kernel = new_kernel()
    cell = kernel.ok(
        "g = %cluster add 2 --backend local --cpus 1 --wait 60\n"
        "import nbcluster as nc\n"
        "sorted(n['NodeID'] for n in g.nodes) == sorted(g.node_ids) and len(g.nodes)"
    )
    assert cell.result == "2"
    status = kernel.ok("%cluster status").text()
    assert "local-1  local processes  ready  2/2" in status, status
    launched = kernel.ok(
        f"s = nc.cluster.add_nodes(1, backend='local', python={str(stuck)!r})\n"
        "print([j.handle.pid for j in g.jobs + s.jobs])"
    ).text()
    procs = _launched(json.loads(launched))
    try:
        kernel.km.restart_kernel(now=False)
        wait_until(lambda: _all_gone(procs), timeout=10, message=lambda: str(procs))
    finally:
        kill_quietly(procs)


def test_adapt_grows_under_a_burst_and_shrinks_when_idle(make_cluster: Any, gate: Path) -> None:
    make_cluster(num_cpus=1)
    head = nc.get_runtime_context().get_node_id()
    adaptive = nc.cluster.adapt(0, 2, backend="local", cpus=1, interval=0.3, idle_timeout=1.5)
    try:
        burst = [wait_then_where.remote(str(gate)) for _ in range(8)]  # more than fits
        wait_until(lambda: len(adaptive.nodes) == 2, timeout=60, message=lambda: repr(adaptive))
        added = {n["NodeID"] for n in adaptive.nodes}
        assert len(adaptive.live) == 2  # up to the maximum, not past it
        # the head has one CPU: a second task running means waiting work went to a new node
        wait_until(lambda: _running("wait_then_where") >= 2, timeout=30)
        gate.touch()
        ran_on = set(nc.get(burst, timeout=60))
        assert ran_on - {head} and ran_on - {head} <= added  # waiting work went to new nodes
        wait_until(lambda: not adaptive.live, timeout=30, message=lambda: repr(adaptive))
        wait_until(
            lambda: not nc.cluster.groups()
            and not any(n["Alive"] for n in nc.nodes() if n["NodeID"] in added),
            timeout=20,
            message=lambda: f"still there: {nc.cluster.groups()}",
        )
    finally:
        adaptive.stop()


def _running(name: str) -> int:
    from nbcluster.util.state import summarize_tasks

    entry = summarize_tasks()["cluster"]["summary"].get(name) or {"state_counts": {}}
    return int(entry["state_counts"].get("RUNNING", 0))


def test_adapt_reports_a_backend_that_fails_and_backs_off(make_cluster: Any, gate: Path) -> None:
    make_cluster(num_cpus=1)
    adaptive = nc.cluster.adapt(0, 2, backend="local", python="/no/such/python", interval=0.2,
                                backoff=60)  # fmt: skip
    try:
        burst = [wait_then_where.remote(str(gate)) for _ in range(8)]
        wait_until(lambda: adaptive.last_error, timeout=30)
        assert "cannot run /no/such/python" in str(adaptive.last_error)
        assert adaptive.live == [] and nc.cluster.groups() == []
        gate.touch()
        assert len(nc.get(burst, timeout=60)) == 8  # the cluster carries on with what it has
    finally:
        adaptive.stop()
        gate.touch()

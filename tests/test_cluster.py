"""A cluster of several nodes, started with the CLI as a user would, on this one machine.

``nbcluster start --head`` and ``nbcluster start --address HEAD`` each run a real node (its
own agent, worker pool and shared-memory store) in the background of the test; the test
process attaches to the head as a driver with the token. The stories: tasks and actors go
where their resources are, SPREAD spreads, NodeAffinity pins, a task follows its large
argument, a 200 MB array crosses nodes intact, a node with the wrong token is refused, nodes
that die, freeze or leave are reported dead while work goes on, ``status``/``stop`` show and
stop what ``start`` started, and a busy driver does not starve another.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_helpers import (
    REPO_ROOT,
    CliCluster,
    CliNode,
    attach,
    describe,
    gone,
    kill_quietly,
    node_entry,
    node_id_of,
    poll,
    recorded_nodes,
    records,
)
from conftest import wait_for_file

import nbcluster as nc
from nbcluster.exceptions import ActorUnschedulableError, NbclusterError
from nbcluster.runtime.scheduling.placement import NodeAffinitySchedulingStrategy

STORE_BYTES = str(1 << 30)  # per node: room for the 200 MB array and its copy


# ------------------------------------------------------------------------ what tasks run


@nc.remote
def where() -> str:
    return nc.get_runtime_context().get_node_id()


@nc.remote
def make_array(n: int) -> np.ndarray:
    """``n`` distinct uint64s: any lost, reordered or zeroed chunk changes the checksum."""
    return np.arange(n, dtype=np.uint64)


@nc.remote
def checksum(a: np.ndarray) -> tuple[str, str]:
    """(sha256 of the array's bytes, the node the task ran on)."""
    return hashlib.sha256(a.data).hexdigest(), nc.get_runtime_context().get_node_id()


@nc.remote
def run_until(gate: str, started: str) -> str:
    """Hold a CPU until the test opens ``gate``."""
    Path(started).touch()
    wait_for_file(gate)
    return nc.get_runtime_context().get_node_id()


class _Host:
    def node(self) -> str:
        return nc.get_runtime_context().get_node_id()


Host: Any = nc.remote(_Host)


def sha256_of(a: np.ndarray) -> str:
    return hashlib.sha256(a.data).hexdigest()


def on(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def free_cpus(node_id: str) -> float:
    return float(node_entry(node_id)["Available"].get("CPU", 0.0))


# ------------------------------------------------------------ the two-node cluster


@dataclass
class TwoNodes:
    cluster: CliCluster
    head: CliNode
    node_b: CliNode
    head_id: str
    b_id: str


@pytest.fixture(scope="module")
def two_nodes_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    """A head with {"ssd": 2} and a node B with {"bigmem": 1}, two CPUs each, from the CLI."""
    cluster = CliCluster(tmp_path_factory.mktemp("two-nodes"))
    try:
        head = cluster.start_head(
            "--num-cpus", "2", "--resources", '{"ssd": 2}', "--object-store-memory", STORE_BYTES
        )
        node_b = cluster.join(
            "node-b", "--num-cpus", "2", "--resources", '{"bigmem": 1}',
            "--object-store-memory", STORE_BYTES,
        )  # fmt: skip
        attach(head.address, cluster.token)
        yield TwoNodes(cluster, head, node_b, node_id_of(head.address), node_id_of(node_b.address))
    finally:
        nc.shutdown()
        cluster.close()


@pytest.fixture
def two(two_nodes_cluster: TwoNodes) -> TwoNodes:
    """The two-node cluster, with this process attached to it as a driver."""
    attach(two_nodes_cluster.head.address, two_nodes_cluster.cluster.token)
    return two_nodes_cluster


def test_both_nodes_joined_with_their_own_resources(two: TwoNodes) -> None:
    by_id = {n["NodeID"]: n for n in nc.nodes()}
    assert set(by_id) == {two.head_id, two.b_id}
    assert all(n["Alive"] for n in by_id.values())
    assert by_id[two.head_id]["Address"] == two.head.address
    assert by_id[two.b_id]["Address"] == two.node_b.address
    assert by_id[two.head_id]["Resources"] == {"CPU": 2.0, "ssd": 2.0}
    assert by_id[two.b_id]["Resources"] == {"CPU": 2.0, "bigmem": 1.0}
    assert nc.cluster_resources() == {"CPU": 4.0, "ssd": 2.0, "bigmem": 1.0}


def test_status_prints_both_nodes_and_cpu_use(two: TwoNodes, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    busy = run_until.options(scheduling_strategy=on(two.b_id)).remote(str(gate), str(started))
    try:
        poll(started.exists, 20, "the task holding a CPU on node B did not start")
        # Leases of earlier tests linger for idle_lease_timeout_s; wait until only ours is held.
        poll(lambda: nc.available_resources().get("CPU") == 3.0, 10, nc.available_resources)
        # No --address: `status` finds the cluster `start --head` recorded in the temp dir.
        local = two.cluster.cli("status")
        explicit = two.cluster.cli(
            "status", "--address", two.head.address, NBCLUSTER_TOKEN=two.cluster.token
        )
    finally:
        gate.touch()
    assert nc.get(busy, timeout=30) == two.b_id
    for result in (local, explicit):
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "Nodes: 2 alive, 0 dead" in out
        assert two.head.address in out and two.node_b.address in out
        assert re.search(r"^\s*1/4 CPU$", out, re.M), out
        assert re.search(r"^\s*0/1 bigmem$", out, re.M), out


def test_tasks_go_to_the_node_with_their_custom_resource(two: TwoNodes) -> None:
    big = [where.options(resources={"bigmem": 1}).remote() for _ in range(6)]
    ssd = [where.options(resources={"ssd": 1}).remote() for _ in range(6)]
    assert nc.get(big, timeout=30) == [two.b_id] * 6
    assert nc.get(ssd, timeout=30) == [two.head_id] * 6


def test_actors_are_placed_on_the_node_with_their_resource(two: TwoNodes) -> None:
    on_b = Host.options(resources={"bigmem": 1}).remote()
    on_head = Host.options(resources={"ssd": 1}).remote()
    assert nc.get(on_b.node.remote(), timeout=30) == two.b_id
    assert nc.get(on_head.node.remote(), timeout=30) == two.head_id
    # An actor holds its custom resources for its whole life, as in Ray.
    poll(lambda: "bigmem" not in nc.available_resources(), 10, nc.available_resources)
    nc.kill(on_b)
    nc.kill(on_head)
    poll(lambda: nc.available_resources().get("bigmem") == 1.0, 10, nc.available_resources)
    poll(lambda: nc.available_resources().get("ssd") == 2.0, 10, nc.available_resources)


def test_actors_follow_node_affinity_and_spread_as_tasks_do(two: TwoNodes) -> None:
    for node in (two.head_id, two.b_id):
        pinned = [Host.options(scheduling_strategy=on(node)).remote() for _ in range(2)]
        assert nc.get([a.node.remote() for a in pinned], timeout=30) == [node, node]
    spread = [Host.options(scheduling_strategy="SPREAD").remote() for _ in range(4)]
    assert set(nc.get([a.node.remote() for a in spread], timeout=30)) == {two.head_id, two.b_id}
    # A node that is not alive: a hard affinity can never be met, a soft one goes elsewhere.
    nowhere = "0" * len(two.b_id)
    lost = Host.options(scheduling_strategy=on(nowhere)).remote()
    with pytest.raises(ActorUnschedulableError, match=f"node {nowhere} is not alive"):
        nc.get(lost.node.remote(), timeout=30)
    soft = NodeAffinitySchedulingStrategy(nowhere, soft=True)
    assert nc.get(Host.options(scheduling_strategy=soft).remote().node.remote(), timeout=30) in (
        two.head_id, two.b_id,
    )  # fmt: skip


def test_spread_uses_both_nodes(two: TwoNodes) -> None:
    placed = nc.get([where.options(scheduling_strategy="SPREAD").remote() for _ in range(8)])
    assert set(placed) == {two.head_id, two.b_id}, placed


def test_hard_node_affinity_runs_on_the_named_node(two: TwoNodes) -> None:
    for node_id in (two.b_id, two.head_id):
        placed = nc.get([where.options(scheduling_strategy=on(node_id)).remote() for _ in range(6)])
        assert placed == [node_id] * 6


def test_hard_node_affinity_to_a_node_that_does_not_exist_fails(two: TwoNodes) -> None:
    with pytest.raises(NbclusterError, match="not alive"):
        nc.get(where.options(scheduling_strategy=on("0" * 32)).remote(), timeout=30)
    assert nc.get(where.remote(), timeout=30) in (two.head_id, two.b_id)


def test_a_node_can_be_targeted_as_soon_as_it_has_joined(tmp_path: Path) -> None:
    """The head's directory knows a new node before the head's agent gets the new view: a
    task pinned to the node right away must run there, not fail as "not alive"."""
    with CliCluster(tmp_path) as cluster:
        head = cluster.start_head("--num-cpus", "1")
        attach(head.address, cluster.token)
        try:
            for i in range(4):
                node_id = node_id_of(cluster.join(f"node-{i}", "--num-cpus", "1").address)
                pinned = where.options(scheduling_strategy=on(node_id)).remote()
                assert nc.get(pinned, timeout=30) == node_id
        finally:
            nc.shutdown()


def test_a_task_runs_where_its_large_argument_is(two: TwoNodes) -> None:
    # Node B has room: both its CPUs are free before, and one while its array is made.
    poll(lambda: free_cpus(two.b_id) == 2.0, 10, lambda: str(node_entry(two.b_id)))
    n = 512 * 1024  # 4 MiB: well over the 1 MiB above which a task follows its data
    on_b = make_array.options(scheduling_strategy=on(two.b_id)).remote(n)
    on_head = make_array.options(scheduling_strategy=on(two.head_id)).remote(n)
    ready, _ = nc.wait([on_b, on_head], num_returns=2, timeout=30)
    assert len(ready) == 2
    expected = sha256_of(np.arange(n, dtype=np.uint64))
    # No strategy, no resources: only the argument's location says where to run.
    assert nc.get(checksum.remote(on_b), timeout=30) == (expected, two.b_id)
    assert nc.get(checksum.remote(on_head), timeout=30) == (expected, two.head_id)


def test_a_200mb_array_made_on_one_node_is_used_intact_on_the_other(two: TwoNodes) -> None:
    n = 25 * 1024 * 1024  # uint64s: 200 MiB
    expected = sha256_of(np.arange(n, dtype=np.uint64))
    big = make_array.options(scheduling_strategy=on(two.b_id)).remote(n)
    assert nc.get(checksum.options(scheduling_strategy=on(two.b_id)).remote(big), timeout=60) == (
        expected,
        two.b_id,
    )
    # Pulled from B's store into the head's, and read there by a task and by the driver.
    remote_sum = checksum.options(scheduling_strategy=on(two.head_id)).remote(big)
    assert nc.get(remote_sum, timeout=60) == (expected, two.head_id)
    local = nc.get(big, timeout=60)
    assert local.nbytes == n * 8
    assert sha256_of(local) == expected
    del local, big


def test_objects_are_used_on_the_other_node_as_soon_as_their_refs_exist(two: TwoNodes) -> None:
    """A ref is usable before its node's agent has read the seal (a one-way message), so a
    pull can reach the holder first: it waits for the seal instead of finding nothing."""
    n = 20_000  # uint64s: 160 KB, over the inline threshold, so each one is stored
    expected = sha256_of(np.arange(n, dtype=np.uint64))
    on_head = checksum.options(scheduling_strategy=on(two.head_id))
    on_b = checksum.options(scheduling_strategy=on(two.b_id))
    for _ in range(100):
        made_on_b = make_array.options(scheduling_strategy=on(two.b_id)).remote(n)
        put_on_head = nc.put(np.arange(n, dtype=np.uint64))  # (the driver's node)
        got = nc.get([on_head.remote(made_on_b), on_b.remote(put_on_head)], timeout=60)
        assert got == [(expected, two.head_id), (expected, two.b_id)]


def test_a_node_with_the_wrong_token_cannot_join(two: TwoNodes) -> None:
    intruder = two.cluster.launch(
        "intruder", ["--address", two.head.address, "--num-cpus", "1"], token="not-the-token"
    )
    code = intruder.cli.wait(30)
    assert code != 0
    out = intruder.output()
    assert "refused this node's token" in out or "authentication failed" in out, out
    poll(lambda: "refused connection" in two.head.output(), 10, two.head.output)
    poll(intruder.all_gone, 10, intruder.left)
    # The cluster is as it was, and works.
    assert {n["NodeID"] for n in nc.nodes()} == {two.head_id, two.b_id}
    assert nc.get(where.options(resources={"bigmem": 1}).remote(), timeout=30) == two.b_id


# ------------------------------------------------- nodes that die, freeze or leave


@dataclass
class Mortal:
    cluster: CliCluster
    head_id: str


@pytest.fixture(scope="module")
def mortal_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mortal]:
    """A head that declares a node dead after 2 s without a heartbeat."""
    cluster = CliCluster(tmp_path_factory.mktemp("mortal"), NBCLUSTER_NODE_TIMEOUT_S="2")
    try:
        head = cluster.start_head("--num-cpus", "1")
        attach(head.address, cluster.token)
        yield Mortal(cluster, node_id_of(head.address))
    finally:
        nc.shutdown()
        cluster.close()


@pytest.fixture
def mortal(mortal_cluster: Mortal) -> Mortal:
    attach(mortal_cluster.cluster.head.address, mortal_cluster.cluster.token)
    return mortal_cluster


def join_and_use(m: Mortal, name: str) -> tuple[CliNode, str]:
    """A node with a resource of its own name that has run a task."""
    node = m.cluster.join(name, "--num-cpus", "1", "--resources", json.dumps({name: 1}))
    node_id = node_id_of(node.address)
    assert nc.get(where.options(resources={name: 1}).remote(), timeout=30) == node_id
    node.processes()  # remember its workers, to check they are gone later
    return node, node_id


def reported_dead(node_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``nodes()`` until it reports the node dead; its entry."""

    def dead() -> dict[str, Any] | None:
        entry = node_entry(node_id)
        return None if entry["Alive"] else entry

    entry = poll(dead, timeout, lambda: f"node {node_id} still alive: {node_entry(node_id)}")
    return dict(entry)


def assert_work_goes_on(m: Mortal) -> None:
    assert nc.get([where.remote() for _ in range(4)], timeout=30) == [m.head_id] * 4


def test_a_killed_node_is_reported_dead(mortal: Mortal) -> None:
    node, node_id = join_and_use(mortal, "doomed")
    os.kill(node.node_pid, signal.SIGKILL)
    t0 = time.monotonic()
    dead = reported_dead(node_id, timeout=5)
    assert time.monotonic() - t0 < 5
    assert dead["DeathReason"], dead
    assert "doomed" not in nc.cluster_resources()
    # Its workers die with it, and the CLI that ran it exits.
    poll(node.all_gone, 10, node.left)
    assert_work_goes_on(mortal)


def test_a_frozen_node_is_declared_dead_after_the_heartbeat_timeout(mortal: Mortal) -> None:
    node, node_id = join_and_use(mortal, "frozen")
    os.kill(node.node_pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        dead = reported_dead(node_id, timeout=8)
        silent = time.monotonic() - t0
        assert "heartbeat" in dead["DeathReason"], dead
        assert silent >= 1.0, f"declared dead after {silent:.1f}s, before the 2 s timeout"
        assert_work_goes_on(mortal)
    finally:
        os.kill(node.node_pid, signal.SIGCONT)
    # Thawed, it finds the head has dropped it and leaves the cluster by itself.
    poll(node.all_gone, 10, node.left)
    assert not node_entry(node_id)["Alive"]


def test_a_node_stopped_with_sigterm_leaves_cleanly_and_is_reported_dead(
    mortal: Mortal,
) -> None:
    node, node_id = join_and_use(mortal, "leaving")
    record = mortal.cluster.temp_dir / "clusters" / f"{node.node_pid}.json"
    assert record.exists()
    assert node.terminate() == 0, node.output()
    poll(node.all_gone, 10, node.left)
    dead = reported_dead(node_id, timeout=5)
    assert dead["DeathReason"], dead
    assert not record.exists(), "the CLI leaves its node record behind"
    assert "Traceback" not in node.output(), node.output()
    assert_work_goes_on(mortal)


# ------------------------------------------------------------ start in the background, stop


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    cluster = CliCluster(tmp_path)  # its own temp dir: `stop` sees only these nodes
    procs = []
    try:
        token = {"NBCLUSTER_TOKEN": cluster.token}
        head = cluster.cli("start", "--head", "--num-cpus", "1", **token)
        assert head.returncode == 0, head.stderr
        address = re.search(r"head node started at (\S+)", head.stdout)
        assert address, head.stdout
        node = cluster.cli("start", "--address", address.group(1), "--num-cpus", "1", **token)
        assert node.returncode == 0, node.stderr
        assert len(records(cluster.temp_dir, "cli")) == 2
        procs = recorded_nodes(cluster.temp_dir)
        # Two nodes, each with a fork server and a worker, each named by its role in ps.
        roles = sorted(p.cmdline()[0] for p in procs)
        assert roles == ["nbcluster::fork_server"] * 2 + ["nbcluster::head", "nbcluster::node"] + [
            "nbcluster::worker"
        ] * 2, describe(p.pid for p in procs)

        status = cluster.cli("status")
        assert "Nodes: 2 alive, 0 dead" in status.stdout, status.stdout + status.stderr
        records_before = sorted(records(cluster.temp_dir), key=lambda r: r["role"] != "head")

        stop = cluster.cli("stop")
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.splitlines() == [
            f"stopped node at {records_before[1]['node_address']} (pid {records_before[1]['pid']})",
            f"stopped head node at {address.group(1)} (pid {records_before[0]['pid']})",
        ], stop.stdout
        poll(
            lambda: all(gone(p) for p in procs),
            10,
            lambda: "left: " + describe(p.pid for p in procs if not gone(p)),
        )
        # Nothing is left of either: no record, no session directory, no token, no log.
        assert sorted(p.name for p in cluster.temp_dir.rglob("*")) == ["clusters"]
        # With nothing left to find, a driver looking for the local cluster says so.
        again = cluster.cli("status")
        assert again.returncode != 0
        assert "no running cluster" in again.stderr
    finally:
        kill_quietly(procs)


# ------------------------------------------------------------------ two drivers, one CPU

BUSY_DRIVER = r"""
import nbcluster as nc
nc.init()  # NBCLUSTER_ADDRESS and NBCLUSTER_TOKEN
@nc.remote
def tick():
    return 1
while True:  # short tasks, back to back, for as long as it lives
    nc.get([tick.remote() for _ in range(4)])
"""


class Starved(AssertionError):
    """The second driver's task did not run while the first kept the CPU busy."""


def test_a_second_driver_is_not_starved_by_a_busy_one(tmp_path: Path) -> None:
    with CliCluster(tmp_path) as cluster:
        head = cluster.start_head("--num-cpus", "1")
        with open(tmp_path / "busy.log", "wb") as log:
            busy = subprocess.Popen(
                [sys.executable, "-c", BUSY_DRIVER], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=cluster.driver_env(), cwd=str(REPO_ROOT),
            )  # fmt: skip
        try:
            attach(head.address, cluster.token)
            head_id = node_id_of(head.address)
            poll(lambda: free_cpus(head_id) == 0.0, 20, lambda: str(node_entry(head_id)))
            mine = where.remote()
            ready, _ = nc.wait([mine], timeout=5)
            if not ready:
                raise Starved("a one-task driver waited 5 s behind a busy one on 1 CPU")
            assert nc.get(mine) == head_id
        finally:
            nc.shutdown()
            busy.kill()
            busy.wait()

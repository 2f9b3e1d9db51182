"""Two "machines" on one host: a node in each of two network namespaces, joined by a veth pair.

Each namespace has only its loopback and one end of the veth (10.231.47.1/24 and .2/24, a
subnet that exists nowhere else), so the head and the node can reach each other only through
their advertised addresses, never through a shared 127.0.0.1 — the situation of two real
machines. The head runs in ns1, the second node and the driver in ns2, all started as a user
would (``ip netns exec nsX python -m nbcluster ...``).

Needs root (or CAP_NET_ADMIN) and iproute2's ``ip``; skipped with the reason otherwise.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from cluster_helpers import CliCluster, CliNode, run_driver
from netns_pair import Pair, netns_pair

SUBNET = "10.231.47"
HEAD_IP, NODE_IP = f"{SUBNET}.1", f"{SUBNET}.2"
ARRAY_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def namespaces() -> Iterator[Pair]:
    """ns1 (10.231.47.1) and ns2 (10.231.47.2) joined by a veth pair."""
    with netns_pair("nbct", SUBNET) as pair:
        yield pair


@dataclass
class NetnsCluster:
    ns: Pair
    cluster: CliCluster
    head: CliNode
    node: CliNode

    def driver(self, script: str, timeout: float = 60.0) -> dict[str, object]:
        """Run a driver script inside ns2; its JSON report."""
        return dict(
            run_driver(script, self.cluster.driver_env(), self.ns.exec_in(self.ns.ns2), timeout)
        )


@pytest.fixture(scope="module")
def netns_cluster(
    namespaces: Pair, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NetnsCluster]:
    cluster = CliCluster(tmp_path_factory.mktemp("netns"))
    try:
        head = cluster.start_head(
            "--host", HEAD_IP, "--num-cpus", "1", "--resources", '{"ns1": 1}',
            prefix=namespaces.exec_in(namespaces.ns1),
        )  # fmt: skip
        node = cluster.join(
            "node-ns2", "--host", NODE_IP, "--num-cpus", "1", "--resources", '{"ns2": 1}',
            prefix=namespaces.exec_in(namespaces.ns2),
        )  # fmt: skip
        yield NetnsCluster(namespaces, cluster, head, node)
    finally:
        cluster.close()


def test_nodes_in_two_namespaces_form_one_cluster(netns_cluster: NetnsCluster) -> None:
    c = netns_cluster
    assert c.head.host == HEAD_IP and c.node.host == NODE_IP
    # The head is reachable only inside the namespaces: the host has no route to it.
    with pytest.raises(OSError):
        socket.create_connection((HEAD_IP, c.head.port), timeout=2).close()

    report = c.driver(
        """
import json, nbcluster as nc
nc.init()  # NBCLUSTER_ADDRESS is the head in ns1: the driver finds its own node in ns2
@nc.remote
def where():
    return nc.get_runtime_context().get_node_id()
print(json.dumps({
    "me": nc.get_runtime_context().get_node_id(),
    "nodes": {n["NodeID"]: [n["Address"], n["Alive"], n["Resources"]] for n in nc.nodes()},
    "ran_on": nc.get(where.options(resources={"ns2": 1}).remote(), timeout=30),
}))
"""
    )
    nodes = report["nodes"]
    assert isinstance(nodes, dict)
    by_address = {
        address: (node_id, alive, res) for node_id, (address, alive, res) in nodes.items()
    }
    assert set(by_address) == {c.head.address, c.node.address}
    assert all(alive for _, alive, _ in by_address.values())
    assert by_address[c.head.address][2] == {"CPU": 1.0, "ns1": 1.0}
    ns2_id = by_address[c.node.address][0]
    assert report["me"] == ns2_id
    assert report["ran_on"] == ns2_id

    status = subprocess.run(
        [*c.ns.exec_in(c.ns.ns2), sys.executable, "-m", "nbcluster", "status"],
        check=False, capture_output=True, text=True, timeout=60, env=c.cluster.driver_env(),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "Nodes: 2 alive, 0 dead" in status.stdout
    assert c.head.address in status.stdout and c.node.address in status.stdout


MOVE_50MB = """
import hashlib, json, numpy as np, nbcluster as nc
nc.init()
N = __BYTES__ // 8
T = 5  # seconds: a healthy cluster needs well under one for each step

@nc.remote
def where():
    return nc.get_runtime_context().get_node_id()

@nc.remote
def make(n):
    return np.arange(n, dtype=np.uint64)

@nc.remote
def digest(a):
    return hashlib.sha256(memoryview(a)).hexdigest(), nc.get_runtime_context().get_node_id()

def on(name):
    return {"resources": {name: 1}}

out = {"ns2": nc.get(where.options(**on("ns2")).remote(), timeout=T),
       "ns1": nc.get(where.options(**on("ns1")).remote(), timeout=T)}
# Made in ns1 and pulled into ns2 at once (the pull may reach ns1 before the seal of the
# result does: the transfer waits for it), then read in ns1 too.
big = make.options(**on("ns1")).remote(N)
out["made_in_ns1_read_in_ns2"] = nc.get(digest.options(**on("ns2")).remote(big), timeout=T)
out["made_in_ns1_read_in_ns1"] = nc.get(digest.options(**on("ns1")).remote(big), timeout=T)
out["made_in_ns1_read_by_driver"] = hashlib.sha256(memoryview(nc.get(big, timeout=T))).hexdigest()
# Put by the driver in ns2, read in ns2, then pulled the other way into ns1.
mine = nc.put(np.arange(N, dtype=np.uint64))
out["put_in_ns2_read_in_ns2"] = nc.get(digest.options(**on("ns2")).remote(mine), timeout=T)
out["put_in_ns2_read_in_ns1"] = nc.get(digest.options(**on("ns1")).remote(mine), timeout=T)
print(json.dumps(out))
""".replace("__BYTES__", str(ARRAY_BYTES))


class UnreachableWorker(AssertionError):
    """The known failure below, told apart from any other."""


def test_a_driver_in_ns2_runs_tasks_on_both_nodes_and_moves_50mb_across(
    netns_cluster: NetnsCluster,
) -> None:
    c = netns_cluster
    expected = hashlib.sha256(np.arange(ARRAY_BYTES // 8, dtype=np.uint64).data).hexdigest()
    try:
        report = c.driver(MOVE_50MB)
    except AssertionError as e:
        if "cannot reach leased worker 127.0.0.1:" in str(e):
            raise UnreachableWorker(str(e)[-2000:]) from None
        raise
    ids = {c.head.address: report["ns1"], c.node.address: report["ns2"]}
    assert ids[c.head.address] != ids[c.node.address]
    ns1, ns2 = ids[c.head.address], ids[c.node.address]
    assert report["made_in_ns1_read_in_ns1"] == [expected, ns1]
    assert report["made_in_ns1_read_in_ns2"] == [expected, ns2]
    assert report["made_in_ns1_read_by_driver"] == expected
    assert report["put_in_ns2_read_in_ns2"] == [expected, ns2]
    assert report["put_in_ns2_read_in_ns1"] == [expected, ns1]

"""Client mode: a driver on a machine with no node uses a remote cluster with the same API.

The cluster runs in one network namespace ("machine 1"); the driver runs in another that has
no node, so it has no shared-memory store to map: large objects it puts and gets travel
through the head node, in chunks. Tasks, actors, ``wait``, ``nodes`` and the CLI work as on a
machine with a node.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from cluster_helpers import CliCluster, run_driver
from netns_pair import Pair, netns_pair

SUBNET = "10.231.52"


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pair, CliCluster]]:
    with netns_pair("nbcm", SUBNET) as pair:
        cluster = CliCluster(tmp_path_factory.mktemp("client"))
        try:
            cluster.start_head("--host", "0.0.0.0", "--num-cpus", "2",
                               prefix=Pair.exec_in(pair.ns1))  # fmt: skip
            yield pair, cluster
        finally:
            cluster.close()


DRIVER = """
import hashlib, json, numpy as np, nbcluster as nc
nc.init()   # NBCLUSTER_ADDRESS / NBCLUSTER_TOKEN: the head on the other machine
import nbcluster.runtime.ownership.object_ref as o
client = o.get_core().client_mode

@nc.remote
def digest(a):
    return hashlib.sha256(memoryview(a)).hexdigest()

@nc.remote
def make(n):
    return np.arange(n, dtype=np.uint64)

@nc.remote
class Box:
    def __init__(self, a): self.a = a
    def total(self): return int(self.a.sum())

N = 3_000_000   # 24 MB: three chunks each way
a = np.arange(N, dtype=np.uint64)
ref = nc.put(a)
made = nc.get(make.remote(N), timeout=60)
ready, _ = nc.wait([make.remote(10)], timeout=30)
print(json.dumps({
    "client": client,
    "put_read_remotely": nc.get(digest.remote(ref), timeout=60),
    "put_read_back": hashlib.sha256(memoryview(nc.get(ref))).hexdigest(),
    "made_remotely": hashlib.sha256(memoryview(made)).hexdigest(),
    "actor": nc.get(Box.remote(ref).total.remote(), timeout=60),
    "waited": len(ready),
    "nodes": [n["Address"] for n in nc.nodes()],
}))
"""


def test_a_driver_without_a_node_puts_gets_and_submits(
    remote_cluster: tuple[Pair, CliCluster],
) -> None:
    import hashlib

    import numpy as np

    pair, cluster = remote_cluster
    expected = hashlib.sha256(np.arange(3_000_000, dtype=np.uint64).data).hexdigest()
    report = run_driver(DRIVER, cluster.driver_env(), Pair.exec_in(pair.ns2), timeout=120)
    assert report["client"] is True
    assert report["put_read_remotely"] == expected
    assert report["put_read_back"] == expected
    assert report["made_remotely"] == expected
    assert report["actor"] == sum(range(3_000_000))
    assert report["waited"] == 1
    assert report["nodes"] == [cluster.head.address]


def test_the_cli_works_from_a_machine_without_a_node(
    remote_cluster: tuple[Pair, CliCluster],
) -> None:
    pair, cluster = remote_cluster
    done = subprocess.run(
        [*Pair.exec_in(pair.ns2), sys.executable, "-m", "nbcluster", "status"],
        capture_output=True, text=True, timeout=60, env=cluster.driver_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Nodes: 1 alive, 0 dead" in done.stdout and cluster.head.address in done.stdout


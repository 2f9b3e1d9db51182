"""The cluster the fault-injection suite breaks: a head and two worker nodes, from the CLI.

The head has one CPU and a 2 GiB store; each worker node one CPU, a 2 GiB store and the
resource ``pool``, which pins the 100 MB objects (and one actor) to the nodes that get killed.
Stores are large enough that nothing spills: this suite is about processes dying, not about
memory. Nodes are declared dead after 2 s of silence (``NBCLUSTER_NODE_TIMEOUT_S``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_helpers import CliCluster, attach

import nbcluster as nc
from faults.helpers import CHAOS_STORE_BYTES, ChaosCluster


@pytest.fixture(scope="module")
def chaos_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    # No local cluster runs here: tests/conftest.py stops each module's at its end.
    cluster = CliCluster(tmp_path_factory.mktemp("chaos"), NBCLUSTER_NODE_TIMEOUT_S="2")
    try:
        head = cluster.start_head("--num-cpus", "1", "--object-store-memory", CHAOS_STORE_BYTES)
        attach(head.address, cluster.token)
        chaos = ChaosCluster(cluster, head)
        chaos.workers = [chaos.start_worker(), chaos.start_worker()]
        yield chaos
    finally:
        nc.shutdown()
        cluster.close()

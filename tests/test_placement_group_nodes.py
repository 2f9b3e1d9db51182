"""Placement groups across nodes started with the CLI: STRICT_SPREAD waits for a second node
and is placed when it joins, tasks and actors follow their bundle to its node, and a node
that dies takes its bundles, which are placed again when a node can hold them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import CliCluster, attach, node_id_of, poll, run_driver

import nbcluster as nc
from nbcluster.util import (
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from nbcluster.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup

pytestmark = pytest.mark.slow


@nc.remote(num_cpus=0)
def where() -> str:
    return nc.get_runtime_context().get_node_id()


@nc.remote
class Member:
    def node(self) -> str:
        return nc.get_runtime_context().get_node_id()


@pytest.fixture
def head_only(tmp_path: Path) -> Iterator[CliCluster]:
    cluster = CliCluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", "2")
        attach(cluster.head.address, cluster.token)
        yield cluster
    finally:
        nc.shutdown()
        cluster.close()


def state(pg: Any) -> str:
    return str(placement_group_table(pg)["state"])


def test_strict_spread_waits_for_a_second_node_and_follows_nodes(head_only: CliCluster) -> None:
    cluster = head_only
    head_id = node_id_of(cluster.head.address)
    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    ready = pg.ready()
    assert nc.wait([ready], timeout=1.0)[0] == []  # one node cannot hold two bundles apart
    assert state(pg) == "PENDING"
    assert nc.available_resources()["CPU"] == 2.0

    b = cluster.join("node-b", "--num-cpus", "2")
    b_id = node_id_of(b.address)
    assert nc.get(ready, timeout=60) == pg
    row = placement_group_table(pg)
    assert row["state"] == "CREATED"
    assert sorted(row["bundles_to_node_id"].values()) == sorted([head_id, b_id])
    for index, node in row["bundles_to_node_id"].items():
        assert nc.get(where.options(scheduling_strategy=InGroup(pg, index)).remote(),
                      timeout=60) == node  # fmt: skip
    on_b = next(i for i, n in row["bundles_to_node_id"].items() if n == b_id)
    actor = Member.options(scheduling_strategy=InGroup(pg, on_b), max_restarts=-1).remote()
    assert nc.get(actor.node.remote(), timeout=60) == b_id

    # Node B dies: its bundle is lost, and the group waits for a node to hold it again
    # (apart from the head, which holds the other), never claiming B's resources.
    b.kill()
    poll(lambda: state(pg) == "RESCHEDULING", 30, lambda: placement_group_table(pg))
    assert b_id not in placement_group_table(pg)["bundles_to_node_id"].values()
    c = cluster.join("node-c", "--num-cpus", "1")
    c_id = node_id_of(c.address)
    poll(lambda: state(pg) == "CREATED", 60, lambda: placement_group_table(pg))
    assert placement_group_table(pg)["bundles_to_node_id"][on_b] == c_id
    assert nc.get(actor.node.remote(), timeout=60) == c_id  # restarted in its bundle

    remove_placement_group(pg)
    poll(lambda: nc.available_resources().get("CPU") == 3.0, 30,
         nc.available_resources)  # fmt: skip


def test_pack_spills_to_a_second_node_and_spread_spreads(head_only: CliCluster) -> None:
    cluster = head_only
    head_id = node_id_of(cluster.head.address)
    b_id = node_id_of(cluster.join("node-b", "--num-cpus", "2").address)
    spread = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    assert spread.wait(60)
    assert sorted(placement_group_table(spread)["bundles_to_node_id"].values()) == sorted(
        [head_id, b_id]
    )
    remove_placement_group(spread)
    poll(lambda: nc.available_resources().get("CPU") == 4.0, 30,
         nc.available_resources)  # fmt: skip
    pack = placement_group([{"CPU": 2}, {"CPU": 1}], strategy="PACK")
    assert pack.wait(60)
    nodes = placement_group_table(pack)["bundles_to_node_id"]
    assert nodes[0] != nodes[1]  # no node holds three CPUs: PACK spans two
    strict = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_PACK")
    assert strict.wait(0.5) is False  # one CPU left on each node: not two on one
    remove_placement_group(pack)
    assert strict.wait(60)
    assert len(set(placement_group_table(strict)["bundles_to_node_id"].values())) == 1
    remove_placement_group(strict)


DRIVER = """
import json, nbcluster as nc
from nbcluster.util import placement_group
nc.init(address="auto")
mine = placement_group([{"CPU": 1}])
kept = placement_group([{"CPU": 1}], name="kept", lifetime="detached")
assert mine.wait(60) and kept.wait(60)
print(json.dumps([mine.id.hex(), kept.id.hex()]))
"""


ELSEWHERE = """
import json, nbcluster as nc
from nbcluster.util import get_placement_group
nc.init(address="auto", namespace="elsewhere")
try:
    get_placement_group("kept")
    print(json.dumps("found"))
except ValueError:
    print(json.dumps("not found"))
"""


def test_a_group_ends_with_its_driver_unless_detached(head_only: CliCluster) -> None:
    cluster = head_only
    mine, kept = run_driver(DRIVER, cluster.driver_env())
    poll(lambda: placement_group_table()[mine]["state"] == "REMOVED", 30,
         placement_group_table)  # fmt: skip
    table = placement_group_table()
    assert table[kept]["state"] == "CREATED" and table[kept]["is_detached"]
    poll(lambda: nc.available_resources().get("CPU") == 1.0, 30,
         nc.available_resources)  # fmt: skip
    assert run_driver(ELSEWHERE, cluster.driver_env()) == "not found"  # names are per namespace
    remove_placement_group(get_placement_group("kept"))
    poll(lambda: nc.available_resources().get("CPU") == 2.0, 30,
         nc.available_resources)  # fmt: skip

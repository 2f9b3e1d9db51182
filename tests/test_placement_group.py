"""Placement groups on one node, as a Ray user writes them: reserve bundles, wait for them,
run tasks and actors inside them, find them by name, read the table, remove them.

The cluster is the default two-CPU one; every test removes the groups it made, so the next
starts with both CPUs free. Groups across nodes are in ``test_placement_group_nodes``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import poll
from conftest import wait_for_file

import nbcluster as nc
from nbcluster.exceptions import ActorDiedError, TaskPlacementGroupRemoved
from nbcluster.util import (
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from nbcluster.util.placement_group import PlacementGroup
from nbcluster.util.scheduling_strategies import PlacementGroupSchedulingStrategy as InGroup


@nc.remote
def where() -> tuple[str, Any]:
    return nc.get_runtime_context().get_node_id(), get_current_placement_group()


@nc.remote
def hold(gate: str, started: str) -> str:
    Path(started).touch()
    wait_for_file(gate)
    return "done"


@nc.remote
class Member:
    def group(self) -> Any:
        return get_current_placement_group()


@pytest.fixture
def groups(cluster: Any) -> Iterator[list[PlacementGroup]]:
    """Groups the test makes; removed after it, so both CPUs are free for the next test."""
    made: list[PlacementGroup] = []
    yield made
    for pg in made:
        remove_placement_group(pg)
    poll(lambda: nc.available_resources().get("CPU") == 2.0, 30,
         lambda: f"CPUs not given back: {nc.available_resources()}")  # fmt: skip


def make(groups: list[PlacementGroup], *args: Any, **kwargs: Any) -> PlacementGroup:
    pg = placement_group(*args, **kwargs)
    groups.append(pg)
    return pg


def free_cpus() -> float:
    return float(nc.available_resources().get("CPU", 0.0))


def test_pack_reserves_both_bundles_on_the_node(groups: list[PlacementGroup]) -> None:
    pg = make(groups, [{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert pg.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}] and pg.bundle_count == 2
    assert nc.get(pg.ready(), timeout=30) == pg
    assert pg.wait(10) is True
    node = nc.get_runtime_context().get_node_id()
    row = placement_group_table(pg)
    assert row["state"] == "CREATED" and row["strategy"] == "PACK"
    assert row["bundles"] == {0: {"CPU": 1.0}, 1: {"CPU": 1.0}}
    assert row["bundles_to_node_id"] == {0: node, 1: node}
    assert pg.id.hex() in placement_group_table()
    # The node's CPUs are the group's now: in Ray's names, per bundle and for the group.
    poll(lambda: free_cpus() == 0.0, 10, nc.available_resources)
    total = nc.cluster_resources()
    assert total[f"CPU_group_{pg.id.hex()}"] == 2.0
    assert total[f"CPU_group_0_{pg.id.hex()}"] == 1.0


def test_strict_pack_too_big_stays_pending_and_warns_once(groups: list[PlacementGroup]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pg = make(groups, [{"CPU": 2}, {"CPU": 1}], strategy="STRICT_PACK")

        def warned() -> list[str]:
            return [str(w.message) for w in caught if pg.id.hex() in str(w.message)]

        said = poll(warned, 20, "no warning for a group no node can hold")
    assert "cannot be placed" in said[0] and "CPU: 2" in said[0], said
    assert len(said) == 1
    assert pg.wait(0.5) is False
    assert placement_group_table(pg)["state"] == "PENDING"
    assert free_cpus() == 2.0  # nothing held for a group that is not placed


def test_tasks_and_actors_run_in_their_bundle_and_within_it(
    groups: list[PlacementGroup], tmp_path: Path
) -> None:
    pg = make(groups, [{"CPU": 1}])
    assert pg.wait(30)
    node = nc.get_runtime_context().get_node_id()
    assert nc.get(where.options(scheduling_strategy=InGroup(pg, 0)).remote(), timeout=30) == (
        node, pg,
    )  # fmt: skip
    actor = Member.options(scheduling_strategy=InGroup(pg)).remote()
    assert nc.get(actor.group.remote(), timeout=30) == pg
    nc.kill(actor)
    with pytest.raises(ValueError, match="cannot fit into any bundles"):
        where.options(num_cpus=2, scheduling_strategy=InGroup(pg)).remote()
    with pytest.raises(ValueError, match="bundle index 1 is invalid"):
        where.options(scheduling_strategy=InGroup(pg, 1)).remote()
    # The bundle holds one CPU: a second task in it waits for the first, while a task
    # outside the group runs on the node's other CPU.
    gate, first, second = tmp_path / "gate", tmp_path / "first", tmp_path / "second"
    a = hold.options(scheduling_strategy=InGroup(pg)).remote(str(gate), str(first))
    poll(first.exists, 30, "the first task in the bundle never started")
    b = hold.options(scheduling_strategy=InGroup(pg)).remote(str(gate), str(second))
    assert nc.get(where.remote(), timeout=30) == (node, None)
    assert nc.wait([b], timeout=0.5)[0] == [] and not second.exists()
    gate.touch()
    assert nc.get([a, b], timeout=30) == ["done", "done"]


def test_a_group_waits_for_resources_a_removed_group_frees(
    groups: list[PlacementGroup],
) -> None:
    big = make(groups, [{"CPU": 2}])
    assert big.wait(30)
    small = make(groups, [{"CPU": 1}], strategy="SPREAD")
    ready = small.ready()
    assert nc.wait([ready], timeout=0.5)[0] == []
    assert placement_group_table(small)["state"] == "PENDING"
    remove_placement_group(big)
    assert nc.get(ready, timeout=30) == small
    assert placement_group_table(big)["state"] == "REMOVED"
    poll(lambda: free_cpus() == 1.0, 10, nc.available_resources)
    assert not any(k.startswith("CPU_group") and big.id.hex() in k
                   for k in nc.cluster_resources())  # fmt: skip


def test_remove_kills_its_actors_and_fails_its_waiting_tasks(
    groups: list[PlacementGroup],
) -> None:
    pg = make(groups, [{"CPU": 1}, {"CPU": 1}])
    actor = Member.options(scheduling_strategy=InGroup(pg, 1)).remote()
    assert nc.get(actor.group.remote(), timeout=30) == pg
    never = make(groups, [{"CPU": 8}])
    waiting = where.options(scheduling_strategy=InGroup(never)).remote()
    remove_placement_group(pg)
    remove_placement_group(never)
    with pytest.raises(ActorDiedError):
        nc.get(actor.group.remote(), timeout=30)
    with pytest.raises(TaskPlacementGroupRemoved):
        nc.get(waiting, timeout=30)
    poll(lambda: free_cpus() == 2.0, 30, nc.available_resources)
    # A task for a group removed before it was submitted fails too, rather than hang.
    with pytest.raises(TaskPlacementGroupRemoved):
        nc.get(where.options(scheduling_strategy=InGroup(pg)).remote(), timeout=30)


def test_a_named_group_is_found_by_name(groups: list[PlacementGroup]) -> None:
    pg = make(groups, [{"CPU": 1}], name="trainers")
    assert get_placement_group("trainers") == pg
    assert get_placement_group("trainers").bundle_specs == [{"CPU": 1.0}]
    assert placement_group_table(pg)["name"] == "trainers"
    with pytest.raises(ValueError, match="already exists"):
        make(groups, [{"CPU": 1}], name="trainers")
    with pytest.raises(ValueError, match="Failed to look up placement group"):
        get_placement_group("nobody")
    remove_placement_group(pg)
    with pytest.raises(ValueError, match="Failed to look up placement group"):
        get_placement_group("trainers")


def test_bad_groups_are_refused_with_rays_errors(cluster: Any) -> None:
    with pytest.raises(ValueError, match="Invalid placement group strategy"):
        placement_group([{"CPU": 1}], strategy="TIGHT")
    with pytest.raises(ValueError, match="non-empty list"):
        placement_group([])
    with pytest.raises(ValueError, match="only 0 values"):
        placement_group([{"CPU": 0}])
    with pytest.raises(ValueError, match="lifetime"):
        placement_group([{"CPU": 1}], lifetime="forever")
    assert get_current_placement_group() is None  # a driver is in no group


@nc.remote
def gpu_ids() -> list[int]:
    return nc.get_gpu_ids()


def test_a_task_in_a_gpu_bundle_gets_a_device(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, num_gpus=2)
    pg = placement_group([{"GPU": 1}], strategy="STRICT_PACK")
    assert pg.wait(30)
    assert nc.available_resources().get("GPU") == 1.0
    ids = nc.get(gpu_ids.options(num_cpus=0, num_gpus=1,
                                 scheduling_strategy=InGroup(pg)).remote(), timeout=30)  # fmt: skip
    assert len(ids) == 1 and ids[0] in (0, 1)
    remove_placement_group(pg)

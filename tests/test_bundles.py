"""Where ``place`` puts a placement group's bundles, by Ray's four strategies, and what a
task in a bundle asks for (``scheduling/bundles``): pure functions, no cluster."""

from __future__ import annotations

from nbcluster.runtime.scheduling.bundles import (
    bundle_demand,
    gpu_amount,
    group_of,
    group_resources,
    place,
)
from nbcluster.runtime.scheduling.resources import fits

TWO = {"a": {"CPU": 2.0}, "b": {"CPU": 2.0}}


def test_pack_keeps_bundles_on_one_node_when_it_can() -> None:
    plan = place([{"CPU": 1}, {"CPU": 1}], "PACK", TWO)
    assert plan is not None and len(set(plan.values())) == 1


def test_pack_spans_nodes_when_no_node_holds_all() -> None:
    plan = place([{"CPU": 2}, {"CPU": 1}], "PACK", TWO)
    assert plan is not None and plan[0] != plan[1]


def test_strict_pack_never_spans_nodes() -> None:
    assert place([{"CPU": 2}, {"CPU": 1}], "STRICT_PACK", TWO) is None
    assert place([{"CPU": 1}, {"CPU": 1}], "STRICT_PACK", TWO) is not None


def test_spread_prefers_distinct_nodes_but_may_share() -> None:
    plan = place([{"CPU": 1}, {"CPU": 1}], "SPREAD", TWO)
    assert plan is not None and plan[0] != plan[1]
    plan = place([{"CPU": 1}] * 3, "SPREAD", TWO)
    assert plan is not None and set(plan.values()) == {"a", "b"}


def test_strict_spread_needs_a_node_per_bundle_and_searches_for_one() -> None:
    assert place([{"CPU": 1}] * 3, "STRICT_SPREAD", TWO) is None
    # Only a holds the GPU bundle: the search must not give a to the CPU bundle first.
    nodes = {"a": {"CPU": 4.0, "GPU": 1.0}, "b": {"CPU": 1.0}}
    assert place([{"CPU": 1}, {"GPU": 1}], "STRICT_SPREAD", nodes) == {0: "b", 1: "a"}


def test_lost_bundles_are_placed_beside_the_ones_that_stay() -> None:
    plan = place([{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", TWO, fixed={0: "a"})
    assert plan == {0: "a", 1: "b"}
    assert place([{"CPU": 1}, {"CPU": 1}], "STRICT_SPREAD", {"a": {"CPU": 2.0}},
                 fixed={0: "a"}) is None  # fmt: skip
    assert place([{"CPU": 1}, {"CPU": 1}], "STRICT_PACK", TWO, fixed={0: "b"}) == {0: "b", 1: "b"}


def test_a_task_in_a_bundle_asks_for_the_bundles_names() -> None:
    reserved = group_resources("ab12", 0, {"CPU": 2.0, "GPU": 1.0})
    assert reserved["CPU_group_0_ab12"] == 2.0 and reserved["CPU_group_ab12"] == 2.0
    demand = bundle_demand({"CPU": 1.0, "GPU": 1.0}, "ab12", 0)
    assert fits(reserved, demand) and group_of(demand) == "ab12"
    assert not fits(reserved, bundle_demand({"CPU": 3.0}, "ab12", 0))
    assert not fits(reserved, bundle_demand({"CPU": 1.0}, "ab12", 1))  # another bundle
    assert fits(reserved, bundle_demand({}, "ab12", -1))  # no resources: still in the group
    assert gpu_amount(demand) == 1.0 and gpu_amount({"CPU": 1.0}) == 0.0
    assert group_of({"CPU": 1.0}) is None

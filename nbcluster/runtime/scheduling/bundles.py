"""Placement group bundles: where a group's bundles go, and what a task in one asks for.

A reserved bundle becomes resources of its node, named after the group and the bundle, as in
Ray: a bundle ``{"CPU": 2}`` with index 0 of group ``ab12`` adds ``CPU_group_0_ab12: 2`` (that
bundle) and ``CPU_group_ab12: 2`` (any bundle of the group on that node), plus a
``bundle_group_...`` marker of 1000 units that lets tasks asking for no resources land in the
bundle too. A task with a ``PlacementGroupSchedulingStrategy`` asks for those names instead
of ``CPU``; the ordinary leasing, spillback and view machinery then schedules it unchanged,
onto the bundle's node and within what the bundle holds.

``place`` chooses nodes for a group's bundles from what nodes have free, by Ray's four
strategies. It is pure: the head runs it on its view, then reserves on the agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nbcluster.runtime.scheduling.resources import fits

PACK, SPREAD, STRICT_PACK, STRICT_SPREAD = "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"
STRATEGIES = (PACK, SPREAD, STRICT_PACK, STRICT_SPREAD)

#: The marker each bundle adds (per bundle and group-wide), and what one task takes of it.
BUNDLE = "bundle"
BUNDLE_UNITS = 1000.0
BUNDLE_TASK_UNITS = 0.001
_GROUP = "_group_"


@dataclass(frozen=True)
class PlacementGroupSchedulingStrategy:
    """Run a task or actor in a bundle of ``placement_group`` (``-1``: any of its bundles)."""

    placement_group: Any
    placement_group_bundle_index: int = -1
    placement_group_capture_child_tasks: bool | None = None


def validate_bundles(bundles: Any, strategy: Any, lifetime: Any) -> None:
    """Refuse what Ray refuses, with Ray's words."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid placement group strategy {strategy}. Supported strategies are: "
            f"{set(STRATEGIES)}."
        )
    if not isinstance(bundles, list):
        raise ValueError(f"Placement group bundles must be a list, got {type(bundles)}.")
    if not bundles:
        raise ValueError(
            "Bundles must be a non-empty list of resource dictionaries. For example: "
            '`[{"CPU": 1.0}, {"GPU": 1.0}]`. Got empty list instead.'
        )
    for bundle in bundles:
        if (
            not isinstance(bundle, dict)
            or not all(isinstance(k, str) for k in bundle)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for v in bundle.values())
        ):  # fmt: skip
            raise ValueError(
                "Bundles must be a non-empty list of resource dictionaries. For example: "
                '`[{"CPU": 1.0}, {"GPU": 1.0}]`.'
            )
        if not bundle or all(v == 0 for v in bundle.values()):
            raise ValueError(
                "Bundles cannot be an empty dictionary or resources with only 0 values. "
                f"Bundles: {bundles}"
            )
        for name, amount in bundle.items():
            if amount < 0:
                raise ValueError(f"The quantity of resource {name} cannot be negative")
    if lifetime not in (None, "detached"):
        raise ValueError(
            "Placement group `lifetime` argument must be either `None` or 'detached'. "
            f"Got {lifetime}."
        )


# -- names ----------------------------------------------------------------------------------


def group_resources(pg_id: str, index: int, bundle: dict[str, float]) -> dict[str, float]:
    """What reserving bundle ``index`` of group ``pg_id`` adds to its node."""
    out: dict[str, float] = {}
    for name, amount in {**bundle, BUNDLE: BUNDLE_UNITS}.items():
        if amount > 0:
            out[f"{name}{_GROUP}{index}_{pg_id}"] = float(amount)
            out[f"{name}{_GROUP}{pg_id}"] = float(amount)
    return out


def withdraw(tables: tuple[dict[str, float], ...], pg_id: str, index: int,
             bundle: dict[str, float]) -> None:  # fmt: skip
    """Take bundle ``index``'s named resources out of ``tables`` (a node's total and free),
    dropping the names nothing is left of."""
    for k, v in group_resources(pg_id, index, bundle).items():
        for table in tables:
            left = table.get(k, 0.0) - v
            if left > 1e-9:
                table[k] = left
            else:
                table.pop(k, None)


def bundle_demand(resources: dict[str, float], pg_id: str, index: int) -> dict[str, float]:
    """A task's ``resources`` as a task in bundle ``index`` (``-1``: any) asks for them.

    A task in a given bundle also takes from the group-wide amount, which is what a task in
    any bundle counts against: the two never promise the same CPU twice."""
    demand = {**resources, BUNDLE: BUNDLE_TASK_UNITS}
    out = {f"{name}{_GROUP}{pg_id}": amount for name, amount in demand.items()}
    if index >= 0:
        out.update({f"{name}{_GROUP}{index}_{pg_id}": amount for name, amount in demand.items()})
    return out


def group_of(resources: dict[str, float]) -> str | None:
    """The placement group a demand (``bundle_demand``'s) belongs to, or None."""
    for name in resources:
        if name.startswith(BUNDLE + _GROUP):
            return name.rpartition("_")[2]
    return None


def gpu_amount(resources: dict[str, float]) -> float:
    """The GPUs a lease holds, plain or from a bundle (each device is still one task's)."""
    amount = resources.get("GPU")
    if amount is not None or len(resources) < 2:  # (a demand in a bundle has 2 names or more)
        return amount or 0.0
    amount = 0.0
    for name, value in resources.items():
        if name.startswith("GPU" + _GROUP) and name.count("_") == 2:  # the group-wide name
            amount += value
    return amount


def shape_fits(resources: dict[str, float], bundles: list[dict[str, float]]) -> bool:
    """Whether a task of ``resources`` fits in one of ``bundles`` at all."""
    return any(fits(bundle, resources) for bundle in bundles)


def apply_strategy(
    resources: dict[str, float], strategy: Any, what: str, creation: bool = False
) -> tuple[dict[str, float], Any]:
    """``(resources, strategy)`` as the lease machinery sees them: a placement group strategy
    turns into bundle resources and the default strategy; others pass through. ``creation``:
    these are what an actor needs to be placed (one CPU by default), not to run."""
    if not isinstance(strategy, PlacementGroupSchedulingStrategy):
        return resources, strategy
    pg = strategy.placement_group
    index = strategy.placement_group_bundle_index
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"placement_group_bundle_index must be an int, got {index!r}")
    bundles = pg.bundle_specs
    if index >= len(bundles) or index < -1:
        raise ValueError(
            f"placement group bundle index {index} is invalid. Valid placement group "
            f"indexes: 0-{len(bundles)}"
        )
    if not shape_fits(resources, bundles if index == -1 else [bundles[index]]):
        if creation:
            raise ValueError(
                f"Cannot schedule {what} with the placement group because the actor requires "
                f"{resources.get('CPU', 0)} CPU for creation, but it cannot fit into any "
                f"bundles for the placement group, {bundles}. Consider creating a placement "
                "group with CPU resources."
            )
        raise ValueError(
            f"Cannot schedule {what} with the placement group because the resource request "
            f"{resources} cannot fit into any bundles for the placement group, {bundles}."
        )
    return bundle_demand(resources, pg.id.hex(), index), None


# -- placement ------------------------------------------------------------------------------


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0.0) + v
    return out


def _take(free: dict[str, float], bundle: dict[str, float]) -> None:
    for k, v in bundle.items():
        free[k] = free.get(k, 0.0) - v


def _size(bundle: dict[str, float]) -> float:
    return sum(bundle.values())


def place(
    bundles: list[dict[str, float]],
    strategy: str,
    nodes: dict[str, dict[str, float]],
    fixed: dict[int, str] | None = None,
) -> dict[int, str] | None:
    """Bundle index -> node id for every bundle, given what each node has free (``nodes``)
    and the bundles already placed (``fixed``, kept where they are); None if it cannot be
    done now. Greedy, largest bundle first, as Ray's scorer is."""
    fixed = dict(fixed or {})
    todo = sorted((i for i in range(len(bundles)) if i not in fixed),
                  key=lambda i: -_size(bundles[i]))  # fmt: skip
    free = {n: dict(a) for n, a in nodes.items()}
    if not todo:
        return fixed

    def room(n: str) -> float:
        return free[n].get("CPU", 0.0)

    if strategy == STRICT_PACK:
        need: dict[str, float] = {}
        for i in todo:
            need = _add(need, bundles[i])
        used = set(fixed.values())
        candidates = list(used) if used else sorted(free, key=room, reverse=True)
        for n in candidates:
            if n in free and fits(free[n], need):
                return {**fixed, **dict.fromkeys(todo, n)}
        return None
    if strategy == STRICT_SPREAD:
        return _spread_strictly(bundles, todo, free, fixed)
    plan = dict(fixed)
    count = dict.fromkeys(free, 0)
    for n in fixed.values():
        count[n] = count.get(n, 0) + 1
    if strategy == PACK and not fixed:  # all on one node when one has room
        need = {}
        for i in todo:
            need = _add(need, bundles[i])
        for n in sorted(free, key=room, reverse=True):
            if fits(free[n], need):
                return dict.fromkeys(todo, n)
    for i in todo:
        fitting = [n for n in free if fits(free[n], bundles[i])]
        if not fitting:
            return None
        if strategy == PACK:  # onto the nodes the group already uses, fullest first
            n = max(fitting, key=lambda n: (count.get(n, 0), room(n)))
        else:  # SPREAD: onto the node with the fewest of the group's bundles
            n = min(fitting, key=lambda n: (count.get(n, 0), -room(n)))
        plan[i] = n
        count[n] = count.get(n, 0) + 1
        _take(free[n], bundles[i])
    return plan


def _spread_strictly(
    bundles: list[dict[str, float]],
    todo: list[int],
    free: dict[str, dict[str, float]],
    fixed: dict[int, str],
) -> dict[int, str] | None:
    """One bundle per node, each on a node of its own (a small backtracking search)."""
    nodes = sorted(free, key=lambda n: -free[n].get("CPU", 0.0))

    def search(k: int, used: set[str], plan: dict[int, str]) -> dict[int, str] | None:
        if k == len(todo):
            return plan
        i = todo[k]
        for n in nodes:
            if n not in used and fits(free[n], bundles[i]):
                found = search(k + 1, used | {n}, {**plan, i: n})
                if found is not None:
                    return found
        return None

    return search(0, set(fixed.values()), dict(fixed))

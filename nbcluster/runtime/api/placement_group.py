"""Placement groups as the user sees them: Ray's ``ray.util.placement_group`` API.

``placement_group(bundles, strategy)`` asks the head to reserve the bundles (all or none, see
``control/placement_groups``) and returns a handle at once; ``ready()`` is an ObjectRef of a
task that needs nothing but a place in the group's first bundle, so it runs (and resolves)
once the group is reserved, exactly as Ray implements it, and ``get``/``wait`` work on it.
Tasks and actors join a group with ``PlacementGroupSchedulingStrategy``.
"""

from __future__ import annotations

import threading
from typing import Any

from nbcluster.runtime.api import job_scope
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import output
from nbcluster.runtime.ids import random_id
from nbcluster.runtime.scheduling.bundles import (
    PACK,
    PlacementGroupSchedulingStrategy,
    group_of,
    validate_bundles,
)


class PlacementGroupID(bytes):
    """A placement group's id (``.hex()`` as in Ray)."""

    def __repr__(self) -> str:
        return f"PlacementGroupID({self.hex()})"


class PlacementGroup:
    """A handle to a placement group; pass it to tasks and actors freely."""

    def __init__(self, id: PlacementGroupID, bundle_cache: list[dict[str, float]] | None = None):
        self.id = id
        self.bundle_cache = bundle_cache

    def ready(self) -> Any:
        """An ObjectRef that resolves (to this group) once every bundle is reserved."""
        return _ready_task().options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(self, 0)
        ).remote(self)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """Wait until the group is reserved, at most ``timeout_seconds``; whether it is."""
        from nbcluster.runtime.api.session import wait

        done, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(done)

    @property
    def bundle_specs(self) -> list[dict[str, float]]:
        if not self.bundle_cache:
            row = _head("placement_group_table", self.id.hex())
            if row is None:
                raise ValueError(f"placement group {self.id.hex()} does not exist")
            self.bundle_cache = list(row["bundles"])
        return self.bundle_cache

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlacementGroup) and self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup(id={self.id.hex()})"

    def __reduce__(self) -> Any:
        return PlacementGroup, (PlacementGroupID(self.id), self.bundle_cache)


_ready_lock = threading.Lock()
_ready_fn: Any = None


def _ready_task() -> Any:
    """The task behind ``ready()``: no CPU, a place in the group's first bundle."""
    global _ready_fn
    with _ready_lock:
        if _ready_fn is None:
            from nbcluster.runtime.api.remote_function import RemoteFunction

            def bundle_reservation_check(pg: PlacementGroup) -> PlacementGroup:
                return pg

            _ready_fn = RemoteFunction(bundle_reservation_check, {"num_cpus": 0})
        return _ready_fn


def _head(method: str, *args: Any) -> Any:
    from nbcluster.runtime.api.session import core_for_submit

    return core_for_submit().head_call(method, *args, timeout=30)


def placement_group(
    bundles: list[dict[str, float]],
    strategy: str = PACK,
    name: str = "",
    lifetime: str | None = None,
) -> PlacementGroup:
    """Reserve ``bundles`` (resource dicts) on the cluster by ``strategy``: PACK, SPREAD,
    STRICT_PACK or STRICT_SPREAD, Ray's meanings. Returns at once; ``ready()`` says when."""
    from nbcluster.runtime.api.session import core_for_submit

    validate_bundles(bundles, strategy, lifetime)
    if not isinstance(name, str):
        raise TypeError(f"a placement group's name must be a string, got {name!r}")
    core = core_for_submit()
    pg_id = PlacementGroupID(random_id(14))
    spec = {"bundles": bundles, "strategy": strategy, "name": name,
            "namespace": job_scope.namespace(core), "detached": lifetime == "detached"}  # fmt: skip
    core.head_call("create_placement_group", pg_id.hex(), spec, timeout=30)
    core.loop.call_soon_threadsafe(
        core.loop.call_later, CONFIG.infeasible_warning_s, _warn_if_infeasible, core, pg_id,
        bundles, strategy,
    )  # fmt: skip
    return PlacementGroup(pg_id, [{k: float(v) for k, v in b.items()} for b in bundles])


def _warn_if_infeasible(core: Any, pg_id: PlacementGroupID, bundles: list[dict[str, float]],
                        strategy: str) -> None:  # fmt: skip
    """Still pending, and no arrangement of the current nodes could ever hold it: say so
    once, as for a task no node can run (``lease_requests``)."""
    if core.closed:
        return

    def check(f: Any) -> None:
        if f.cancelled() or f.exception() is not None or f.result() is None:
            return
        nodes: list[dict[str, float]] = f.result()
        names = sorted({k for b in bundles for k in b})
        offers = "; ".join(", ".join(f"{k}: {n.get(k, 0.0):g}" for k in names) for n in nodes)
        output.warn_user(
            core,
            f"The placement group {pg_id.hex()} with bundles {bundles} and strategy "
            f"{strategy} cannot be placed on the cluster's {len(nodes)} node(s) (they offer "
            f"{offers}); it stays pending until nodes with enough resources join.",
        )

    core.head.call("placement_group_infeasible", pg_id.hex()).add_done_callback(check)


def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Free the group's bundles: its actors are killed, its pending tasks fail."""
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"expected a PlacementGroup, got {type(placement_group).__name__}")
    _head("remove_placement_group", placement_group.id.hex())


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The live group of that name in this job's namespace."""
    if not placement_group_name:
        raise ValueError("Please supply a non-empty value to get_placement_group")
    from nbcluster.runtime.api.session import core_for_submit

    namespace = job_scope.namespace(core_for_submit())
    row = _head("get_placement_group", placement_group_name, namespace)
    if row is None:
        raise ValueError(
            f"Failed to look up placement group with name: {placement_group_name}"
        )
    return PlacementGroup(PlacementGroupID(bytes.fromhex(row["placement_group_id"])),
                          list(row["bundles"]))  # fmt: skip


def _ray_row(row: dict[str, Any]) -> dict[str, Any]:
    """The head's row with Ray's shape: bundles keyed by index."""
    return {
        **row,
        "bundles": dict(enumerate(row["bundles"])),
        "bundles_to_node_id": {
            i: n for i, n in enumerate(row["bundles_to_node_id"]) if n is not None
        },
    }


def placement_group_table(placement_group: PlacementGroup | None = None) -> dict[str, Any]:
    """One group's state (``placement_group`` given) or every group's, by id."""
    if placement_group is not None:
        row = _head("placement_group_table", placement_group.id.hex())
        return {} if row is None else _ray_row(row)
    return {r["placement_group_id"]: _ray_row(r) for r in _head("placement_group_table", None)}


def get_current_placement_group() -> PlacementGroup | None:
    """The group the running task or actor was scheduled in; None in a driver."""
    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()
    task = core.current_task if core is not None else None
    pg_hex = group_of(task.resources) if task is not None else None
    if pg_hex is None:
        return None
    return PlacementGroup(PlacementGroupID(bytes.fromhex(pg_hex)))

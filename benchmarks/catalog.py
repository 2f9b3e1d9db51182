"""What each workload measures, in which unit, and nbcluster's target against Ray.

This module is shared by the parent (which prints the table) and the children (which run the
workloads); it imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAMEWORKS: tuple[str, ...] = ("nbcluster", "ray", "dask")
BASELINE = "ray"
SUBJECT = "nbcluster"


@dataclass(frozen=True)
class Spec:
    """One workload as the table shows it."""

    name: str
    unit: str
    higher_is_better: bool
    description: str
    #: Ray 2.x figure measured on the reference machine (same unit), used when Ray is not run.
    ray_reference: float | None = None
    #: nbcluster must be at least this many times better than Ray ("better" follows the unit).
    target_factor: float | None = None
    #: ... or must beat this absolute figure (in ``unit``).
    target_absolute: float | None = None
    #: Needs Ray-style actors (skipped on frameworks that have none, i.e. Dask).
    actors: bool = False
    #: Runs on a two-node cluster started on this machine (its own child; see cross_node.py).
    cluster: bool = False


SPECS: tuple[Spec, ...] = (
    Spec(
        "cold_start",
        "s",
        False,
        "fresh interpreter: import + init + first task result",
        3.5,
        target_factor=10,
    ),
    Spec(
        "sync_round_trip",
        "ms/call",
        False,
        "get(f.remote()) of a no-op task, sequentially",
        1.6,
        target_factor=3,
    ),
    Spec(
        "async_throughput",
        "tasks/s",
        True,
        "submit 10,000 no-op tasks, then get them all",
        2100,
        target_factor=5,
    ),
    Spec(
        "put_task_100mb",
        "GB/s",
        True,
        "put a 100 MB array + a task that reads it, 100 MB / time",
        3.5,
        target_factor=1,
    ),
    Spec(
        "get_stored_10mb",
        "ms",
        False,
        "driver get of a 10 MB array already in the store",
        None,
        target_absolute=1.0,
    ),
    Spec(
        "get_stored_100mb",
        "ms",
        False,
        "driver get of a 100 MB array already in the store",
        0.8,
        target_absolute=1.0,
    ),
    Spec(
        "get_stored_400mb",
        "ms",
        False,
        "driver get of a 400 MB array already in the store",
        None,
        target_absolute=1.0,
    ),
    Spec(
        "chain_200",
        "ms/link",
        False,
        "200 dependent tasks, each taking the previous ref",
        1.8,
        target_factor=2,
    ),
    Spec(
        "small_objects",
        "objects/s",
        True,
        "10,000 small puts, then one batched get",
        2100,
        target_factor=3,
    ),
    Spec(
        "generator_stream",
        "items/s",
        True,
        "a generator task yields 10,000 ints; take each ref as it comes, then get them all",
        None,
    ),
    Spec(
        "actor_sync_call",
        "µs/call",
        False,
        "get(a.m.remote()) on one actor, sequentially",
        950,
        target_factor=2,
        actors=True,
    ),
    Spec(
        "actor_async_calls",
        "calls/s",
        True,
        "10,000 actor calls submitted, then gotten",
        5600,
        target_factor=2,
        actors=True,
    ),
    Spec(
        "async_actor_calls",
        "calls/s",
        True,
        "as actor_async_calls, on an actor with async def methods",
        None,
        actors=True,
    ),
    Spec(
        "n_n_actor_calls",
        "calls/s",
        True,
        "n caller tasks each calling all n actors (n = workers)",
        None,
        actors=True,
    ),
    Spec(
        "actor_create",
        "ms",
        False,
        "create an actor and get its first reply",
        540,
        target_factor=5,
        actors=True,
    ),
    Spec(
        "cross_node_transfer_500mb",
        "GB/s",
        True,
        "500 MB array made on node A, read by a task on node B; 500 MB / get time",
        None,
        cluster=True,
    ),
    Spec(
        "cross_node_round_trip",
        "ms/call",
        False,
        "get(f.remote()) of a no-op pinned to the node the driver is not on",
        None,
        cluster=True,
    ),
)

SPEC_BY_NAME: dict[str, Spec] = {spec.name: spec for spec in SPECS}


def select(only: str | None) -> list[str]:
    """Workload names matching ``--only`` (comma separated, exact names or name prefixes)."""
    if not only:
        return [spec.name for spec in SPECS]
    wanted = [part.strip() for part in only.split(",") if part.strip()]
    chosen = [s.name for s in SPECS if any(s.name == w or s.name.startswith(w) for w in wanted)]
    unknown = [w for w in wanted if not any(s.startswith(w) for s in SPEC_BY_NAME)]
    if unknown:
        known = ", ".join(SPEC_BY_NAME)
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {known}")
    return chosen

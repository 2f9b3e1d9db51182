"""Where a lease request should be served: here, or spilled back to another node.

A node agent decides from its own exact resources and the head's (slightly stale) view of
the others. Requests it spilled carry ``spilled=True`` and are queued by their target rather
than bounced again, so a request moves at most once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from nbcluster.runtime.scheduling.resources import fits

DEFAULT = "DEFAULT"
SPREAD = "SPREAD"

_spread = itertools.count()


@dataclass(frozen=True)
class NodeAffinitySchedulingStrategy:
    """Run on ``node_id``; if ``soft``, anywhere when that node is gone or cannot fit it."""

    node_id: str
    soft: bool = False


def encode_strategy(strategy: Any) -> Any:
    """The wire form of a ``scheduling_strategy`` option (also part of a scheduling class)."""
    if strategy is None or strategy == DEFAULT:
        return None
    if strategy == SPREAD:
        return SPREAD
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return ("NODE", strategy.node_id, strategy.soft)
    raise ValueError(
        f"unknown scheduling_strategy {strategy!r}: use 'DEFAULT', 'SPREAD' or "
        "NodeAffinitySchedulingStrategy(node_id, soft)"
    )


class Unschedulable(Exception):
    """A hard constraint names a node that is not alive."""


def route(
    me: str,
    view: dict[str, dict[str, Any]],
    local_total: dict[str, float],
    local_available: dict[str, float],
    resources: dict[str, float],
    strategy: Any,
    spilled: bool,
) -> str | None:
    """The node id to spill to, or None to serve the request here."""
    if strategy is not None and strategy != SPREAD:
        _, target, soft = strategy
        if target == me:
            if fits(local_total, resources) or not soft:
                return None
        elif target in view and (fits(view[target]["total"], resources) or not soft):
            return str(target)
        elif not soft:
            raise Unschedulable(f"node {target} is not alive (hard NodeAffinity)")
    if spilled:
        return None
    if strategy == SPREAD:
        nodes = sorted(n for n, v in view.items() if fits(v["total"], resources))
        if not nodes:
            return None
        pick = nodes[next(_spread) % len(nodes)]
        return None if pick == me else pick
    if fits(local_available, resources):
        return None
    free = [n for n, v in view.items() if n != me and fits(v["available"], resources)]
    if free:
        return max(free, key=lambda n: view[n]["available"].get("CPU", 0.0))
    if fits(local_total, resources):
        return None
    feasible = [n for n, v in view.items() if n != me and fits(v["total"], resources)]
    return feasible[0] if feasible else None

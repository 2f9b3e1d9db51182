"""The head's placement groups: gang reservations of bundles across nodes, as Ray's.

``create_placement_group`` records a group as PENDING and tries to place it: ``place``
(``scheduling/bundles``) picks a node for each bundle from the head's view of what nodes have
free, then each bundle is *prepared* on its node's agent (its resources set aside), and only
when every one was prepared are they all *committed* (turned into the group's named
resources, which tasks in the group ask for); if any node refused (its resources went
meanwhile, or it died), the prepared ones are cancelled and the group waits. That makes a
reservation all or nothing across nodes without a lock: the agents' own accounts are the
truth, the head's view only a proposal.

A pending group is tried again whenever the view changes (a node joined, resources freed).
A node that dies takes its bundles: the group goes back to RESCHEDULING and only those
bundles are placed again, beside the ones that survive. Removing a group kills its actors
(through the actor manager), and every agent gives its bundles back, ends the workers leased
from them and fails the requests waiting for them. A group dies with its creator unless it
is detached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime.scheduling.bundles import group_of, group_resources, place, withdraw
from nbcluster.runtime.wire.transport import Connection, Endpoint

if TYPE_CHECKING:
    from nbcluster.runtime.control.actor_manager import ActorManager
    from nbcluster.runtime.control.node_directory import NodeDirectory, NodeRecord

log = logging.getLogger("nbcluster.placement_groups")

PENDING, CREATED, REMOVED, RESCHEDULING = "PENDING", "CREATED", "REMOVED", "RESCHEDULING"
#: Where a group without a namespace is named (as named actors: ``actor_manager``).
DEFAULT_NAMESPACE = "default"

#: When to look again after a round some node refused (its report shows why by then).
RETRY_S = 0.5
#: How many removed groups the table keeps showing.
MAX_REMOVED = 1000


class GroupInfo:
    __slots__ = (
        "attempts", "bundles", "created_at", "detached", "name", "namespace", "nodes", "owner",
        "pg_id", "placing", "state", "strategy",
    )  # fmt: skip

    def __init__(self, pg_id: str, spec: dict[str, Any], owner: str) -> None:
        self.pg_id = pg_id
        self.name: str = spec.get("name") or ""
        self.namespace: str = spec.get("namespace") or DEFAULT_NAMESPACE
        self.bundles: list[dict[str, float]] = [
            {k: float(v) for k, v in b.items()} for b in spec["bundles"]
        ]
        self.strategy: str = spec["strategy"]
        self.detached = bool(spec.get("detached"))
        self.owner = owner
        self.state = PENDING
        #: bundle index -> the node holding it (committed)
        self.nodes: dict[int, str] = {}
        self.placing = False  # a prepare/commit round is in flight
        self.attempts = 0
        self.created_at = time.time()

    def public(self) -> dict[str, Any]:
        """One row of ``placement_group_table``, with Ray's field names (bundles as lists:
        the wire keeps string keys only)."""
        return {
            "placement_group_id": self.pg_id,
            "name": self.name,
            "namespace": self.namespace,
            "bundles": [dict(b) for b in self.bundles],
            "bundles_to_node_id": [self.nodes.get(i) for i in range(len(self.bundles))],
            "strategy": self.strategy,
            "state": self.state,
            "is_detached": self.detached,
            "stats": {
                "scheduling_attempt": self.attempts,
                "scheduling_state": "FINISHED" if self.state == CREATED else self.state,
            },
        }


class PlacementGroupManager:
    def __init__(
        self, endpoint: Endpoint, directory: NodeDirectory, actors: ActorManager,
        local_node: str,
    ) -> None:  # fmt: skip
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.directory = directory
        self.actors = actors
        self.local_node = local_node
        self.groups: dict[str, GroupInfo] = {}
        self.names: dict[tuple[str, str], str] = {}  # (namespace, name) -> group id
        self._removed: list[str] = []
        for name in ("create_placement_group", "remove_placement_group",
                     "get_placement_group", "placement_group_table",
                     "placement_group_infeasible"):  # fmt: skip
            endpoint.rpc[name] = getattr(self, name)
        directory.listeners.append(lambda view: self._schedule())
        directory.on_node_dead.append(self._on_node_dead)
        actors.owner_listeners.append(self._owner_gone)

    # -- RPCs ---------------------------------------------------------------------------------
    def create_placement_group(self, conn: Connection | None, pg_id: str,
                               spec: dict[str, Any]) -> None:  # fmt: skip
        owner = conn.info.get("addr", "") if conn is not None else ""
        info = GroupInfo(pg_id, spec, owner)
        key = (info.namespace, info.name)
        if info.name and key in self.names:
            raise ValueError(
                f"a placement group named {info.name!r} already exists in namespace "
                f"{info.namespace!r}"
            )
        self.groups[pg_id] = info
        if info.name:
            self.names[key] = pg_id
        self._schedule()

    def remove_placement_group(self, conn: Connection | None, pg_id: str) -> None:
        info = self.groups.get(pg_id)
        if info is None:
            raise ValueError(f"placement group {pg_id} does not exist")
        if info.state == REMOVED:
            return
        info.state = REMOVED
        if info.name and self.names.get((info.namespace, info.name)) == pg_id:
            del self.names[(info.namespace, info.name)]
        self.actors.kill_where(
            lambda sched: group_of(sched) == pg_id,
            exc.ActorDiedError("The actor died because its placement group was removed."),
        )
        for rec in self._live():
            self._send(rec.node_id, "remove_group", pg_id)
        for index, node_id in info.nodes.items():
            self._drop_from_view(node_id, pg_id, index, info.bundles[index])
        info.nodes = {}
        self.directory._changed()
        self._removed.append(pg_id)
        while len(self._removed) > MAX_REMOVED:
            self.groups.pop(self._removed.pop(0), None)

    def get_placement_group(
        self, conn: Connection | None, name: str, namespace: str | None = None
    ) -> Any:
        pg_id = self.names.get((namespace or DEFAULT_NAMESPACE, name))
        return None if pg_id is None else self.groups[pg_id].public()

    def placement_group_table(self, conn: Connection | None, pg_id: str | None) -> Any:
        if pg_id is not None:
            info = self.groups.get(pg_id)
            return None if info is None else info.public()
        return [g.public() for g in self.groups.values()]

    def placement_group_infeasible(self, conn: Connection | None, pg_id: str) -> Any:
        """None when the group is placed (or gone) or could be placed on the nodes there are
        (once they have room); else what the nodes offer, for the warning."""
        info = self.groups.get(pg_id)
        if info is None or info.state not in (PENDING, RESCHEDULING):
            return None
        totals = {rec.node_id: dict(rec.view()["total"]) for rec in self._live()}
        if place(info.bundles, info.strategy, totals) is not None:
            return None
        return list(totals.values())

    # -- placing ------------------------------------------------------------------------------
    def _live(self) -> list[NodeRecord]:
        return [rec for rec in self.directory.nodes.values() if rec.alive]

    def _schedule(self) -> None:
        """Try every waiting group, oldest first, against the head's view."""
        free = {rec.node_id: dict(rec.view()["available"]) for rec in self._live()}
        for info in list(self.groups.values()):
            if info.state not in (PENDING, RESCHEDULING) or info.placing:
                continue
            fixed = dict(info.nodes)
            plan = place(info.bundles, info.strategy, free, fixed)
            if plan is None:
                continue
            todo = {i: n for i, n in plan.items() if i not in fixed}
            for i, n in todo.items():  # what this round takes, the next group cannot
                for k, v in info.bundles[i].items():
                    free[n][k] = free[n].get(k, 0.0) - v
            info.placing = True
            info.attempts += 1
            self.loop.create_task(self._reserve(info, todo))

    async def _reserve(self, info: GroupInfo, plan: dict[int, str]) -> None:
        """Prepare every bundle of ``plan`` on its node, then commit them all, or cancel."""
        try:
            answers = await asyncio.gather(
                *(self._call(n, "prepare_bundle", info.pg_id, i, info.bundles[i])
                  for i, n in plan.items()),
                return_exceptions=True,
            )  # fmt: skip
            ok = [i for (i, _), a in zip(plan.items(), answers, strict=True) if a is True]
            alive = {rec.node_id for rec in self._live()}
            if len(ok) < len(plan) or info.state == REMOVED or not alive >= set(plan.values()):
                by_node: dict[str, list[int]] = {}
                for i in ok:
                    by_node.setdefault(plan[i], []).append(i)
                for n, indexes in by_node.items():
                    self._send(n, "cancel_bundles", info.pg_id, indexes)
                if info.state != REMOVED:  # (the view may not change again soon)
                    self.loop.call_later(RETRY_S, self._schedule)
                return
            for i, n in plan.items():
                self._send(n, "commit_bundle", info.pg_id, i)
                info.nodes[i] = n
                rec = self.directory.nodes.get(n)
                if rec is not None:
                    for k, v in group_resources(info.pg_id, i, info.bundles[i]).items():
                        rec.resources[k] = rec.resources.get(k, 0.0) + v
            if len(info.nodes) == len(info.bundles):
                info.state = CREATED
                log.info("placement group %s placed: %s", info.pg_id[:8], info.nodes)
            self.directory._changed()
        finally:
            info.placing = False

    async def _call(self, node_id: str, method: str, *args: Any) -> Any:
        if node_id == self.local_node:
            return self.endpoint.rpc[method](None, *args)
        rec = self.directory.nodes.get(node_id)
        if rec is None or not rec.alive or rec.conn is None or rec.conn.closed:
            return False
        return await rec.conn.call(method, *args)

    def _send(self, node_id: str, method: str, *args: Any) -> None:
        if node_id == self.local_node:
            self.endpoint.rpc[method](None, *args)
            return
        rec = self.directory.nodes.get(node_id)
        if rec is not None and rec.alive and rec.conn is not None and not rec.conn.closed:
            rec.conn.notify(method, *args)

    def _drop_from_view(self, node_id: str, pg_id: str, index: int,
                        bundle: dict[str, float]) -> None:  # fmt: skip
        rec = self.directory.nodes.get(node_id)
        if rec is None:
            return
        withdraw((rec.resources, rec.available), pg_id, index, bundle)

    # -- failures -----------------------------------------------------------------------------
    def _on_node_dead(self, rec: NodeRecord) -> None:
        """The node's bundles are lost: their groups place them again elsewhere."""
        for info in self.groups.values():
            lost = [i for i, n in info.nodes.items() if n == rec.node_id]
            if not lost or info.state == REMOVED:
                continue
            for i in lost:
                del info.nodes[i]
                self._drop_from_view(rec.node_id, info.pg_id, i, info.bundles[i])
            info.state = RESCHEDULING
            log.warning("placement group %s lost bundles %s with node %s; placing them again",
                        info.pg_id[:8], lost, rec.node_id[:8])  # fmt: skip
        self._schedule()

    def _owner_gone(self, owner: str) -> None:
        for info in list(self.groups.values()):
            if info.owner == owner and not info.detached and info.state != REMOVED:
                self.remove_placement_group(None, info.pg_id)

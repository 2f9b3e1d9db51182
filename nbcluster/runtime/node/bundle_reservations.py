"""This node's share of placement groups: bundles reserved here, in two phases.

The head places a group (``control/placement_groups``) and reserves each bundle on its node
in two steps, so a group is reserved whole or not at all: ``prepare_bundle`` takes the
bundle's resources from what this node has free (and answers False when they are not free
any more: the head's view is a moment old), ``commit_bundle`` turns them into the group's
named resources (``scheduling/bundles``) that tasks in the group ask for. A group some of
whose bundles could not be prepared is rolled back with ``cancel_bundles``.

Removing a group here (``remove_group``) ends the workers leased with its resources, fails
the lease requests waiting for them, and gives the node its resources back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbcluster.runtime.scheduling.bundles import group_of, group_resources, withdraw
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.node.leases import Leases

Key = tuple[str, int]


class BundleReservations:
    """Bundles prepared and committed on this node, by (group id, bundle index)."""

    def __init__(self, leases: Leases) -> None:
        self.leases = leases
        self.prepared: dict[Key, dict[str, float]] = {}
        self.committed: dict[Key, dict[str, float]] = {}
        #: groups removed while this node ran: their requests are answered at once
        self.removed: set[str] = set()
        leases.group_removed = lambda resources: group_of(resources) in self.removed

    def rpcs(self) -> dict[str, Any]:
        return {
            "prepare_bundle": self.prepare_bundle,
            "commit_bundle": self.commit_bundle,
            "cancel_bundles": self.cancel_bundles,
            "remove_group": self.remove_group,
        }

    def prepare_bundle(
        self, conn: Connection | None, pg_id: str, index: int, bundle: dict[str, float]
    ) -> bool:
        key = (pg_id, index)
        if key in self.prepared or key in self.committed:
            return True
        leases = self.leases
        if pg_id in self.removed or not fits(leases.available, bundle):
            return False
        for k, v in bundle.items():
            leases.available[k] = leases.available.get(k, 0.0) - v
        self.prepared[key] = dict(bundle)
        leases._changed()
        return True

    def commit_bundle(self, conn: Connection | None, pg_id: str, index: int) -> bool:
        bundle = self.prepared.pop((pg_id, index), None)
        if bundle is None:
            return (pg_id, index) in self.committed
        self.committed[(pg_id, index)] = bundle
        leases = self.leases
        for k, v in group_resources(pg_id, index, bundle).items():
            leases.total[k] = leases.total.get(k, 0.0) + v
            leases.available[k] = leases.available.get(k, 0.0) + v
        leases._changed()
        leases.try_grant()
        return True

    def cancel_bundles(self, conn: Connection | None, pg_id: str, indexes: list[int]) -> None:
        """Roll back bundles prepared but not committed (the group did not fit whole)."""
        for index in indexes:
            bundle = self.prepared.pop((pg_id, index), None)
            if bundle is not None:
                self._give_back(bundle)
        self.leases._changed()
        self.leases.try_grant()

    def remove_group(self, conn: Connection | None, pg_id: str) -> None:
        """The group is gone: its workers end, its waiting requests fail, its resources
        return to the node."""
        self.removed.add(pg_id)
        leases = self.leases
        for w in list(leases.pool.workers.values()):
            if w.lease is not None and group_of(w.lease[1]) == pg_id:
                leases.release(w)
                leases.pool.fork_server.kill(w.pid)
        for req in list(leases.requests):
            if group_of(req.resources) != pg_id:
                continue
            leases.requests.remove(req)
            if req.fut.done():
                continue
            if req.actor is not None:
                req.fut.cancel()  # the head has marked the actor dead already
            else:
                req.fut.set_result(["removed"])
        for key in [k for k in self.prepared if k[0] == pg_id]:
            self._give_back(self.prepared.pop(key))
        for key in [k for k in self.committed if k[0] == pg_id]:
            bundle = self.committed.pop(key)
            withdraw((leases.total, leases.available), pg_id, key[1], bundle)
            self._give_back(bundle)
        leases._changed()
        leases.try_grant()

    def _give_back(self, bundle: dict[str, float]) -> None:
        for k, v in bundle.items():
            self.leases.available[k] = self.leases.available.get(k, 0.0) + v

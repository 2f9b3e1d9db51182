"""Objects lost with a node: rebuilt from lineage by their owner, or fetched again.

An owner remembers which nodes died (``dead_agents``). An object it owns whose only copy was
on one of them is rebuilt by running its task again (the spec kept by the task table's
lineage); one it borrows goes pending and is asked of its owner again. A rebuild resubmits the
task through the normal path, so a lost argument of the rebuilt task is rebuilt in turn.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from nbcluster import exceptions as exc
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_ERROR,
    KIND_STORE,
    PENDING,
    READY,
    Entry,
)
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

log = logging.getLogger("nbcluster.submitter")

#: Dead nodes an owner remembers (their objects are rebuilt when next needed).
MAX_DEAD_AGENTS = 1000


class Recovery:
    """Which nodes died, and rebuilding what was lost with them.

    ``submit`` sends a task back through dependency resolution; it is given rather than
    imported because resolution itself asks this class about lost arguments.
    """

    def __init__(
        self, core: CoreWorker, table: TaskTable, submit: Callable[[TaskSpec], None]
    ) -> None:
        self.core = core
        self.table = table
        self.submit = submit
        #: agents of nodes that died (the most recent ``MAX_DEAD_AGENTS``), in death order
        self.dead_agents: dict[str, None] = {}

    def note_dead(self, agent_address: str) -> None:
        self.dead_agents[agent_address] = None
        while len(self.dead_agents) > MAX_DEAD_AGENTS:
            del self.dead_agents[next(iter(self.dead_agents))]

    def rebuild_lost(self, agent_address: str) -> None:
        """Rebuild every object we own whose copy was on that (dead) node."""
        with self.core.refs.lock:
            lost = [
                e for e in self.core.refs.entries.values()
                if e.owned and e.state == READY and e.kind == KIND_STORE and e.data == agent_address
            ]  # fmt: skip
        for e in lost:
            self.reconstruct(e)

    def reconstruct(self, e: Entry) -> None:
        """Rebuild an owned object whose every copy is gone, by running its task again."""
        from nbcluster.runtime.objects.serialization import error_bytes

        spec = e.spec
        if spec is None or spec.lineage_evicted:
            why = (
                "its lineage was evicted (raise NBCLUSTER_MAX_LINEAGE_TASKS or "
                "NBCLUSTER_MAX_LINEAGE_BYTES to keep more)"
                if spec is not None
                else "it was created by put() (or yielded by a streaming generator) and its "
                "node died, so it cannot be rebuilt"
            )
            err_cls = (
                exc.ObjectReconstructionFailedError if spec is not None else exc.ObjectLostError
            )
            self.core.refs.reset_pending(e)  # a settled value only changes by going pending
            self.core.refs.resolve(e, FAILED, KIND_ERROR, error_bytes(err_cls(e.oid.hex(), why)))
            return
        if not spec.done:
            return  # already being rebuilt
        log.info("rebuilding %s from lineage (task %s)", e.oid.hex()[:12], spec.fn.name)
        refs = self.core.refs
        for oid in spec.return_ids:
            other = refs.get(oid)
            if other is not None and other.state != PENDING:
                refs.reset_pending(other)
        spec.done = False
        spec.attempt = 0
        spec.cancelled = False
        self.table.lineage.drop_keep(spec)
        self.submit(spec)

    def lost_dep(self, e: Entry) -> bool:
        """True if ``e`` is an argument whose only copy was on a dead node (rebuilding it)."""
        if e.kind != KIND_STORE or e.state != READY or e.data not in self.dead_agents:
            return False
        if e.owned:
            self.reconstruct(e)
        else:
            self.core.refs.reset_pending(e)
            self.core.fetch(e)
        return True

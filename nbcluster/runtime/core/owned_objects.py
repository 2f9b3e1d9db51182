"""An object's value lives with its owner: the owner's side and the borrower's side of that.

As in Ray, the process that created an object (by ``put`` or by submitting the task that
returns it) owns it: it holds the value (small ones inline, large ones as the node whose store
has them), frees every copy when the last reference anywhere is gone, and answers borrowers'
``get_object`` requests, waiting for a pending value. A borrower asks the owner once and caches
the answer in its reference table; if the owner cannot be reached the object fails with
``OwnerDiedError``. A worker that owns anything still referenced must not be reaped
(``may_exit``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.objects.serialization import error_bytes
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_ERROR,
    KIND_STORE,
    PENDING,
    READY,
    Entry,
)
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class OwnedObjects:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        core.endpoint.rpc["get_object"] = self._rpc_get_object
        core.endpoint.rpc["may_exit"] = lambda conn: self.may_exit()

    # -- owner side ---------------------------------------------------------------------------
    def free(self, e: Entry) -> None:
        """The last reference to an object we own is gone: free every copy."""
        core = self.core
        if core.closed:
            return
        if ev.ENABLED:
            ev.object_freed(e.oid, e.kind)
        if e.state == READY and e.kind == KIND_STORE:
            core.send_to(e.data, P.notification("store_delete", e.oid))
        detached = core.owned_actors.pop(e.oid, None)
        if detached is False:  # the last handle to an actor we created is gone: it ends
            core.head.notify("terminate_actor", e.oid[:16], "its last handle is gone")
        e.contained = None
        if e.spec is not None:
            core.call_soon(core.submitter.on_return_dropped, e)

    def may_exit(self) -> bool:
        """Whether this idle worker can go without losing anything: it owns no object that
        is still referenced (here or by borrowers), no actor, and no unfinished task."""
        core = self.core
        with core.refs.lock:
            owns = any(e.owned for e in core.refs.entries.values())
        return not (owns or core.owned_actors or core.submitter.tasks or core.ownership.handoffs)

    def _rpc_get_object(self, conn: Connection, oid: bytes) -> Any:
        core = self.core
        e = core.refs.get(oid)
        if e is None or not e.owned:
            return [FAILED, KIND_ERROR, error_bytes(exc.ObjectLostError(oid.hex(), "freed")), 0]
        if core.submitter.dead_agents and core.submitter.lost_dep(e):
            pass  # its node died: being rebuilt, answer when it is back
        elif e.state != PENDING:
            return [e.state, e.kind, e.data, e.size]
        fut: asyncio.Future[Any] = core.loop.create_future()

        def done(e: Entry) -> None:
            def set_() -> None:
                if not fut.done():
                    fut.set_result([e.state, e.kind, e.data, e.size])

            core.call_soon(set_)

        if not core.refs.add_waiter(e, done):
            return [e.state, e.kind, e.data, e.size]
        return fut

    # -- borrower side ------------------------------------------------------------------------
    def fetch(self, e: Entry) -> None:
        """Ask the owner of a borrowed object for its value (once; the answer is cached)."""
        if e.fetching or e.state != PENDING:
            return
        e.fetching = True
        self.core.call_soon(self._start_fetch, e)

    def refetch(self, e: Entry) -> None:
        """Every copy of a borrowed object is gone: ask its owner again (which rebuilds it)."""
        self.core.refs.reset_pending(e)
        self.fetch(e)

    def _start_fetch(self, e: Entry) -> None:
        core = self.core

        async def go() -> None:
            try:
                conn = await core.connect(e.owner)
                state, kind, data, size = await conn.call("get_object", e.oid)
            except Exception as err:
                state, kind, size = FAILED, KIND_ERROR, 0
                data = error_bytes(
                    exc.OwnerDiedError(e.oid.hex(), f"cannot reach its owner {e.owner}: {err}")
                )
            core.refs.resolve(e, state, kind, data, size)

        core.loop.create_task(go())

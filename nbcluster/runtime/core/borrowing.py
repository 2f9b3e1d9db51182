"""Borrowing: how an object's owner learns of every process holding a ref to it, in time.

An owner frees an object when its own refs and its borrowers' are gone. The danger is a ref
in transit: handed to a process that has not yet told the owner it borrows it, while the
last *known* holder lets go. As in Ray, a new borrower is registered by whoever protected
the ref on its way, *before* that protection is dropped:

- **Task arguments.** The caller holds a task's arguments until the task's reply. The worker
  reports, in that reply, the refs it got from the arguments and still holds; the caller
  registers the worker with their owners (at once, when it owns them itself) and drops the
  arguments only once the owners acknowledged.
- **Refs inside a result.** The worker holds them (a *handoff*) until the caller registered
  itself with their owners and said ``HANDOFF_DONE``.
- **Refs inside a value read with get.** The reader registers itself and holds the object
  they came out of until the owners acknowledged.
- Any other way (a handle from ``get_actor``, say): the process registers itself directly.

A borrower sends its release itself, when its last ref goes; releases and registrations of
one borrower may then arrive in either order (``reference_table`` counts them). An owner
watches every borrower it was told of through a connection of its own, so that a borrower's
death releases what it held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import Entry
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

log = logging.getLogger("nbcluster.ownership")

#: [[oid, borrower address], ...] grouped by the owner to tell
Pairs = dict[str, list[list[Any]]]


class Ownership:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        #: task id -> [caller address, refs inside its result], held until HANDOFF_DONE
        self.handoffs: dict[bytes, list[Any]] = {}
        self._watching: set[str] = set()
        core.endpoint.on(P.RemoveBorrower, self._on_remove_borrower)
        core.endpoint.on(P.HandoffDone, self._on_handoff_done)
        core.endpoint.rpc["add_borrowers"] = self._rpc_add_borrowers

    # -- borrower side ------------------------------------------------------------------------
    def register_directly(self, e: Entry) -> None:
        """A ref arrived by a path that registers nothing for it: register ourselves."""
        e.registered = True
        core = self.core
        core.send_to(e.owner, P.notification("add_borrowers", [[e.oid, core.address]]))

    def released(self, e: Entry) -> None:
        """Our last ref to a borrowed object went: tell its owner, if it counts us."""
        core = self.core
        if e.registered and not core.closed:
            core.send_to(e.owner, P.encode(P.RemoveBorrower(e.oid)))

    def register_then(self, fresh: list[Entry], then: Callable[[], None] | None) -> None:
        """Register us as a borrower of ``fresh`` (just borrowed, collected) with their
        owners; call ``then`` on the loop once they all acknowledged. Any thread."""
        entries = self.core.refs.mark_registered(fresh)
        me = self.core.address
        pairs: Pairs = {}
        for e in entries:
            pairs.setdefault(e.owner, []).append([e.oid, me])
        self.core.call_soon(self.tell_owners, pairs, then)

    def held_until_registered(self, fresh: list[Entry], outer: Entry) -> None:
        """Refs came out of ``outer``'s value: ``outer`` (which holds them) lives on until
        their owners know us."""
        hold = ObjectRef(outer.oid, outer.owner)
        self.register_then(fresh, lambda: _drop(hold))

    # -- the caller of a task -----------------------------------------------------------------
    def task_borrowers(self, conn: Connection, borrowed: list[Any], holds: Any) -> None:
        """A task's reply said which of its argument refs the worker still holds: register
        the worker with their owners, and keep ``holds`` (the arguments) until they know."""
        who = conn.info.get("addr", conn.peer)
        refs = self.core.refs
        me = self.core.address
        pairs: Pairs = {}
        for oid, owner in borrowed:
            if owner == me:
                if refs.add_borrower(oid, who):
                    self.watch(who)
            else:
                pairs.setdefault(owner, []).append([oid, who])
        if pairs:
            self.tell_owners(pairs, lambda: _drop(holds))

    def result_refs(self, conn: Connection, task_id: bytes, fresh: list[Entry]) -> None:
        """We took the refs inside a task's result: once their owners know us, the worker
        may drop the holds it kept on them."""
        if not fresh:
            conn.post(P.HandoffDone(task_id))
            return

        def done() -> None:
            if not conn.closed:
                conn.post(P.HandoffDone(task_id))

        self.register_then(fresh, done)

    # -- telling owners (loop) ----------------------------------------------------------------
    def tell_owners(self, pairs: Pairs, then: Callable[[], None] | None) -> None:
        if not pairs:
            if then is not None:
                then()
            return
        task = self.core.loop.create_task(self._tell(pairs))
        if then is not None:
            task.add_done_callback(lambda _: then())

    async def _tell(self, pairs: Pairs) -> None:
        async def one(owner: str, items: list[list[Any]]) -> None:
            try:
                conn = await self.core.connect(owner)
                await conn.call("add_borrowers", items)
            except Exception as e:  # the owner is gone: its objects are lost anyway
                log.debug("cannot register borrowers with %s: %s", owner, e)

        await asyncio.gather(*(one(owner, items) for owner, items in pairs.items()))

    # -- owner side ---------------------------------------------------------------------------
    def _rpc_add_borrowers(self, conn: Connection, items: list[list[Any]]) -> None:
        refs = self.core.refs
        for oid, who in items:
            if refs.add_borrower(oid, who):
                self.watch(who)

    def watch(self, who: str) -> None:
        """Hold a connection to a borrower, so that its death releases what it borrowed."""
        core = self.core
        if who == core.address or who in self._watching:
            return
        conn = core.conns.get(who)
        if conn is not None and not conn.closed:
            return

        async def go() -> None:
            try:
                await core.connect(who)
            except Exception:
                core.refs.drop_borrower_everywhere(who)  # it died before we could look
            finally:
                self._watching.discard(who)

        self._watching.add(who)
        core.loop.create_task(go())

    def _on_remove_borrower(self, conn: Connection, msg: P.RemoveBorrower) -> None:
        self.core.refs.remove_borrower(msg.oid, conn.info.get("addr", conn.peer))

    # -- the worker of a task -----------------------------------------------------------------
    def _on_handoff_done(self, conn: Connection, msg: P.HandoffDone) -> None:
        self.handoffs.pop(msg.task_id, None)

    def caller_gone(self, addr: str) -> None:
        for tid in [t for t, v in self.handoffs.items() if v and v[0] == addr]:
            self.handoffs.pop(tid, None)


def _drop(_held: Any) -> None:
    """The callback that lets go of what its closure held."""

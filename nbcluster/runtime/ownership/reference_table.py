"""A process's table of objects it owns or borrows, with their reference counts.

Ownership follows Ray's design: the process that creates an ObjectRef (by ``put`` or by
submitting a task) owns it. The owner keeps the value (small objects) or where it lives
(large objects in a node's store), its lineage, and the processes borrowing it. The object is
freed when the owner's local count is zero and no borrower remains.

Borrowers are counted per process: each registration adds one, each release (sent by the
borrower itself when its last ref goes) takes one away. Registrations and releases travel on
different connections, so a release may overtake its registration: the count then dips below
zero for a moment, which is why the object lives while any count is *positive*. How
registrations are made so that an object is never freed while a ref to it is in transit is
``ownership``'s business.

Local counts include every live ObjectRef in the process, plus refs held internally (a task
spec holds its argument refs until the task finishes; an object holds the refs pickled inside
it until it is freed) — those holds are simply ObjectRef instances kept alive.

Thread safety: user threads and the event loop thread both touch the table, so every mutation
happens under ``lock``; callbacks (waking waiters, sending messages) run after it is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

PENDING = 0
READY = 1
FAILED = 2

KIND_INLINE = 0
KIND_STORE = 1
KIND_ERROR = 2

Waiter = Callable[["Entry"], None]


def _borrowed(e: Entry) -> bool:
    """Some other process holds a registered ref to ``e``."""
    return any(n > 0 for n in e.borrowers.values()) if e.borrowers else False


class Entry:
    """What this process knows about one object."""

    __slots__ = (
        "borrowers",
        "contained",
        "data",
        "fetching",
        "kind",
        "local",
        "oid",
        "owned",
        "owner",
        "registered",
        "size",
        "spec",
        "state",
        "waiters",
    )

    def __init__(self, oid: bytes, owner: str, owned: bool) -> None:
        self.oid = oid
        self.owner = owner
        self.owned = owned
        self.state = PENDING
        self.kind = KIND_INLINE
        self.data: Any = None  # inline bytes / [meta, bufs...]; node id for store; error bytes
        self.size = 0
        self.local = 0
        self.borrowers: dict[str, int] = {}  # owner side: process address -> registrations
        self.registered = False  # borrower side: an owner counts us, so we owe it a release
        self.waiters: list[Waiter] | None = None
        self.contained: list[Any] | None = None  # ObjectRefs held by this object
        self.spec: Any = None  # lineage: the task that makes it (owned, task returns)
        self.fetching = False


class ReferenceTable:
    def __init__(
        self,
        my_address: str,
        on_free_owned: Callable[[Entry], None],
        on_borrow: Callable[[Entry], None],
        on_unborrow: Callable[[Entry], None],
    ) -> None:
        self.my_address = my_address
        self.lock = threading.Lock()
        self.entries: dict[bytes, Entry] = {}
        self._collector = threading.local()
        self._on_free_owned = on_free_owned
        self._on_borrow = on_borrow
        self._on_unborrow = on_unborrow

    # -- creation -----------------------------------------------------------------------------
    def create_owned(self, oid: bytes, spec: Any = None) -> Entry:
        e = Entry(oid, self.my_address, True)
        e.spec = spec
        with self.lock:
            self.entries[oid] = e
        return e

    def forget_unreferenced(self, e: Entry) -> None:
        """Drop an entry that never had a reference (creation was abandoned): no release."""
        with self.lock:
            if e.local <= 0 and not _borrowed(e) and self.entries.get(e.oid) is e:
                del self.entries[e.oid]

    # -- local counts (ObjectRef lifetime) ---------------------------------------------------
    def add_local(self, oid: bytes, owner: str) -> None:
        new_borrow = None
        with self.lock:
            e = self.entries.get(oid)
            if e is None:
                e = Entry(oid, owner, owner == self.my_address)
                self.entries[oid] = e
                if not e.owned:
                    new_borrow = e
                else:  # our own object, already freed: a stale ref resurfacing
                    e.state = FAILED
                    e.kind = KIND_ERROR
                    e.data = None
            e.local += 1
        if new_borrow is not None:
            collected = getattr(self._collector, "entries", None)
            if collected is not None:  # whoever collects registers it (see ``collecting``)
                collected.append(new_borrow)
            else:
                self._on_borrow(new_borrow)

    def remove_local(self, oid: bytes) -> None:
        with self.lock:
            e = self.entries.get(oid)
            if e is None:
                return
            e.local -= 1
            if e.local > 0 or _borrowed(e):
                return
            del self.entries[oid]
        self._release(e)

    def _release(self, e: Entry) -> None:
        if e.owned:
            self._on_free_owned(e)
        else:
            self._on_unborrow(e)

    def start_collecting(self) -> list[Entry] | None:
        """Collect, instead of registering at once, the objects this thread starts to borrow
        until ``stop_collecting`` (refs unpickled meanwhile): the caller registers them in a
        way that keeps them alive meanwhile, e.g. by reporting them with a task's reply.
        Returns what to give ``stop_collecting`` (collections nest)."""
        local = self._collector
        outer: list[Entry] | None = getattr(local, "entries", None)
        local.entries = []
        return outer

    def stop_collecting(self, outer: list[Entry] | None) -> list[Entry]:
        """What was collected since the matching ``start_collecting``."""
        local = self._collector
        collected: list[Entry] = local.entries
        local.entries = outer
        return collected

    def mark_registered(self, entries: list[Entry]) -> list[Entry]:
        """Those of ``entries`` still borrowed, now marked registered (we owe a release)."""
        alive = []
        with self.lock:
            for e in entries:
                if self.entries.get(e.oid) is e and not e.registered:
                    e.registered = True
                    alive.append(e)
        return alive

    # -- borrowers (owner side) --------------------------------------------------------------
    def add_borrower(self, oid: bytes, who: str) -> bool:
        with self.lock:
            e = self.entries.get(oid)
            if e is None:
                return False
            e.borrowers[who] = e.borrowers.get(who, 0) + 1
            return True

    def remove_borrower(self, oid: bytes, who: str) -> None:
        with self.lock:
            e = self.entries.get(oid)
            if e is None:
                return
            left = e.borrowers.get(who, 0) - 1
            if left:
                e.borrowers[who] = left  # below zero: the release overtook its registration
            else:
                del e.borrowers[who]
            if e.local > 0 or _borrowed(e):
                return
            del self.entries[oid]
        self._release(e)

    def drop_borrower_everywhere(self, who: str) -> None:
        """A borrowing process died: it no longer holds anything."""
        freed = []
        with self.lock:
            for oid, e in list(self.entries.items()):
                if e.borrowers.pop(who, None) is not None and e.local <= 0 and not _borrowed(e):
                    del self.entries[oid]
                    freed.append(e)
        for e in freed:
            self._release(e)

    # -- state --------------------------------------------------------------------------------
    def get(self, oid: bytes) -> Entry | None:
        return self.entries.get(oid)

    def resolve(self, e: Entry, state: int, kind: int, data: Any, size: int = 0) -> None:
        """Record an object's value (or error) and wake whoever waits for it."""
        with self.lock:
            # Settled objects stay settled, except a failure replaced by a rebuilt value.
            if PENDING not in (e.state, state) and not (e.state == FAILED and state == READY):
                return
            e.state, e.kind, e.data, e.size = state, kind, data, size
            waiters, e.waiters = e.waiters, None
            e.fetching = False
        if waiters:
            for w in waiters:
                w(e)

    def fail_pending(self, error: bytes) -> None:
        """Nothing pending can finish any more (this process left the cluster): settle every
        pending object with ``error`` (a pickled exception), so whoever waits for one (a
        future, an ``await``, a ``get`` on another thread) hears it now, not never."""
        with self.lock:
            pending = [e for e in self.entries.values() if e.state == PENDING]
        for e in pending:
            self.resolve(e, FAILED, KIND_ERROR, error)

    def reset_pending(self, e: Entry) -> None:
        with self.lock:
            e.state = PENDING
            e.data = None

    def add_waiter(self, e: Entry, waiter: Waiter) -> bool:
        """Call ``waiter`` when ``e`` is no longer pending; False (and no call) if it is not."""
        with self.lock:
            if e.state != PENDING:
                return False
            if e.waiters is None:
                e.waiters = [waiter]
            else:
                e.waiters.append(waiter)
            return True

    def remove_waiter(self, e: Entry, waiter: Waiter) -> None:
        with self.lock:
            if e.waiters and waiter in e.waiters:
                e.waiters.remove(waiter)

    def borrowed_from(self, owner: str) -> list[Entry]:
        with self.lock:
            return [e for e in self.entries.values() if not e.owned and e.owner == owner]

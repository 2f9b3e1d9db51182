"""Releases from finalizers: a lock-free queue that the event loop applies.

Two things are released by the garbage collector: an ObjectRef (``ObjectRef.__del__``: one
local reference less) and the last zero-copy view of a stored object (a ``weakref.finalize``
set by ``store_reader``: the store pin goes). The collector may run them on any thread at any
point, even in a thread that holds the reference table's lock or the pins' lock, so taking
either there could deadlock. They only append to a deque (atomic in CPython) and schedule one
drain per burst on the loop, where the locks are free to take.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class ReleaseQueue:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self._dropped_refs: collections.deque[bytes] = collections.deque()
        self._dropped_pins: collections.deque[bytes] = collections.deque()
        self._release_scheduled = False

    def release_ref(self, oid: bytes) -> None:
        """An ObjectRef died. The garbage collector may call this on any thread, even one
        holding the reference table's lock (the I/O thread, say): so it only appends to a
        lock-free queue that the loop applies."""
        self._dropped_refs.append(oid)
        if not self._release_scheduled:
            self._release_scheduled = True
            self._schedule_releases()

    def release_pin(self, oid: bytes) -> None:
        """The last zero-copy view of ``oid`` died (a finalizer): as ``release_ref``."""
        self._dropped_pins.append(oid)
        if not self._release_scheduled:
            self._release_scheduled = True
            self._schedule_releases()

    def _schedule_releases(self) -> None:
        core = self.core
        try:
            if core.on_loop():
                core.loop.call_soon(self._apply_releases)
            else:
                core.loop.call_soon_threadsafe(self._apply_releases)
        except RuntimeError:  # the loop is closed: this process left the cluster
            pass

    def _apply_releases(self) -> None:
        self._release_scheduled = False  # before draining: a later append schedules again
        refs, pins = self._dropped_refs, self._dropped_pins
        core = self.core
        while refs:
            core.refs.remove_local(refs.popleft())
        while pins:
            core.store_reader.unpin(pins.popleft())

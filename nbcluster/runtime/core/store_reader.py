"""Reading objects from the node's store, zero-copy, and the pins that keep them there.

A value read from the store (a NumPy array, say) reads the shared memory in place, so the
object must stay in the store for as long as any such view lives. The node's store pins an
object for each reader that opened it (``store_open``); this process holds *one* agent pin per
object whatever the number of its readers, counted here, and gives it back when the count
reaches zero. The last view's death is noticed by a finalizer, which only queues the unpin
(``release_queue``): it may run on any thread, even one holding a lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime.objects import serialization as ser

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


def time_left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a ``time.monotonic`` time), never negative; None: no limit.
    A ``get``'s deadline bounds every wait on its way, store reads included."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class StoreReader:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self._pins: dict[bytes, list[Any]] = {}  # oid -> [offset, size, live views]
        self._pins_lock = threading.Lock()

    def read(self, oid: bytes, location: str | None = None,
             deadline: float | None = None) -> Any:  # fmt: skip
        """Read an object from this node's store, zero-copy; pinned while a view lives.

        ``location`` is the agent of the node holding it; if that is another node, our agent
        pulls a copy first, within ``deadline`` (``GetTimeoutError`` past it).
        """
        core = self.core
        assert core.store is not None
        with self._pins_lock:
            pin = self._pins.get(oid)
            if pin is not None:
                pin[2] += 1
        if pin is None:
            got = self._open(oid, location, deadline)
            if got is None:
                raise exc.ObjectLostError(oid.hex(), "it is no longer in the object store")
            with self._pins_lock:
                pin = self._pins.get(oid)
                if pin is None:
                    pin = self._pins[oid] = [got[0], got[1], 1]
                else:  # another thread opened it meanwhile: keep one agent pin
                    pin[2] += 1
                    core.agent.notify("store_release", oid)
        view, exporter = core.store.exported(pin[0], pin[1])
        try:
            value, buffers = ser.deserialize_store(view)
        except BaseException:
            self.unpin(oid)
            raise
        del view
        if buffers:  # the value reads the store in place: pinned until the last reader goes
            del buffers
            weakref.finalize(exporter, core.releases.release_pin, oid)
        else:
            self.unpin(oid)
        return value

    def _open(self, oid: bytes, location: str | None, deadline: float | None) -> Any:
        """Ask our agent to pin ``oid`` (pulling it here first if need be). A caller that
        gives up at its deadline leaves no pin behind: an answer that comes later is
        released at once."""
        answer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        core = self.core

        def start() -> None:
            def done(f: asyncio.Future[Any]) -> None:
                got = None if f.cancelled() or f.exception() is not None else f.result()
                if not answer.set_running_or_notify_cancel():  # the reader gave up
                    if got is not None:
                        core.agent.notify("store_release", oid)
                    return
                if f.cancelled() or f.exception() is not None:
                    answer.set_exception(
                        exc.ObjectLostError(oid.hex(), str(f.exception() or "cancelled"))
                    )
                else:
                    answer.set_result(got)

            core.agent.call("store_open", oid, location).add_done_callback(done)

        core.call_soon(start)
        try:
            return answer.result(time_left(deadline))
        except concurrent.futures.TimeoutError:
            if answer.cancel():
                raise exc.GetTimeoutError(
                    f"get timed out reading object {oid.hex()} (fetching it from {location})"
                ) from None
            return answer.result()

    def unpin(self, oid: bytes) -> None:
        """One reader of ``oid`` is done; the last one gives the agent's pin back."""
        with self._pins_lock:
            pin = self._pins.get(oid)
            if pin is None:
                return
            pin[2] -= 1
            if pin[2] > 0:
                return
            del self._pins[oid]
        if not self.core.closed:
            self.core.agent.notify("store_release", oid)

    def pinned(self) -> set[bytes]:
        """The objects a live view of this process reads in place (``nbcluster memory``)."""
        with self._pins_lock:
            return set(self._pins)

    def forget(self) -> None:
        """The process left the cluster: its store mapping is gone, and so are its pins."""
        with self._pins_lock:
            self._pins.clear()

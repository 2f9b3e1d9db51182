"""Generator tasks, as Ray's: streaming (``ObjectRefGenerator``) and ``num_returns="dynamic"``.

A remote function or actor method that is a generator function returns an
``ObjectRefGenerator`` at once (``num_returns="streaming"``, the default for generators): the
worker sends each value home as soon as it is yielded (``GENERATOR_ITEM``), and iterating the
generator gives their ObjectRefs in order, while the task still runs. The task's one return
object (``completed()``) settles when it ends: its error, if it failed, comes as the ref after
the last value, then iteration stops.

The owner's loop hands each item to the generator (``deliver``) and holds it there until the
consumer takes it; the owner's records point at the generator weakly, so a generator dropped
before the end takes its untaken items with it, and later ones are freed as they arrive
(the task runs on to its end, as in Ray).

``num_returns="dynamic"`` (Ray's older form) instead runs the whole generator and returns one
object: a ``DynamicObjectRefGenerator`` of the values' refs, owned by the worker.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from nbcluster.exceptions import GetTimeoutError
from nbcluster.runtime.ids import object_id
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import FAILED, Entry

#: Index of a streaming task's first value among its objects (1 is the task's own return).
FIRST_ITEM = 2


def item_id(task_id: bytes, index: int) -> bytes:
    """The object id of the ``index``-th value a streaming generator task yields."""
    return object_id(task_id, index + FIRST_ITEM)


class ObjectRefGenerator:
    """The refs of the values a streaming generator task yields, each as soon as it is
    yielded: ``for ref in gen``, ``next(gen)``, ``async for ref in gen``."""

    def __init__(self, completion: ObjectRef, core: Any) -> None:
        self._completion = completion
        self._core = core
        self._lock = threading.Lock()
        self._ready: dict[int, ObjectRef] = {}  # delivered, not taken yet
        self._next = 0  # the index the consumer takes next
        self._ended = False  # the task ended: nothing more will be delivered
        self._error_given = False
        self._wakers: list[Callable[[], None]] = []
        e = core.refs.get(completion.binary())
        me = weakref.ref(self)  # the entry's waiter must not keep the generator alive

        def ended(_: Entry) -> None:
            gen = me()
            if gen is not None:
                gen._end()

        if e is None or not core.refs.add_waiter(e, ended):
            self._ended = True

    # -- the owner's loop ---------------------------------------------------------------------
    def deliver(self, index: int, ref: ObjectRef) -> None:
        """The worker yielded the ``index``-th value, ``ref``."""
        with self._lock:
            self._ready[index] = ref
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def _end(self) -> None:
        with self._lock:
            self._ended = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    # -- the consumer -------------------------------------------------------------------------
    def _take(self) -> ObjectRef | None:
        """The next ref if it is here; None if it is not yet; StopIteration at the end.
        Under ``_lock``."""
        ref = self._ready.pop(self._next, None)
        if ref is not None:
            self._next += 1
            return ref
        if not self._ended:
            return None
        e = self._core.refs.get(self._completion.binary())
        if e is not None and e.state == FAILED and not self._error_given:
            self._error_given = True  # the task's error, once, as the ref after the last
            return self._completion
        raise StopIteration

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        return self._next_sync()

    def _next_sync(self, timeout: float | None = None) -> ObjectRef:
        """The next ref, waiting up to ``timeout`` seconds for the worker to yield it."""
        while True:
            arrived = threading.Event()
            with self._lock:
                ref = self._take()
                if ref is not None:
                    return ref
                self._wakers.append(arrived.set)
            if not self._core.block_on(arrived, timeout):
                raise GetTimeoutError(f"no value from the generator within {timeout} s")

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef:
        loop = asyncio.get_running_loop()
        while True:
            arrived = loop.create_future()
            with self._lock:
                try:
                    ref = self._take()
                except StopIteration:
                    raise StopAsyncIteration from None
                if ref is not None:
                    return ref
                self._wakers.append(_waker(loop, arrived))
            await arrived

    def completed(self) -> ObjectRef:
        """A ref that is ready when the task has ended (its error if it failed)."""
        return self._completion

    def next_ready(self) -> bool:
        """Whether ``next()`` would return (or stop) at once."""
        with self._lock:
            return self._next in self._ready or self._ended

    def on_next_ready(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (once, from any thread) when ``next_ready`` may have changed."""
        with self._lock:
            if not (self._next in self._ready or self._ended):
                self._wakers.append(wake)
                return
        wake()

    def is_finished(self) -> bool:
        """Whether every ref has been taken and the task has ended."""
        with self._lock:
            if self._next in self._ready or not self._ended:
                return False
            e = self._core.refs.get(self._completion.binary())
            return self._error_given or e is None or e.state != FAILED

    def task_id(self) -> bytes:
        return self._completion.task_id()

    def __reduce__(self) -> Any:
        raise TypeError(
            "An ObjectRefGenerator cannot be passed to or returned from a task: pass the "
            "ObjectRefs it yields instead."
        )

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._completion.task_id().hex()})"


def _waker(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> Callable[[], None]:
    """What wakes an ``async for`` waiting in ``loop`` (called from the owner's loop)."""

    def settle() -> None:
        if not fut.done():
            fut.set_result(None)

    def wake() -> None:
        try:
            loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the consumer's loop is closed: nobody waits any more
            pass

    return wake


class StreamFeed:
    """The owner's record of a streaming task (``TaskSpec.stream``): how many values it has
    delivered (a retry skips those), the generator they go to (weakly), and where the task
    was submitted (its values' call site in the state API)."""

    __slots__ = ("consumer", "received", "site")

    def __init__(self, consumer: ObjectRefGenerator, site: str) -> None:
        self.received = 0
        self.consumer = weakref.ref(consumer)
        self.site = site


class DynamicObjectRefGenerator:
    """The refs a ``num_returns="dynamic"`` task yielded."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def each_value_stored(fn: Any, put: Any) -> Any:
    """``fn`` as a task of dynamic returns: every value it yields is stored with ``put``."""

    def run(*args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        return DynamicObjectRefGenerator([put(value) for value in fn(*args, **kwargs)])

    return run

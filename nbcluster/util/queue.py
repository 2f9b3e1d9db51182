"""A first-in, first-out queue shared by tasks and actors, as Ray's ``ray.util.queue``.

The items live in one async actor wrapping an ``asyncio.Queue``: blocking ``put``/``get``
become coroutines suspended inside the actor, so any number of producers and consumers can
wait at once without holding a thread (or a CPU) each, and the actor's event loop serialises
every change to the queue without locks.

A ``Queue`` object is only a handle: it pickles as its actor handle and ``maxsize``, so it can
be passed to tasks and actors, and the actor goes away with the last copy of the handle (or
at ``shutdown``).
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from nbcluster.runtime.api.actor import ActorClass, ActorHandle, kill
from nbcluster.runtime.api.session import get, remote, wait
from nbcluster.runtime.execute.actor_host import exit_actor
from nbcluster.runtime.ownership.object_ref import ObjectRef

T = TypeVar("T")


class Empty(_stdlib_queue.Empty):
    """``get`` found nothing (non-blocking, or within its timeout)."""


class Full(_stdlib_queue.Full):
    """``put`` found no room (non-blocking, or within its timeout)."""


class _QueueActor:
    """The actor that holds the items. Its methods (not __init__) run on its event loop."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            raise Full(f"no free slot within {timeout} s (maxsize={self.maxsize})") from None

    async def get(self, timeout: float | None = None) -> Any:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            raise Empty(f"no item within {timeout} s") from None

    def put_nowait(self, item: Any) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            raise Full(f"the queue is full (maxsize={self.maxsize})") from None

    def put_nowait_batch(self, items: list[Any]) -> None:
        # All or nothing: a batch that does not fit adds no item at all.
        if self.maxsize > 0 and len(items) + self.qsize() > self.maxsize:
            raise Full(
                f"Cannot add {len(items)} items to queue of size {self.qsize()} "
                f"and maxsize {self.maxsize}."
            )
        for item in items:
            self.queue.put_nowait(item)

    def get_nowait(self) -> Any:
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            raise Empty("the queue is empty") from None

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        if num_items > self.qsize():
            raise Empty(f"Cannot get {num_items} items from queue of size {self.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]

    async def terminate(self) -> None:
        # Runs after every call submitted before it has started; calls still waiting inside
        # the actor (a blocked get) then fail with ActorDiedError, as after Ray's shutdown.
        exit_actor()


def _queue_actor_class() -> ActorClass:
    # Wrapped on use, not at import: the module attribute must stay the plain class, which is
    # how cloudpickle sends it to the worker (by reference, as nbcluster.util.queue._QueueActor).
    cls: ActorClass = remote(_QueueActor)
    return cls


class Queue:
    """A FIFO queue usable from the driver, tasks and actors alike.

    ``maxsize <= 0`` means unbounded. ``actor_options`` are passed to the backing actor's
    ``.options()`` (e.g. ``{"num_cpus": 0}`` or a ``name`` to find it with ``get_actor``).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        self.maxsize = maxsize
        self.actor: ActorHandle | None = (
            _queue_actor_class().options(**(actor_options or {})).remote(maxsize)
        )

    # A Queue travels as its handle: no local state to go stale in a copy.
    def __getstate__(self) -> dict[str, Any]:
        return {"maxsize": self.maxsize, "actor": self.actor}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.maxsize = state["maxsize"]
        self.actor = state["actor"]

    def _actor(self) -> Any:
        if self.actor is None:
            raise RuntimeError("this Queue has been shut down")
        return self.actor

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """How many items are in the queue now."""
        return int(get(self._actor().qsize.remote()))

    def qsize(self) -> int:
        """Same as ``size()`` (the name ``queue.Queue`` uses)."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item now."""
        return bool(get(self._actor().empty.remote()))

    def full(self) -> bool:
        """Whether a bounded queue has no free slot now."""
        return bool(get(self._actor().full.remote()))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; blocking waits (up to ``timeout`` s) for a free slot, else ``Full``."""
        if not block:
            _unwrap(lambda: get(self._actor().put_nowait.remote(item)))
            return
        _check_timeout(timeout)
        _unwrap(lambda: get(self._actor().put.remote(item, timeout)))

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put`` for async code (e.g. an async actor): awaits instead of blocking a thread."""
        if not block:
            await _unwrap_async(self._actor().put_nowait.remote(item))
            return
        _check_timeout(timeout)
        await _unwrap_async(self._actor().put.remote(item, timeout))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; blocking waits up to ``timeout`` s, else ``Empty``."""
        if not block:
            return _unwrap(lambda: get(self._actor().get_nowait.remote()))
        _check_timeout(timeout)
        return _unwrap(lambda: get(self._actor().get.remote(timeout)))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for async code: awaits instead of blocking a thread."""
        if not block:
            return await _unwrap_async(self._actor().get_nowait.remote())
        _check_timeout(timeout)
        return await _unwrap_async(self._actor().get.remote(timeout))

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: ``Full`` at once when there is no room."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all of ``items`` in one call, or none of them (``Full``) if they do not fit."""
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        batch = list(items)
        _unwrap(lambda: get(self._actor().put_nowait_batch.remote(batch)))

    def get_nowait(self) -> Any:
        """``get(block=False)``: ``Empty`` at once when there is no item."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return ``num_items`` items in one call, or none (``Empty``) if too few."""
        if not isinstance(num_items, int) or isinstance(num_items, bool):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        return list(_unwrap(lambda: get(self._actor().get_nowait_batch.remote(num_items))))

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Destroy the backing actor; the items are lost and every copy of this queue stops.

        Without ``force`` the actor exits after the calls it already started get their turn,
        and is killed if that takes longer than ``grace_period_s``.
        """
        actor, self.actor = self.actor, None
        if actor is None:
            return
        if force:
            kill(actor, no_restart=True)
            return
        done = actor.terminate.remote()
        ready, _ = wait([done], timeout=grace_period_s)
        if not ready:
            kill(actor, no_restart=True)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


def _unwrap(call: Callable[[], T]) -> T:
    """Run ``call``; a remote ``Empty``/``Full`` is re-raised as a plain local one.

    The remote error is also an instance of Empty/Full (so it would be caught anyway), but its
    message is a remote traceback; a queue running dry is an ordinary event, not a crash.
    """
    try:
        return call()
    except Empty as e:
        raise Empty(*_cause_args(e)) from None
    except Full as e:
        raise Full(*_cause_args(e)) from None


async def _unwrap_async(ref: ObjectRef) -> Any:
    try:
        return await ref
    except Empty as e:
        raise Empty(*_cause_args(e)) from None
    except Full as e:
        raise Full(*_cause_args(e)) from None


def _cause_args(e: BaseException) -> tuple[Any, ...]:
    cause = getattr(e, "cause", None)
    return tuple(getattr(cause, "args", e.args))


__all__ = ["Empty", "Full", "Queue"]

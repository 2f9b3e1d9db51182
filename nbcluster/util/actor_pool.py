"""``ActorPool``: spread work over a fixed set of actors, as Ray's ``ray.util.ActorPool``.

The pool is a driver-side bookkeeper, not a scheduler: it hands each value to an idle actor
through the user's ``fn(actor, value)`` (which returns the call's ObjectRef), queues values
while every actor is busy, and gives an actor its next value as soon as one of its results is
collected. Collecting results is therefore what drives the pool forward, exactly as in Ray:
``get_next`` returns results in submission order, ``get_next_unordered`` in completion order
(through ``wait``), and the two must not be mixed.

Results are remembered by submission index rather than by ObjectRef, so ``fn`` may return a
list of refs (a method called with ``num_returns > 1``); such a result is ready when every
ref in it is.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeAlias, TypeVar

from nbcluster.runtime.api.session import get, wait
from nbcluster.runtime.ownership.object_ref import ObjectRef

V = TypeVar("V")

#: What ``fn(actor, value)`` returns: one call's ref, or the refs of a multi-return call.
Result: TypeAlias = "ObjectRef | list[ObjectRef]"

_TIMEOUT_MSG = "Timed out waiting for result"


def _refs(result: Result) -> list[ObjectRef]:
    """The distinct refs of one result (``wait`` refuses duplicates)."""
    refs = result if isinstance(result, (list, tuple)) else [result]
    return list(dict.fromkeys(refs))


class ActorPool(Generic[V]):
    """Run ``fn(actor, value)`` over values with at most one call in flight per actor.

    >>> pool = ActorPool([Worker.remote(), Worker.remote()])
    >>> list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3, 4]))
    [2, 4, 6, 8]
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle: list[Any] = list(actors)
        # submission index -> (the result of fn, the actor computing it)
        self._busy: dict[int, tuple[Result, Any]] = {}
        self._waiting: deque[tuple[Callable[[Any, V], Result], V]] = deque()
        self._next_task = 0  # index the next submission gets
        self._next_return = 0  # index get_next returns next

    # -- bulk -----------------------------------------------------------------------------------
    def map(self, fn: Callable[[Any, V], Result], values: Iterable[V]) -> Iterator[Any]:
        """Submit every value now; the returned generator yields results in order.

        Results still owed by earlier submissions are discarded first (as Ray does), so a new
        ``map`` never yields a stale result.
        """
        self._discard_pending()
        for v in values:
            self.submit(fn, v)
        return self._drain(self.get_next)

    def map_unordered(self, fn: Callable[[Any, V], Result], values: Iterable[V]) -> Iterator[Any]:
        """Like ``map``, but yields each result as soon as it is ready."""
        self._discard_pending()
        for v in values:
            self.submit(fn, v)
        return self._drain(self.get_next_unordered)

    def _drain(self, next_result: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield next_result()

    def _discard_pending(self) -> None:
        # Give up every result still owed, oldest first. Freed actors take the queued values,
        # whose results are given up in turn, until nothing is owed; errors are not raised.
        while self._busy:
            index = min(self._busy)
            self._finish(index, self._busy[index][1])

    # -- one at a time --------------------------------------------------------------------------
    def submit(self, fn: Callable[[Any, V], Result], value: V) -> None:
        """Give ``value`` to an idle actor, or queue it until one is free."""
        if self._idle:
            actor = self._idle.pop()
            self._busy[self._next_task] = (fn(actor, value), actor)
            self._next_task += 1
        else:
            self._waiting.append((fn, value))

    def has_next(self) -> bool:
        """Whether any submitted value's result has not been collected yet."""
        return bool(self._busy)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order.

        On timeout raises ``TimeoutError``; with ``ignore_if_timedout`` the late result is
        given up (its actor returns to the pool) so the following call moves on.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return not in self._busy:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        index = self._next_return
        result, actor = self._busy[index]
        if timeout is not None and not _ready(result, timeout):
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            self._finish(index, actor)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {result} has been ignored.")
        self._finish(index, actor)
        return get(result)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Whichever pending result is ready first (``wait``), in completion order.

        On timeout raises ``TimeoutError``; with ``ignore_if_timedout`` the oldest pending
        result is given up, so a stuck call cannot hold its actor forever.
        """
        if not self.has_next():
            raise StopIteration("No more results to get")
        index = self._first_ready(timeout)
        if index is None:
            if not ignore_if_timedout:
                raise TimeoutError(_TIMEOUT_MSG)
            index = min(self._busy)
            result, actor = self._busy[index]
            self._finish(index, actor)
            raise TimeoutError(f"{_TIMEOUT_MSG}. The task {result} has been ignored.")
        result, actor = self._busy[index]
        self._finish(index, actor)
        return get(result)

    def _first_ready(self, timeout: float | None) -> int | None:
        """The index of a pending result whose refs are all ready, waiting up to ``timeout``."""
        owner = {}
        for index, (result, _) in self._busy.items():
            for ref in _refs(result):
                owner[ref] = index
        remaining = dict(self._busy)
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = list(owner)
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, watch = wait(watch, num_returns=1, timeout=left)
            if not ready:
                return None
            for ref in ready:
                index = owner[ref]
                if _ready(remaining[index][0], 0):
                    return index
            if not watch:  # cannot happen: the last ready ref completes its result
                return min(remaining)

    def _finish(self, index: int, actor: Any) -> None:
        """Result ``index`` is collected (or given up): its actor takes the next value."""
        del self._busy[index]
        self._next_return = max(self._next_return, index + 1)
        self._return_actor(actor)

    def _return_actor(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._waiting:
            self.submit(*self._waiting.popleft())

    # -- membership -----------------------------------------------------------------------------
    def has_free(self) -> bool:
        """Whether an actor is idle and no submitted value is waiting for one."""
        return bool(self._idle) and not self._waiting

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None when none is free)."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor (new, or one taken with ``pop_idle``); it starts on queued values."""
        busy = [a for _, a in self._busy.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


def _ready(result: Result, timeout: float) -> bool:
    refs = _refs(result)
    ready, _ = wait(refs, num_returns=len(refs), timeout=timeout)
    return len(ready) == len(refs)


__all__ = ["ActorPool"]

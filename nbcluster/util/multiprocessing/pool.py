"""``Pool``: ``multiprocessing.Pool``'s API over actors, as Ray's ``ray.util.multiprocessing``.

Each of the pool's processes is an actor (its own worker process, anywhere in the cluster)
that ran the ``initializer`` once. Work is cut into chunks, as ``multiprocessing`` cuts it,
and the chunks go round the actors; an actor runs a chunk's items one after another and sends
back each item's value or exception, so one failing item fails its result (raised as the
function raised it, the remote traceback as its cause, as ``multiprocessing`` does) without
losing the others an ``imap`` has to yield.

Callbacks run on one thread of the driver shared by every pool, when a result is complete,
before ``get`` returns it; like ``multiprocessing``'s, they should return quickly.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import cloudpickle

from nbcluster.exceptions import ClusterConnectionError
from nbcluster.runtime.api.actor import ActorHandle, kill
from nbcluster.runtime.api.session import (
    cluster_resources,
    get,
    init,
    is_initialized,
    on_shutdown,
    remote,
    wait,
)  # fmt: skip
from nbcluster.runtime.ownership.object_ref import ObjectRef

log = logging.getLogger("nbcluster.pool")


class TimeoutError(multiprocessing.TimeoutError, builtins.TimeoutError):
    """A result not ready in time: catchable as ``multiprocessing.TimeoutError`` (what
    ``multiprocessing`` code catches) and as the builtin ``TimeoutError`` (what Ray raises)."""


class RemoteTraceback(Exception):
    """The cause of an error raised by a pool's function: its traceback in the actor."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


#: One item of work: positional and keyword arguments.
Item = tuple[tuple[Any, ...], dict[str, Any]]


class _Failed:
    """An item's exception as it travels home, with its traceback text."""

    def __init__(self, error: BaseException, tb: str) -> None:
        self.error, self.tb = error, tb

    def rebuild(self) -> BaseException:
        self.error.__cause__ = RemoteTraceback(self.tb)
        return self.error


class _PoolProcess:
    """One process of a pool: runs the initializer, then chunks of items."""

    def __init__(self, initializer: Callable[..., Any] | None, initargs: tuple[Any, ...]) -> None:
        if initializer is not None:
            initializer(*initargs)

    def pid(self) -> int:
        return os.getpid()

    def run_chunk(self, fn: Callable[..., Any], items: list[Item]) -> list[Any]:
        out: list[Any] = []
        for args, kwargs in items:
            try:
                out.append(fn(*args, **kwargs))
            except Exception as e:
                out.append(_failure(e))
        return out


def _failure(e: Exception) -> _Failed:
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    try:
        cloudpickle.loads(cloudpickle.dumps(e))
    except Exception:  # an exception that cannot travel: its text does
        e = RuntimeError(f"{type(e).__name__}: {e} (the exception itself could not be sent)")
    e.__traceback__ = None
    return _Failed(e, tb)


_PoolActor = remote(_PoolProcess)


# ------------------------------------------------------------------------------ results


class _Callbacks:
    """The thread that completes results (and runs their callbacks), shared by every pool of
    the process: it runs while some result waits for a chunk, and ends when none does. At
    ``shutdown`` the results still waiting fail (their chunks will never come)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._waiting: dict[AsyncResult, int] = {}  # result -> its chunks not done yet
        self._hooked = False

    def expect(self, result: AsyncResult, chunks: list[ObjectRef]) -> None:
        """``result`` completes once each of ``chunks`` is done."""
        with self._lock:
            if not self._hooked:
                on_shutdown(self._abandon)
                self._hooked = True
            self._waiting[result] = len(chunks)
            if self._thread is None:  # a thread of its own queue: an abandoned one ends
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="pool-results", daemon=True
                )
                self._thread.start()
            q = self._queue
        for i, ref in enumerate(chunks):
            ref.future().add_done_callback(lambda f, i=i: q.put((result, i, f)))

    def _run(self, q: queue.SimpleQueue[Any]) -> None:
        while (item := q.get()) is not None:
            result, index, future = item
            result._chunk_done(index, future)
            with self._lock:
                if result in self._waiting:
                    self._waiting[result] -= 1
                    if self._waiting[result] == 0:
                        del self._waiting[result]
                if not self._waiting:
                    self._thread = None
                    return

    def _abandon(self) -> None:
        with self._lock:
            waiting, self._waiting = list(self._waiting), {}
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None
        for result in waiting:
            result._fail(ClusterConnectionError("the cluster was shut down before the result"))


_CALLBACKS = _Callbacks()


class AsyncResult:
    """A result of ``apply_async``, ``map_async`` or ``starmap_async``."""

    def __init__(
        self, chunks: list[ObjectRef], single: bool,
        callback: Callable[[Any], Any] | None, error_callback: Callable[[Any], Any] | None,
    ) -> None:  # fmt: skip
        self._single = single
        self._callback, self._error_callback = callback, error_callback
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._parts: list[Any] = [None] * len(chunks)
        self._left = len(chunks)
        self._outcome: tuple[bool, Any] = (True, None)
        self._finished = False
        if chunks:
            _CALLBACKS.expect(self, chunks)
        else:
            self._finish()

    def _chunk_done(self, index: int, future: Any) -> None:
        error = future.exception()
        self._parts[index] = error if error is not None else future.result()
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _fail(self, error: BaseException) -> None:
        self._finish([error])

    def _finish(self, parts: list[Any] | None = None) -> None:
        """Complete once: with the chunks' parts, or (``parts``) failed at shutdown."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        values: list[Any] = []
        outcome: tuple[bool, Any] | None = None
        # the first error in item order, as a sequential map's
        for part in self._parts if parts is None else parts:
            if isinstance(part, BaseException):
                outcome = (False, part)
                break
            failed = next((v for v in part if isinstance(v, _Failed)), None)
            if failed is not None:
                outcome = (False, failed.rebuild())
                break
            values.extend(part)
        if outcome is None:
            outcome = (True, values[0] if self._single else values)
        self._outcome = outcome
        try:
            if outcome[0] and self._callback is not None:
                self._callback(outcome[1])
            elif not outcome[0] and self._error_callback is not None:
                self._error_callback(outcome[1])
        except Exception:
            log.exception("a pool result's callback failed")
        finally:
            self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return bool(self._outcome[0])

    def wait(self, timeout: float | None = None) -> None:
        self._event.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        if not self._event.wait(timeout):
            raise TimeoutError("the result is not ready")
        ok, value = self._outcome
        if ok:
            return value
        raise value


class IMapIterator:
    """``imap``'s and ``imap_unordered``'s results; ``next(timeout)`` as ``multiprocessing``'s.
    An item whose function raised raises at its turn; the iteration goes on after it.

    The iterable is read as results are taken, a few chunks per process ahead, so a long
    (or endless) generator streams through the pool instead of being read whole first."""

    def __init__(
        self, pool: Pool, fn: Callable[..., Any], items: Iterator[Any], chunksize: int,
        ordered: bool,
    ) -> None:  # fmt: skip
        self._pool, self._fn, self._chunksize = pool, fn, chunksize
        self._items: Iterator[Any] | None = items  # None once it is read to its end
        self._ordered = ordered
        self._pending: list[ObjectRef] = []
        self._buffer: list[Any] = []
        self._ahead = 2 * pool._processes  # chunks in flight
        self.fill()

    def fill(self, everything: bool = False) -> None:
        """Send chunks until enough are in flight (``everything``: until the iterable ends,
        as ``close`` needs)."""
        while self._items is not None and (everything or len(self._pending) < self._ahead):
            chunk: list[Item] = [((x,), {}) for x in itertools.islice(self._items, self._chunksize)]
            if not chunk:
                self._items = None
                break
            self._pending.append(self._pool._submit(self._fn, chunk))

    def __iter__(self) -> IMapIterator:
        return self

    def __next__(self) -> Any:
        return self.next()

    def next(self, timeout: float | None = None) -> Any:
        while not self._buffer:
            if not self._pending:
                raise StopIteration
            if self._ordered:
                ref = self._pending[0]
                if not wait([ref], timeout=timeout)[0]:
                    raise TimeoutError("the next result is not ready")
                self._pending.pop(0)
            else:
                ready, self._pending = wait(self._pending, num_returns=1, timeout=timeout)
                if not ready:
                    raise TimeoutError("no result is ready")
                ref = ready[0]
            self._buffer = list(get(ref))
            if self._pool._state == "RUN":
                self.fill()
        value = self._buffer.pop(0)
        if isinstance(value, _Failed):
            raise value.rebuild()
        return value


# -------------------------------------------------------------------------------- the pool


class Pool:
    """``multiprocessing.Pool`` on the cluster: ``processes`` actors (default: the cluster's
    CPUs), each having run ``initializer(*initargs)``, replaced after ``maxtasksperchild``
    chunks. ``ray_remote_args`` are the actors' options (by default they hold no CPU, as
    Ray's, so a pool larger than the cluster still starts); ``context`` is accepted for
    ``multiprocessing``'s signature and means nothing here; ``ray_address`` is the cluster to
    attach to when none is connected yet."""

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] | None = None,
        maxtasksperchild: int | None = None,
        context: Any = None,
        ray_address: str | None = None,
        ray_remote_args: dict[str, Any] | None = None,
    ) -> None:
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild < 1
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        if not is_initialized():
            init(address=ray_address)
        if processes is None:
            processes = max(1, int(cluster_resources().get("CPU", 1)))
        self._initializer = initializer
        self._initargs = tuple(initargs or ())
        self._maxtasks = maxtasksperchild
        self._remote_args = {"num_cpus": 0, **(ray_remote_args or {})}
        self._processes = processes
        self._actors: list[ActorHandle] = [self._new_actor() for _ in range(processes)]
        self._chunks_run = [0] * processes
        self._retired: list[ActorHandle] = []  # replaced (maxtasksperchild), ending
        self._next = itertools.cycle(range(processes))
        self._state = "RUN"
        #: imap iterators still reading their iterable: close() sends the rest first
        self._iterators: weakref.WeakSet[IMapIterator] = weakref.WeakSet()
        #: the graceful ends asked of processes (close, maxtasksperchild): each is done
        #: once the work sent before it is
        self._ending: list[ObjectRef] = []

    def _new_actor(self) -> ActorHandle:
        actor: ActorHandle = _PoolActor.options(**self._remote_args).remote(
            self._initializer, self._initargs
        )
        return actor

    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _submit(self, fn: Callable[..., Any], items: list[Item]) -> ObjectRef:
        i = next(self._next)
        ref: ObjectRef = self._actors[i].run_chunk.remote(fn, items)
        self._chunks_run[i] += 1
        if self._maxtasks is not None and self._chunks_run[i] >= self._maxtasks:
            old = self._actors[i]  # it ends after the chunks already sent to it
            self._ending.append(old.__ray_terminate__.remote())
            self._retired.append(old)
            self._actors[i] = self._new_actor()
            self._chunks_run[i] = 0
        return ref

    def _chunksize(self, n: int, chunksize: int | None) -> int:
        if chunksize is not None:
            if chunksize < 1:
                raise ValueError(f"Chunksize must be 1+, not {chunksize}")
            return chunksize
        size, extra = divmod(n, self._processes * 4)  # multiprocessing's choice
        return size + 1 if extra else max(size, 1)

    def _chunks(self, fn: Callable[..., Any], items: list[Item], chunksize: int) -> list[ObjectRef]:
        return [self._submit(fn, items[i : i + chunksize]) for i in range(0, len(items), chunksize)]

    # -- apply -------------------------------------------------------------------------------
    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
    ) -> Any:  # fmt: skip
        return self.apply_async(func, args, kwds).get()

    def apply_async(
        self, func: Callable[..., Any], args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None, callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:  # fmt: skip
        self._check_running()
        ref = self._submit(func, [(tuple(args), dict(kwds or {}))])
        return AsyncResult([ref], True, callback, error_callback)

    # -- map ---------------------------------------------------------------------------------
    def _map_async(
        self, func: Callable[..., Any], items: list[Item], chunksize: int | None,
        callback: Callable[[Any], Any] | None, error_callback: Callable[[Any], Any] | None,
    ) -> AsyncResult:  # fmt: skip
        self._check_running()
        chunks = self._chunks(func, items, self._chunksize(len(items), chunksize))
        return AsyncResult(chunks, False, callback, error_callback)

    def map(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        return self.map_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def map_async(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:  # fmt: skip
        items: list[Item] = [((x,), {}) for x in iterable]
        return self._map_async(func, items, chunksize, callback, error_callback)

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
    ) -> list[Any]:  # fmt: skip
        return self.starmap_async(func, iterable, chunksize).get()  # type: ignore[no-any-return]

    def starmap_async(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:  # fmt: skip
        items: list[Item] = [(tuple(args), {}) for args in iterable]
        return self._map_async(func, items, chunksize, callback, error_callback)

    def imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Results in order, each as soon as it and those before it are done."""
        return self._imap(func, iterable, chunksize, ordered=True)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> IMapIterator:
        """Results as their chunks finish."""
        return self._imap(func, iterable, chunksize, ordered=False)

    def _imap(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int, ordered: bool
    ) -> IMapIterator:
        self._check_running()
        if chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize}")
        it = IMapIterator(self, func, iter(iterable), chunksize, ordered)
        self._iterators.add(it)
        return it

    # -- the end -----------------------------------------------------------------------------
    def close(self) -> None:
        """No more work; the processes end once the work sent is done (``join`` waits)."""
        if self._state == "RUN":
            for it in list(self._iterators):  # work asked for before close is done
                it.fill(everything=True)
            self._state = "CLOSE"
            self._ending.extend(actor.__ray_terminate__.remote() for actor in self._actors)

    def terminate(self) -> None:
        """End every process now; work not done is lost (its results fail)."""
        self._state = "TERMINATE"
        self._end_processes()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the processes to end, after ``close`` or ``terminate``."""
        if self._state == "RUN":
            raise ValueError("Pool is still running: close() or terminate() it first")
        if self._ending:  # done once the work sent before each is
            wait(self._ending, num_returns=len(self._ending), timeout=timeout)
        self._end_processes()

    def _end_processes(self) -> None:
        for actor in [*self._actors, *self._retired]:
            kill(actor)  # a process that ended already is not an error
        self._retired, self._ending = [], []

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()  # as multiprocessing.Pool

    def __reduce__(self) -> Any:
        raise TypeError("a Pool cannot be passed to tasks or pickled")

"""The object API of a process: ``put``, ``get``, ``wait`` and the futures of ObjectRefs.

User threads call these directly, not through the loop: they read and update the reference
table under its lock, block on a ``threading.Event`` set by the entry's waiters, and hand I/O
(a fetch from a borrowed object's owner, a store pin) to the loop thread. A value comes from
the entry itself (small, inline) or from the store (``store_reader``, zero-copy); an object
whose every copy is lost is rebuilt here, on the reader's way: the owner resubmits the task
that made it (lineage), a borrower asks the owner again.

The checks and messages of ``get`` and ``wait`` are Ray's, so code written for Ray fails the
same way here.
"""

from __future__ import annotations

import concurrent.futures
import pickle
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core.store_reader import time_left
from nbcluster.runtime.ids import put_object_id
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.ownership.generators import ObjectRefGenerator
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.ownership.reference_table import (
    FAILED,
    KIND_INLINE,
    KIND_STORE,
    PENDING,
    READY,
    Entry,
)

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker

#: Threads resolving futures of ObjectRefs (``ref.future()``, ``await ref``).
FUTURE_THREADS = 4


class ObjectAPI:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self._futures_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._futures_lock = threading.Lock()

    # -- put --------------------------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling put on an ObjectRef is not allowed")
        return self.put_serialized(ser.serialize(value, "value passed to put"))

    def put_serialized(self, s: ser.Serialized) -> ObjectRef:
        core = self.core
        oid = put_object_id()
        e = core.refs.create_owned(oid)
        if s.contained:
            e.contained = list(s.contained)
        if s.size < CONFIG.inline_threshold:
            e.state, e.kind, e.data, e.size = READY, KIND_INLINE, s.inline(), s.size
        else:
            self.store_write(oid, s, core.address)
            e.state, e.kind, e.data, e.size = READY, KIND_STORE, core.agent_address, s.size
        if ev.ENABLED:
            ev.object_created(oid, s.size, e.data if e.kind == KIND_STORE else None)
        return ObjectRef(oid, core.address)

    def store_write(self, oid: bytes, s: ser.Serialized, owner: str) -> int:
        """Write a value into this node's store: allocate, copy once, seal. Returns its size."""
        core = self.core
        _, total = s.store_layout()
        offset = core.agent_call("store_create", oid, total, owner)
        if offset < 0:  # this node already holds it, byte for byte (same task, same inputs)
            return total
        assert core.store is not None
        s.write_to(core.store, offset)
        core.store.commit(offset)
        core.agent.notify("store_seal", oid)
        return total

    # -- get --------------------------------------------------------------------------------
    def get(self, refs: Any, timeout: float | None = None) -> Any:
        if isinstance(refs, ObjectRef):
            return self.get([refs], timeout)[0]
        if not isinstance(refs, (list, tuple)):
            raise TypeError(
                f"get() expects an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}"
            )
        for r in refs:
            if not isinstance(r, ObjectRef):
                raise TypeError(f"get() expects ObjectRefs, got {type(r).__name__}")
        deadline = None if timeout is None else time.monotonic() + timeout
        entries = [self.entry_of(r) for r in refs]
        pending = [e for e in entries if e.state == PENDING]
        # As Ray: the first error among the objects is raised as soon as it is known, without
        # waiting for the others.
        if pending and not self.wait_entries(pending, len(pending), timeout, stop_on_error=True):
            raise self._timed_out(timeout, sum(e.state == PENDING for e in pending), len(refs))
        for e in entries:
            if e.state == FAILED:
                self.value_of(e)  # raises its error
        return [self.value_of(e, deadline) for e in entries]

    @staticmethod
    def _timed_out(timeout: float | None, waiting: int, total: int) -> exc.GetTimeoutError:
        return exc.GetTimeoutError(
            f"get timed out after {timeout} s: {waiting} of {total} objects not ready"
        )

    def entry_of(self, ref: ObjectRef) -> Entry:
        """The reference table's entry for ``ref``; one is made for a ref that this core
        never counted (one created before it existed, e.g. kept across a re-init)."""
        core = self.core
        oid = ref.binary()
        e = core.refs.get(oid)
        if e is None:  # a ref created before this core existed (e.g. after re-init)
            ref.adopt(core)
            e = core.refs.get(oid)
            assert e is not None
        return e

    def wait_entries(
        self,
        entries: Sequence[Entry],
        num: int,
        timeout: float | None,
        stop_on_error: bool = False,
    ) -> bool:
        """Block until ``num`` of ``entries`` are no longer pending (or, with
        ``stop_on_error``, until one of them failed); False on timeout."""
        ev = threading.Event()
        lock = threading.Lock()
        remaining = [num]

        def waiter(e: Entry) -> None:
            with lock:
                remaining[0] -= 1
                if remaining[0] <= 0 or (stop_on_error and e.state == FAILED):
                    ev.set()

        core = self.core
        registered = []
        for e in entries:
            if core.refs.add_waiter(e, waiter):
                registered.append(e)
                if not e.owned:
                    core.fetch(e)
            else:
                waiter(e)
        if not ev.is_set() and not self.block_on(ev, timeout):
            for e in registered:
                core.refs.remove_waiter(e, waiter)
            return False
        return True

    def block_on(self, ev: threading.Event, timeout: float | None) -> bool:
        """Wait for ``ev`` (False on timeout); a task waiting lends its CPU to the node
        meanwhile (``Executor.notify_blocked``), so the work it waits for finds one."""
        core = self.core
        executor = core.executor
        blocked = executor is not None and core.current_task is not None
        if blocked:
            executor.notify_blocked()
        try:
            return wait_interruptibly(ev, timeout)
        finally:
            if blocked:
                executor.notify_unblocked()

    def value_of(self, e: Entry, deadline: float | None = None, _recover: bool = True) -> Any:
        """The value of a settled entry (raising its error); ``deadline`` bounds the reads
        from the store, which may pull the object from another node or rebuild it."""
        if e.state == FAILED:
            err = pickle.loads(e.data) if e.data else exc.ObjectLostError(e.oid.hex(), "freed")
            if isinstance(err, exc.TaskError):
                raise err.as_instanceof_cause()
            raise err
        core = self.core
        refs = core.refs
        outer = refs.start_collecting()  # refs inside the value: we are to borrow them
        try:
            if e.kind == KIND_INLINE:
                return ser.deserialize_inline(e.data)
            return core.store_read(e.oid, e.data, deadline)
        except exc.ObjectLostError:
            if not _recover:
                raise
        finally:
            fresh = refs.stop_collecting(outer)
            if fresh:
                core.ownership.held_until_registered(fresh, e)
        # Every copy is gone: the owner rebuilds it from lineage (a borrower asks the owner).
        if e.owned:
            core.call_soon(core.submitter.reconstruct, e)
        else:
            core.call_soon(core.owned.refetch, e)
        self._wait_changed(e, deadline)
        return self.value_of(e, deadline, _recover=False)

    def _wait_changed(self, e: Entry, deadline: float | None) -> None:
        """Wait until ``e`` went pending and then resolved again (or failed)."""
        done = threading.Event()
        core = self.core

        def check() -> None:
            if e.state == PENDING and core.refs.add_waiter(e, lambda _: done.set()):
                return
            done.set()

        core.call_soon(check)  # runs after the reconstruct/refetch queued before it
        if not done.wait(time_left(deadline)):
            raise exc.GetTimeoutError("get timed out while the object was being rebuilt")

    # -- wait -------------------------------------------------------------------------------
    def wait(
        self, refs: Sequence[Any], num_returns: int, timeout: float | None
    ) -> tuple[list[Any], list[Any]]:
        """ObjectRefs (and ObjectRefGenerators) ready, and not; ``refs`` is checked here."""
        # Ray's rules, in Ray's order and words.
        if isinstance(refs, ObjectRef):
            raise TypeError(f"wait() expected a list of ObjectRef, got a single ObjectRef {refs}")
        if not isinstance(refs, list):
            raise TypeError(f"wait() expected a list of ObjectRef, got {type(refs)}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
        streams = False
        for r in refs:
            if not isinstance(r, ObjectRef):
                if not isinstance(r, ObjectRefGenerator):
                    raise TypeError(
                        f"wait() expected a list of ObjectRef, got list containing {type(r)}"
                    )
                streams = True
        if not refs:
            return [], []
        if len(set(refs)) != len(refs):
            raise ValueError("Wait requires a list of unique ObjectRefs.")
        if num_returns <= 0:
            raise ValueError(f"Invalid number of objects to return {num_returns}.")
        if num_returns > len(refs):
            raise ValueError(
                "num_returns cannot be greater than the number of ObjectRefs provided to wait."
            )
        if streams:
            return self._wait_streams(refs, num_returns, timeout)
        entries = [self.entry_of(r) for r in refs]
        pending = [e for e in entries if e.state == PENDING]
        need = num_returns - (len(entries) - len(pending))
        if need > 0:
            self.wait_entries(pending, need, timeout)
        ready: list[ObjectRef] = []
        not_ready: list[ObjectRef] = []
        for r, e in zip(refs, entries, strict=False):
            if e.state != PENDING and len(ready) < num_returns:
                ready.append(r)
            else:
                not_ready.append(r)
        return ready, not_ready

    def _wait_streams(
        self, waitables: Sequence[Any], num_returns: int, timeout: float | None
    ) -> tuple[list[Any], list[Any]]:
        """``wait`` over ObjectRefs and ObjectRefGenerators, as Ray's: a generator is ready
        when ``next()`` would not block (its next value is here, or its task has ended)."""
        core = self.core
        deadline = None if timeout is None else time.monotonic() + timeout
        entries = {i: self.entry_of(r) for i, r in enumerate(waitables) if type(r) is ObjectRef}

        def ready() -> list[bool]:
            return [
                entries[i].state != PENDING if i in entries else r.next_ready()
                for i, r in enumerate(waitables)
            ]

        while sum(now := ready()) < num_returns:
            changed = threading.Event()

            def waiter(_: Entry, wake: Any = changed.set) -> None:
                wake()

            registered = []
            for i, r in enumerate(waitables):
                e = entries.get(i)
                if e is None:
                    r.on_next_ready(changed.set)
                elif core.refs.add_waiter(e, waiter):
                    registered.append(e)
                    if not e.owned:
                        core.fetch(e)
                else:
                    changed.set()
            woke = self.block_on(changed, time_left(deadline))
            for e in registered:
                core.refs.remove_waiter(e, waiter)
            if not woke:
                now = ready()
                break
        out: tuple[list[Any], list[Any]] = ([], [])
        for r, is_ready in zip(waitables, now, strict=True):
            out[0 if is_ready and len(out[0]) < num_returns else 1].append(r)
        return out

    # -- futures ----------------------------------------------------------------------------
    def _resolver(self) -> concurrent.futures.ThreadPoolExecutor:
        """The few threads that turn ready objects into values for futures (``await ref``):
        a thread each would be thousands in a burst."""
        pool = self._futures_pool
        if pool is None:
            with self._futures_lock:
                if self._futures_pool is None:
                    self._futures_pool = concurrent.futures.ThreadPoolExecutor(
                        FUTURE_THREADS, thread_name_prefix="nbcluster-future"
                    )
                pool = self._futures_pool
        return pool

    def future_of(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        e = self.entry_of(ref)

        def done(_: Entry) -> None:
            try:
                fut.set_result(self.value_of(e))
            except BaseException as err:
                fut.set_exception(err)
            finally:
                del holder[:]  # the ref lived until the value was taken

        holder = [ref]  # keep the object alive while only this future refers to it

        def in_thread(e2: Entry) -> None:  # (reading the value may block: not on the loop)
            try:
                self._resolver().submit(done, e2)
            except RuntimeError:  # shut down meanwhile
                fut.set_exception(exc.ClusterConnectionError("nbcluster was shut down"))

        if self.core.refs.add_waiter(e, in_thread):
            if not e.owned:
                self.core.fetch(e)
        else:
            done(e)
        return fut

    def stop_futures(self) -> None:
        """The process left the cluster: the futures' threads go (without waiting)."""
        if self._futures_pool is not None:
            self._futures_pool.shutdown(wait=False)


#: How long the main thread sleeps at a time in a wait with no near deadline.
_SIGNAL_CHECK_S = 0.2


def wait_interruptibly(ev: threading.Event, timeout: float | None) -> bool:
    """``ev.wait(timeout)`` that a signal interrupts on the main thread.

    Python runs signal handlers (KeyboardInterrupt: Ctrl-C, a kernel's interrupt, a task's
    cancel) on the main thread, but the kernel may deliver the signal to another thread (the
    I/O thread in ``select``, say): a main thread blocked in one long lock wait then never
    notices it. Waiting in short slices returns to the interpreter, which runs the handler.
    Other threads cannot take signals, so they wait in one piece."""
    if threading.current_thread() is not threading.main_thread():
        return ev.wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _SIGNAL_CHECK_S
        if deadline is not None:
            left = max(min(left, deadline - time.monotonic()), 0.0)
        if ev.wait(left):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False

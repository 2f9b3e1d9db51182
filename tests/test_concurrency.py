"""A notebook must never hang: concurrent use of the API from many threads, errors among
pending work, nested work from actors, and the garbage collector running finalizers at any
moment."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for_file, wait_until

import nbcluster as nc
from nbcluster import exceptions as exc

#: Bound on every ``get`` here: a call that never answers fails the test, not the run.
T = 30


@nc.remote
class Named:
    def __init__(self):
        self.pid = os.getpid()

    def who(self):
        return self.pid


@nc.remote
def slow_until(gate, timeout=60.0):
    return wait_for_file(gate, timeout)


@nc.remote
def fails(message):
    raise ValueError(message)


@nc.remote
def double(x):
    return 2 * x


@nc.remote
class Nester:
    """An actor whose methods submit tasks and wait for them."""

    def run_nested(self, n):
        return sum(nc.get([double.remote(i) for i in range(n)], timeout=T))

    def run_one(self, x):
        return nc.get(double.remote(x), timeout=T)


@nc.remote(max_concurrency=4)
class ThreadedNester:
    def run_nested(self, n):
        return sum(nc.get([double.remote(i) for i in range(n)], timeout=T))


@nc.remote
class AsyncNester:
    async def run_nested(self, n):
        return sum(await asyncio_gather([double.remote(i) for i in range(n)]))

    async def run_blocking(self, x):
        return nc.get(double.remote(x), timeout=T)


async def asyncio_gather(refs):
    import asyncio

    return await asyncio.gather(*refs)


# ------------------------------------------------------------------ named actors, threads


def test_get_if_exists_from_many_threads_creates_one_actor(cluster):
    for round_ in range(5):  # each round races afresh
        name = f"shared-{round_}-{time.monotonic_ns()}"
        handles: list = []
        errors: list = []
        lock = threading.Lock()
        start = threading.Barrier(10)

        def worker(name=name, handles=handles, errors=errors, lock=lock, start=start) -> None:
            start.wait(T)
            try:
                for _ in range(10):
                    h = Named.options(name=name, get_if_exists=True).remote()
                    with lock:
                        handles.append(h)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(T)
        assert not any(t.is_alive() for t in threads), "a creating thread hung"
        assert not errors, errors
        assert len(handles) == 100
        assert len({h._actor_id for h in handles}) == 1, "more than one actor was created"
        pids = nc.get([h.who.remote() for h in handles], timeout=T)
        assert len(set(pids)) == 1
        # Any one handle keeps the actor alive, whichever thread made it.
        last = handles.pop()
        del handles[:]
        gc.collect()
        assert nc.get(last.who.remote(), timeout=T) == pids[0]
        del last
        gc.collect()
        # The handles are all gone: the actor goes too, and its name is free again.
        wait_until(lambda name=name: name not in nc.util.list_named_actors(), T)


# -------------------------------------------------------------- errors among pending work


def test_get_raises_an_error_at_once_while_other_refs_are_pending(cluster, gate):
    pending = slow_until.remote(str(gate))
    failing = fails.remote("boom")
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        nc.get([pending, failing], timeout=T)
    assert time.monotonic() - t0 < T / 3, "get waited for the pending task"
    gate.touch()
    assert nc.get(pending, timeout=T) is True


def test_get_raises_a_dead_actors_error_at_once(cluster, gate):
    pending = slow_until.remote(str(gate))
    a = Named.remote()
    nc.get(a.who.remote(), timeout=T)
    nc.kill(a)
    t0 = time.monotonic()
    with pytest.raises(exc.ActorDiedError):
        nc.get([pending, a.who.remote()], timeout=T)
    assert time.monotonic() - t0 < T / 3, "get waited for the pending task"
    gate.touch()


# ------------------------------------------------------------------ nested work in actors


@pytest.mark.parametrize("cls", [Nester, ThreadedNester], ids=["sync", "threaded"])
def test_actor_methods_submit_and_get_tasks(cluster, cls):
    a = cls.remote()
    assert nc.get(a.run_nested.remote(20), timeout=T) == sum(2 * i for i in range(20))


def test_async_actor_methods_await_and_get_tasks(cluster):
    a = AsyncNester.remote()
    assert nc.get(a.run_nested.remote(20), timeout=T) == sum(2 * i for i in range(20))
    assert nc.get(a.run_blocking.remote(4), timeout=T) == 8


def test_actors_holding_every_cpu_still_run_their_nested_tasks(cluster):
    """Two one-CPU actors fill a two-CPU node; their nested tasks still find a CPU, because
    an actor blocked in ``get`` lends its CPU back as a task does."""
    actors = [Nester.options(num_cpus=1).remote() for _ in range(2)]
    got = nc.get([a.run_one.remote(i) for i, a in enumerate(actors)], timeout=T)
    assert got == [0, 2]


# -------------------------------------------------------------------- finalizers and GC


class _Cycle:
    """A reference cycle holding ObjectRefs: only the cyclic garbage collector frees it,
    on whatever thread happens to allocate when it runs."""

    def __init__(self, refs):
        self.refs = refs
        self.me = self


def test_finalizers_never_deadlock_with_the_runtime(cluster):
    """The cyclic GC runs ``ObjectRef.__del__`` (and pin finalizers of zero-copy arrays) on
    any thread, including the I/O thread while it holds the reference table's lock."""
    import numpy as np

    big = nc.put(np.zeros(300_000))
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            refs = [nc.put(i) for i in range(50)]
            _Cycle(refs)
            _Cycle([nc.get(big)])  # a zero-copy view pinned in the store
            del refs

    old = gc.get_threshold()
    gc.set_threshold(50, 1, 1)  # collect very often, on every thread
    threads = [threading.Thread(target=churn, daemon=True) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            refs = [double.remote(i) for i in range(200)]
            _Cycle(refs)
            assert len(nc.get(refs, timeout=T)) == 200
    finally:
        stop.set()
        gc.set_threshold(*old)
        for t in threads:
            t.join(T)
    assert not any(t.is_alive() for t in threads), "a thread deadlocked in a finalizer"
    assert nc.get(double.remote(21), timeout=T) == 42


# ------------------------------------------------------- a blocked task lends its CPU back


@nc.remote
def noop(i):
    return i


@nc.remote
def get_one_by_one(rounds, directory):
    """Gets many nested results one at a time, while results arrive in batches (the GIL
    switching as often as it can), so some gets block only for an instant; after each
    round it waits for the test to look at the node's resources."""
    import sys

    sys.setswitchinterval(1e-6)
    for r in range(rounds):
        refs = [noop.remote(i) for i in range(300)]
        for ref in refs:
            nc.get(ref, timeout=T)
        Path(directory, f"done-{r}").touch()
        if not wait_for_file(str(Path(directory, f"go-{r}")), T):
            return False
    return True


def test_a_task_that_blocks_briefly_in_get_never_leaves_its_cpu_lent(cluster, tmp_path):
    """Each instant of blocking lends the CPU and takes it back; the two notifications must
    reach the node in that order, or the node thinks the running task still lends its CPU
    and runs one task too many."""
    rounds = 8
    ref = get_one_by_one.remote(rounds, str(tmp_path))
    for r in range(rounds):
        wait_until((tmp_path / f"done-{r}").exists, T)
        # The task holds one of the two CPUs (its nested leases go back when idle).
        wait_until(
            lambda: nc.available_resources().get("CPU", 0.0) == 1.0,
            5,
            message=lambda r=r: f"round {r}: available {nc.available_resources()}",
        )
        (tmp_path / f"go-{r}").touch()
    assert nc.get(ref, timeout=T) is True


# ------------------------------------------------- a backlog that comes back finds a lease


@nc.remote(max_calls=1)
def one_call_worker(i):
    return i


def test_tasks_given_back_while_lease_requests_are_withdrawn_still_run(cluster):
    """Each worker runs one call and goes (``max_calls=1``), giving back the tasks queued on
    it: the backlog empties and fills again while the owner withdraws lease requests it no
    longer needed. A task must never wait for a lease nobody asks for."""
    for r in range(30):
        refs = [one_call_worker.remote(4 * r + i) for i in range(4)]
        assert nc.get(refs, timeout=T) == [4 * r + i for i in range(4)]


# ------------------------------------------------------------- signals on another thread


class _Interrupted(Exception):
    pass


def test_a_signal_that_lands_on_another_thread_still_interrupts_a_get(cluster, gate):
    """Ctrl-C (or a kernel's interrupt, or a task's cancel) is a process signal, and the
    kernel may hand it to any thread; Python runs its handler on the main thread only. A
    main thread blocked in ``get`` must still notice it: here every signal is aimed at the
    I/O thread on purpose."""
    import signal

    pending = slow_until.remote(str(gate))
    io = next(t for t in threading.enumerate() if t.name == "nbcluster-io")
    assert io.ident is not None
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not fired:
            fired.append(signum)
            raise _Interrupted

    stop = threading.Event()

    def pester() -> None:  # until the main thread has taken one
        while not stop.wait(0.1) and not fired:
            signal.pthread_kill(io.ident, signal.SIGINT)  # type: ignore[arg-type]

    previous = signal.signal(signal.SIGINT, handler)
    sender = threading.Thread(target=pester, daemon=True)
    try:
        sender.start()
        t0 = time.monotonic()
        with pytest.raises(_Interrupted):
            nc.get(pending, timeout=T)
        assert time.monotonic() - t0 < T / 3
    finally:
        stop.set()
        sender.join()
        signal.signal(signal.SIGINT, previous)
        gate.touch()
    assert nc.get(pending, timeout=T)

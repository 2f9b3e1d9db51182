"""The parts of Ray's core API a Ray program uses, behaving as in Ray: calls checked against
signatures, option errors, futures and ``await``, actors' built-in methods, concurrency
groups, ``exit_actor`` and atexit, runtime context, ``max_calls``, ``wait`` rules, and clear
errors for oversized functions and exceptions that cannot travel."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import file_barrier, read_report, start_driver, wait_until

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.actor import exit_actor

T = 30


@nc.remote
def add(a, b):
    return a + b


@nc.remote
def anything(*args, **kwargs):
    return len(args) + len(kwargs)


@nc.remote
class Account:
    RATE = 0.05

    def __init__(self, owner, balance=0):
        self.owner, self.balance = owner, balance

    def deposit(self, amount, *, note=""):
        self.balance += amount
        return self.balance

    @staticmethod
    def fee(amount):
        return amount * 0.01

    @classmethod
    def kind(cls):
        return cls.__name__


# ------------------------------------------------------------- calls checked at .remote()


def test_a_wrong_call_fails_at_remote_in_the_caller(cluster):
    with pytest.raises(TypeError, match="too many positional arguments"):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        add.remote(1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        add.remote(1, 2, c=3)
    assert nc.get(add.remote(1, b=2), timeout=T) == 3
    assert nc.get(anything.remote(1, 2, x=3), timeout=T) == 3


def test_actor_constructors_and_methods_are_checked_too(cluster):
    with pytest.raises(TypeError, match=r"Account\.__init__\(\) missing"):
        Account.remote()
    a = Account.remote("ann", balance=10)
    with pytest.raises(TypeError, match=r"Account\.deposit\(\) missing"):
        a.deposit.remote()
    with pytest.raises(TypeError, match="too many positional arguments"):
        a.deposit.remote(1, "note")
    assert nc.get(a.deposit.remote(5, note="pay"), timeout=T) == 15
    name = f"acct-{time.monotonic_ns()}"
    named = Account.options(name=name).remote("bob")
    found = nc.get_actor(name)
    assert found == named
    with pytest.raises(TypeError, match="unexpected keyword argument 'amt'"):
        found.deposit.remote(1, amt=1)  # a handle found by name checks calls as well


# ------------------------------------------------------------------------- bad options


def test_bad_decorator_and_options_arguments_are_refused_with_rays_errors(cluster):
    with pytest.raises(TypeError, match="The @remote decorator must be applied"):
        nc.remote(1)
    with pytest.raises(TypeError, match="The type of keyword 'num_cpus'"):
        nc.remote(num_cpus="two")(lambda: 0)
    with pytest.raises(ValueError, match="num_returns"):
        nc.remote(num_returns=-1)(lambda: 0)
    with pytest.raises(ValueError, match="max_retries"):
        nc.remote(max_retries=-2)(lambda: 0)
    with pytest.raises(ValueError, match="Invalid option keyword num_cpu "):
        nc.remote(num_cpu=1)(lambda: 0)
    with pytest.raises(ValueError, match="retry_exceptions"):
        add.options(retry_exceptions=[str])
    with pytest.raises(ValueError, match="'num_cpus' and 'num_gpus' keyword"):
        add.options(resources={"CPU": 1})
    with pytest.raises(ValueError, match="max_calls"):
        add.options(max_calls=2)
    with pytest.raises(ValueError, match="lifetime"):
        Account.options(lifetime="forever")
    with pytest.raises(ValueError, match="get_if_exists"):
        Account.options(get_if_exists=True)
    with pytest.raises(ValueError, match="concurrency_groups"):
        Account.options(concurrency_groups={"io": 2})
    with pytest.raises(TypeError, match="max_concurrency"):
        Account.options(max_concurrency="many")


# ------------------------------------------------------------------- futures and await


@nc.remote
def slow(seconds, value):
    time.sleep(seconds)  # the work whose duration the test relies on, not synchronisation
    return value


def test_refs_are_awaitable_in_a_drivers_event_loop(cluster):
    async def main():
        a = await add.remote(1, 2)
        b = await asyncio.wait_for(add.remote(3, 4), T)
        c, d = await asyncio.gather(add.remote(1, 1).as_future(), add.remote(2, 2))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow.remote(5, "late"), 0.2)
        return a, b, c, d

    assert asyncio.run(main()) == (3, 7, 2, 4)
    assert add.remote(5, 5).future().result(timeout=T) == 10


@nc.remote
class Waiter:
    async def combine(self, refs):
        first = await refs[0]
        second = await asyncio.wait_for(refs[1], T)
        third = await refs[2].as_future()
        try:
            await asyncio.wait_for(slow.remote(5, "late"), 0.2)
            late = "no timeout"
        except asyncio.TimeoutError:
            late = "timed out"
        return first + second + third, late


def test_refs_are_awaitable_in_async_actors(cluster):
    w = Waiter.remote()
    got = nc.get(w.combine.remote([add.remote(1, 1), add.remote(2, 2), add.remote(3, 3)]),
                 timeout=T)  # fmt: skip
    assert got == (12, "timed out")


# ------------------------------------------------------------------ built-in actor methods


def test_ready_call_and_terminate(cluster, tmp_path):
    a = Account.remote("ann", 7)
    assert nc.get(a.__ray_ready__.remote(), timeout=T) is True
    got = nc.get(a.__ray_call__.remote(lambda self, x: self.balance * x, 3), timeout=T)
    assert got == 21
    marker = tmp_path / "atexit"
    nc.get(a.__ray_call__.remote(_register_atexit, str(marker)), timeout=T)
    before = a.deposit.remote(1)
    a.__ray_terminate__.remote()
    assert nc.get(before, timeout=T) == 8  # a call sent before it finishes first
    with pytest.raises(exc.ActorDiedError):
        nc.get(a.deposit.remote(1), timeout=T)
    wait_until(marker.exists, T, message="the actor's atexit handler did not run")


def _register_atexit(actor, path):
    import atexit

    atexit.register(lambda: Path(path).write_text("ran"))
    return True


# ---------------------------------------------------------------------- concurrency groups


@nc.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    def __init__(self, barrier):
        self.barrier = barrier

    @nc.method(concurrency_group="io")
    def fetch(self):
        return file_barrier(self.barrier, 2, timeout=10)

    @nc.method(concurrency_group="compute")
    def crunch(self, started, gate):
        Path(started).touch()
        deadline = time.monotonic() + T
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "crunched"

    def plain(self):
        return threading.current_thread().name


def test_concurrency_groups_run_their_calls_on_their_own_threads(cluster, tmp_path):
    g = Grouped.remote(str(tmp_path / "barrier"))
    started, gate = tmp_path / "started", tmp_path / "gate"
    busy = g.crunch.remote(str(started), str(gate))  # holds the one "compute" thread
    wait_until(started.exists, T)
    # Two "io" calls meet at a barrier while "compute" is busy: they run side by side.
    assert nc.get([g.fetch.remote(), g.fetch.remote()], timeout=T) == [True, True]
    assert "actor" in nc.get(g.plain.remote(), timeout=T)  # the default group is free too
    queued = g.plain.options(concurrency_group="compute").remote()
    assert nc.wait([queued], timeout=0.5)[0] == []  # waits for the busy "compute" thread
    gate.touch()
    assert nc.get([busy, queued], timeout=T)[0] == "crunched"


# -------------------------------------------------------------------- exit_actor, atexit


@nc.remote
class Quitter:
    def __init__(self, quit_now=False, marker=None):
        if marker:
            import atexit

            atexit.register(lambda: Path(marker).write_text("ran"))
        if quit_now:
            exit_actor()

    def ping(self):
        return "pong"

    def quit_but_catch(self):
        try:
            exit_actor()
        except BaseException:
            return "caught"
        return "not raised"


@nc.remote
class AsyncQuitter:
    async def ping(self):
        return "pong"

    async def quit(self):
        exit_actor()


def test_exit_actor_in_a_constructor_leaves_the_actor_dead(cluster):
    q = Quitter.remote(quit_now=True)
    with pytest.raises(exc.ActorDiedError):
        nc.get(q.ping.remote(), timeout=T)


def test_exit_actor_ends_the_actor_even_when_the_call_catches_it(cluster, tmp_path):
    marker = tmp_path / "atexit"
    q = Quitter.remote(marker=str(marker))
    assert nc.get(q.quit_but_catch.remote(), timeout=T) == "caught"
    with pytest.raises(exc.ActorDiedError):
        nc.get(q.ping.remote(), timeout=T)
    wait_until(marker.exists, T, message="atexit handlers did not run at exit_actor()")


def test_exit_actor_in_an_async_actor(cluster):
    q = AsyncQuitter.remote()
    assert nc.get(q.ping.remote(), timeout=T) == "pong"
    nc.get(q.quit.remote(), timeout=T)
    with pytest.raises(exc.ActorDiedError):
        nc.get(q.ping.remote(), timeout=T)


def test_atexit_runs_when_the_last_handle_goes(cluster, tmp_path):
    marker = tmp_path / "atexit"
    q = Quitter.remote(marker=str(marker))
    assert nc.get(q.ping.remote(), timeout=T) == "pong"
    del q
    gc.collect()
    wait_until(marker.exists, T, message="atexit handlers did not run when the handle went")


SHUTDOWN_DRIVER = r"""
import json, sys
from pathlib import Path
import nbcluster as nc

nc.init(num_cpus=1)

@nc.remote
class Keeper:
    def __init__(self, marker):
        import atexit
        atexit.register(lambda: Path(marker).write_text("ran"))
    def ping(self):
        return "pong"

k = Keeper.options(lifetime="detached").remote(sys.argv[1])
print("READY " + json.dumps(nc.get(k.ping.remote(), timeout=60)), flush=True)
nc.shutdown()
print("DONE {}", flush=True)
"""


def test_atexit_runs_in_actors_when_the_driver_shuts_down(tmp_path):
    marker = tmp_path / "atexit"
    proc = start_driver(SHUTDOWN_DRIVER, str(marker))
    try:
        assert read_report(proc, "READY", timeout=60) == "pong"
        read_report(proc, "DONE", timeout=60)
        assert marker.exists(), "the actor's atexit handler did not run at shutdown()"
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


# ------------------------------------------------------------- actor class attributes


def test_actor_class_attributes_read_as_on_the_class(cluster):
    assert Account.RATE == 0.05
    assert Account.fee(100) == 1.0
    assert Account.kind() == "Account"
    with pytest.raises(TypeError, match="Inheriting from actor classes"):

        class Savings(Account):  # type: ignore[misc, valid-type]
            pass

    with pytest.raises(AttributeError):
        _ = Account.no_such_thing


# ---------------------------------------------------------------------- runtime context


@nc.remote
def context():
    ctx = nc.get_runtime_context()
    return ctx.get_job_id(), ctx.get_task_id(), ctx.get_node_id(), ctx.get_actor_id()


@nc.remote
class Self:
    def context(self):
        ctx = nc.get_runtime_context()
        return ctx.get_job_id(), ctx.get_actor_id(), ctx.current_actor

    def ping(self):
        return "pong"


def test_runtime_context_names_job_task_node_and_actor(cluster):
    driver = nc.get_runtime_context()
    job, task, node, actor = nc.get(context.remote(), timeout=T)
    assert job == driver.get_job_id() and job
    assert task and len(task) == 32
    assert node == driver.get_node_id()
    assert actor is None
    s = Self.remote()
    job2, actor_id, me = nc.get(s.context.remote(), timeout=T)
    assert job2 == job
    assert actor_id == s.actor_id
    assert nc.get(me.ping.remote(), timeout=T) == "pong"  # a handle to itself works anywhere


# -------------------------------------------------------------------------------- max_calls


@nc.remote(max_calls=1)
def fresh_pid():
    return os.getpid()


def test_max_calls_gives_each_call_a_fresh_worker(cluster):
    pids = [nc.get(fresh_pid.remote(), timeout=T) for _ in range(3)]
    assert len(set(pids)) == 3, pids
    assert len(nc.get([fresh_pid.remote() for _ in range(4)], timeout=T)) == 4  # many at once


# ---------------------------------------------------------------------- dynamic returns


@nc.remote(num_returns="dynamic")
def squares(n):
    for i in range(n):
        yield np.full(20_000, i * i)  # some in the store, some not: sizes differ


def test_num_returns_dynamic_gives_a_ref_per_value_yielded(cluster):
    gen = nc.get(squares.remote(4), timeout=T)
    assert isinstance(gen, nc.DynamicObjectRefGenerator) and len(gen) == 4
    assert [int(nc.get(r, timeout=T)[0]) for r in gen] == [0, 1, 4, 9]
    with pytest.raises(ValueError, match="remote functions only"):
        Account.remote("x").deposit.options(num_returns="dynamic")


# ------------------------------------------------------------------------------------ wait


def test_wait_follows_rays_rules(cluster):
    assert nc.wait([]) == ([], [])
    r = add.remote(1, 1)
    with pytest.raises(TypeError):
        nc.wait(r)
    with pytest.raises(TypeError):
        nc.wait((r,))
    with pytest.raises(ValueError, match="unique"):
        nc.wait([r, r])
    with pytest.raises(ValueError, match="num_returns cannot be greater"):
        nc.wait([r], num_returns=2)
    with pytest.raises(ValueError, match="Invalid number of objects to return 0"):
        nc.wait([r], num_returns=0)
    with pytest.raises(ValueError, match="nonnegative"):
        nc.wait([r], timeout=-1)
    pending = slow.remote(3, "x")
    t0 = time.monotonic()
    assert nc.wait([pending], timeout=0) == ([], [pending])
    assert time.monotonic() - t0 < 1


# ------------------------------------------------------------------- clear errors


def test_a_function_capturing_a_huge_value_is_refused_with_its_size(cluster, monkeypatch):
    from nbcluster.runtime.config import CONFIG

    monkeypatch.setattr(CONFIG, "function_size_error_bytes", 4 << 20)
    huge = np.ones(1 << 20)  # 8 MiB, captured by accident

    @nc.remote
    def uses_it():
        return float(huge.sum())

    with pytest.raises(ValueError, match=r"is too large \(8\.\d MiB"):
        uses_it.remote()

    @nc.remote
    class Holds:
        def total(self):
            return float(huge.sum())

    with pytest.raises(ValueError, match="actor class Holds is too large"):
        Holds.remote()


class NeedsTwo(Exception):
    def __init__(self, a, b):  # unpickling calls NeedsTwo(message): fails
        super().__init__(f"{a}/{b}")


class HoldsALock(Exception):
    def __init__(self):
        super().__init__("locked")
        self.lock = threading.Lock()  # cannot be pickled


@nc.remote
def raise_needs_two():
    raise NeedsTwo(1, 2)


@nc.remote
def raise_holds_a_lock():
    raise HoldsALock()


def test_exceptions_that_cannot_travel_are_named_in_a_clear_error(cluster):
    with pytest.raises(exc.TaskError, match="NeedsTwo") as info:
        nc.get(raise_needs_two.remote(), timeout=T)
    assert "raise NeedsTwo(1, 2)" in str(info.value)  # the traceback is there too
    with pytest.raises(exc.TaskError, match="HoldsALock") as info:
        nc.get(raise_holds_a_lock.remote(), timeout=T)
    assert "could not be sent back" in str(info.value.cause)


def test_init_takes_rays_keywords_and_refuses_unknown_ones(no_cluster: None) -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): no_such_option"):
        nc.init(num_cpus=1, no_such_option=True)
    assert not nc.is_initialized()  # refused before anything started
    job = nc.job_config.JobConfig(runtime_env={"env_vars": {"FROM_JOB": "yes"}},
                                  ray_namespace="from-job")  # fmt: skip
    nc.init(num_cpus=1, job_config=job, logging_level=20, log_to_driver=True, local_mode=False)
    try:
        seen = nc.remote(lambda: os.environ.get("FROM_JOB")).remote()
        assert nc.get(seen, timeout=30) == "yes"
        assert nc.get_runtime_context().namespace == "from-job"
    finally:
        nc.shutdown()
    with pytest.raises(ValueError, match="default_actor_lifetime='detached' is not supported"):
        nc.job_config.JobConfig(default_actor_lifetime="detached")


@nc.remote
def held_until(gate):
    deadline = time.monotonic() + 60
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_futures_of_unfinished_objects_fail_when_the_cluster_shuts_down(
    no_cluster: None, gate: Path
) -> None:
    """A future (or an await) of an object that can never be computed now must end."""
    nc.init(num_cpus=1)
    ref = held_until.remote(str(gate))
    fut = ref.future()
    loop = asyncio.new_event_loop()
    try:
        awaited = loop.run_until_complete(_future_in(loop, ref))
        nc.shutdown()
        with pytest.raises(exc.ClusterConnectionError, match="shut down before the object"):
            fut.result(timeout=10)
        with pytest.raises(exc.ClusterConnectionError, match="shut down before the object"):
            loop.run_until_complete(asyncio.wait_for(awaited, 10))
    finally:
        loop.close()


async def _future_in(loop: asyncio.AbstractEventLoop, ref: nc.ObjectRef) -> asyncio.Future:
    return ref.as_future()

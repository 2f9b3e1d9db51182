"""Actors as a user meets them: stateful workers with handles that travel, named lookups,
concurrency, restarts after crashes, and clear errors when things go wrong."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import weakref
from pathlib import Path

import psutil
import pytest
from conftest import (
    DEFAULT_CPUS,
    file_barrier,
    is_gone,
    read_report,
    start_driver,
    wait_for_file,
    wait_until,
    write_pid,
)

import nbcluster as nc
import nbcluster.actor
from nbcluster import exceptions as exc

#: Bound on every ``get`` in this module: a call that never answers fails the test, not the run.
T = 30


@nc.remote
class Counter:
    """A counter that also reports which process hosts it and how often it was built."""

    def __init__(self, start=0, marker_dir=None):
        self.value = start
        self.log = []
        if marker_dir is not None:  # count constructor runs across restarts
            Path(marker_dir).mkdir(parents=True, exist_ok=True)
            write_pid(str(Path(marker_dir) / f"init-{time.monotonic_ns()}"))

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def pid(self):
        return os.getpid()

    def pid_when(self, _ready):
        """The host's pid, once ``_ready`` (an argument still being computed) is."""
        return os.getpid()

    def record(self, tag, i):
        self.log.append((tag, i))
        return i

    def get_log(self):
        return list(self.log)

    def fail(self, message):
        raise ValueError(message)

    def wait_gate(self, started, gate):
        """Announce the call began, then hold the actor until the test opens the gate."""
        Path(started).touch()
        return wait_for_file(gate, T)

    def divmod(self, a, b):
        return divmod(a, b)

    @nc.method(num_returns=2)
    def split(self, a, b):
        return a // b, a % b

    def quit(self):
        nbcluster.actor.exit_actor()

    def call_other(self, other, by):
        """Another actor's handle arrived as an argument: use it."""
        return nc.get(other.incr.remote(by), timeout=T)

    def keep(self, handle):
        self.kept = handle
        return True

    def use_kept(self, by):
        return nc.get(self.kept.incr.remote(by), timeout=T)


@nc.remote
class Broken:
    def __init__(self, divisor):
        self.ratio = 1 / divisor  # raises for divisor=0

    def ratio_(self):
        return self.ratio


@nc.remote
def call_incr(handle, by):
    return nc.get(handle.incr.remote(by), timeout=T)


@nc.remote
def lookup_and_incr(name, namespace=None):
    return nc.get(nc.get_actor(name, namespace=namespace).incr.remote(), timeout=T)


@nc.remote
def make_counter(start):
    return Counter.remote(start)


@nc.remote
def find_actor(name):
    return {"found": nc.get_actor(name)}


@nc.remote
def opened(gate):
    """Returns once the test creates ``gate``: an argument that is ready when the test says."""
    return wait_for_file(gate, T)


@nc.remote
def record_many(handle, tag, n, meet_dir):
    # Blocking in get hands this worker's queued tasks back to their owner, so the other
    # caller is not stuck behind this one on the same worker; then both meet and submit.
    nc.get(handle.get.remote(), timeout=T)
    met = file_barrier(meet_dir, 2)
    refs = [handle.record.remote(tag, i) for i in range(n)]
    return met, nc.get(refs, timeout=T)


# ------------------------------------------------------------------------------- basics


def test_actor_keeps_state_between_calls(cluster):
    c = Counter.remote(10)
    assert nc.get(c.incr.remote(), timeout=T) == 11
    assert nc.get(c.incr.remote(5), timeout=T) == 16
    assert nc.get(c.get.remote(), timeout=T) == 16
    assert isinstance(c, nc.ActorHandle)
    assert isinstance(Counter, nbcluster.actor.ActorClass)


def test_an_actor_takes_an_object_ref_that_is_already_ready(cluster):
    start = nc.put(41)  # ready at once: creation must not wait for it
    c = Counter.remote(start)
    assert nc.get(c.incr.remote(), timeout=T) == 42


def test_each_actor_is_its_own_worker_process(cluster):
    a, b = Counter.remote(), Counter.remote()
    pa, pb = nc.get([a.pid.remote(), b.pid.remote()], timeout=T)
    assert pa != pb
    assert os.getpid() not in (pa, pb)
    assert nc.get(a.pid.remote(), timeout=T) == pa  # every call runs in that same process


def test_calls_go_straight_from_caller_to_actor_process(cluster):
    c = Counter.remote()
    actor_pid = nc.get(c.pid.remote(), timeout=T)
    mine = {conn.laddr for conn in psutil.Process().net_connections("tcp") if conn.raddr}
    theirs = {conn.raddr for conn in psutil.Process(actor_pid).net_connections("tcp")}
    assert mine & theirs, "the driver holds no connection to the actor's own process"


def test_actors_cannot_be_called_directly(cluster):
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()
    c = Counter.remote()
    with pytest.raises(TypeError, match=r"\.incr\.remote\(\)"):
        c.incr()
    with pytest.raises(AttributeError, match="no_such_method"):
        c.no_such_method.remote()


def test_public_actor_module_is_rays(cluster):
    from nbcluster.runtime.api import actor as runtime_actor
    from nbcluster.runtime.execute import actor_host

    assert nbcluster.actor.exit_actor is actor_host.exit_actor
    assert nbcluster.actor.ActorHandle is nc.ActorHandle is runtime_actor.ActorHandle
    assert nbcluster.actor.method is nc.method
    with pytest.raises(TypeError, match="inside an actor"):
        nbcluster.actor.exit_actor()


# ----------------------------------------------------------------------------- ordering


def test_calls_from_one_caller_run_in_submission_order(cluster):
    c = Counter.remote()
    n = 2000
    refs = [c.record.remote("driver", i) for i in range(n)]
    assert nc.get(refs, timeout=T) == list(range(n))
    assert nc.get(c.get_log.remote(), timeout=T) == [("driver", i) for i in range(n)]


def test_calls_from_two_concurrent_callers_each_keep_their_order(cluster, tmp_path):
    c = Counter.remote()
    n = 500
    a = record_many.remote(c, "a", n, str(tmp_path / "meet"))
    b = record_many.remote(c, "b", n, str(tmp_path / "meet"))
    assert nc.get([a, b], timeout=T) == [(True, list(range(n)))] * 2
    log = nc.get(c.get_log.remote(), timeout=T)
    assert len(log) == 2 * n
    for tag in ("a", "b"):
        assert [i for t, i in log if t == tag] == list(range(n))


# ------------------------------------------------------------------------- num_returns


def test_num_returns_via_method_options_and_decorator(cluster):
    c = Counter.remote()
    q, r = c.divmod.options(num_returns=2).remote(17, 5)
    assert nc.get([q, r], timeout=T) == [3, 2]
    q, r = c.split.remote(17, 5)  # @nc.method(num_returns=2)
    assert nc.get(q, timeout=T) == 3
    assert nc.get(r, timeout=T) == 2
    whole = c.split.options(num_returns=1).remote(17, 5)
    assert tuple(nc.get(whole, timeout=T)) == (3, 2)


# -------------------------------------------------------------------- handles are values


def test_handle_passed_to_a_task(cluster):
    c = Counter.remote()
    assert nc.get(call_incr.remote(c, 3), timeout=T) == 3
    assert nc.get(c.get.remote(), timeout=T) == 3


def test_handle_passed_to_and_kept_by_another_actor(cluster):
    target, caller = Counter.remote(), Counter.remote()
    assert nc.get(caller.call_other.remote(target, 2), timeout=T) == 2
    assert nc.get(caller.keep.remote(target), timeout=T)
    assert nc.get(caller.use_kept.remote(5), timeout=T) == 7


def test_handle_returned_from_a_task(cluster):
    c = Counter.options(name="found-by-a-task").remote(100)
    found = nc.get(find_actor.remote("found-by-a-task"), timeout=T)["found"]
    assert isinstance(found, nc.ActorHandle)
    assert found == c
    assert nc.get(found.incr.remote(), timeout=T) == 101


def test_actor_created_inside_a_task_and_returned(cluster):
    c = nc.get(make_counter.remote(100), timeout=T)
    assert isinstance(c, nc.ActorHandle)
    assert nc.get(c.incr.remote(), timeout=T) == 101


def test_handle_stored_in_a_put_object_keeps_the_actor_alive(cluster):
    c = Counter.remote()
    pid = nc.get(c.pid.remote(), timeout=T)
    box = nc.put({"counter": c})
    del c
    gc.collect()
    again = nc.get(box, timeout=T)["counter"]
    assert nc.get(again.incr.remote(), timeout=T) == 1
    assert not is_gone(pid)
    del again, box
    gc.collect()
    wait_until(lambda: is_gone(pid), timeout=15, message="actor outlived its last handle")


def test_a_call_keeps_its_actor_until_done_when_the_handle_goes_at_once(cluster, tmp_path):
    """``A.remote().m.remote(x)``: the only handle is gone before the call could even be sent
    (its argument is not ready). As in Ray, the call keeps the actor; then the actor ends."""
    gate = tmp_path / "gate"
    call = Counter.remote().pid_when.remote(opened.remote(str(gate)))
    gc.collect()
    nc.nodes()  # a round trip to the head, after whatever dropping the handle told it
    gate.touch()
    pid = nc.get(call, timeout=T)
    wait_until(lambda: is_gone(pid), timeout=15, message="actor outlived its last call")


# ---------------------------------------------------------------------- names, lifetime


def test_named_actor_is_found_from_another_task(cluster):
    c = Counter.options(name="shared-counter").remote()
    assert nc.get(lookup_and_incr.remote("shared-counter"), timeout=T) == 1
    assert nc.get(nc.get_actor("shared-counter").incr.remote(), timeout=T) == 2
    assert nc.get(c.get.remote(), timeout=T) == 2
    with pytest.raises(ValueError, match="no-such-actor"):
        nc.get_actor("no-such-actor")


def test_names_are_unique_per_namespace(cluster):
    red = Counter.options(name="tally", namespace="red").remote(0)
    blue = Counter.options(name="tally", namespace="blue").remote(100)
    assert nc.get(lookup_and_incr.remote("tally", "red"), timeout=T) == 1
    assert nc.get(lookup_and_incr.remote("tally", "blue"), timeout=T) == 101
    assert nc.get_actor("tally", namespace="red") == red
    with pytest.raises(ValueError, match="tally"):
        nc.get_actor("tally")  # the default namespace has no "tally"
    del blue


def test_a_taken_name_is_refused_with_value_error(cluster):
    first = Counter.options(name="taken", namespace="red").remote()
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="taken", namespace="red").remote()
    del first


def test_get_if_exists_returns_the_running_actor(cluster):
    first = Counter.options(name="singleton", get_if_exists=True).remote(7)
    nc.get(first.incr.remote(), timeout=T)
    second = Counter.options(name="singleton", get_if_exists=True).remote(0)
    assert second == first
    assert nc.get(second.get.remote(), timeout=T) == 8  # not re-constructed


def test_actor_is_destroyed_when_its_last_handle_is_gone(cluster):
    c = Counter.remote()
    pid = nc.get(c.pid.remote(), timeout=T)
    del c
    gc.collect()
    wait_until(lambda: is_gone(pid), timeout=15, message=f"actor process {pid} still running")


def test_a_handle_is_freed_without_the_cycle_collector():
    """A handle's cached methods do not point back at it: dropping the last name of a
    handle frees it at once, as plain reference counting frees anything acyclic."""
    c = Counter.remote()
    c.incr  # noqa: B018 - cache a method
    c.get.options(name="x")
    gone = weakref.ref(c)
    gc.disable()
    try:
        del c
        assert gone() is None, "the handle waits for the cycle collector"
    finally:
        gc.enable()


def test_an_actor_ends_when_its_last_handle_goes_after_a_task_used_it(cluster):
    """A task that got the handle and called it must not keep the actor alive once it is
    done: an idle worker's garbage collector may never run."""
    c = Counter.remote()
    pid = nc.get(c.pid.remote(), timeout=T)
    assert nc.get(call_incr.remote(c, 1), timeout=T) == 1
    del c
    gc.collect()
    wait_until(lambda: is_gone(pid), timeout=15, message=f"actor process {pid} still running")


def test_detached_named_actor_survives_its_handle(cluster):
    detached = Counter.options(name="keeper", lifetime="detached").remote(41)
    control = Counter.remote()
    kept_pid, control_pid = nc.get([detached.pid.remote(), control.pid.remote()], timeout=T)
    del detached, control
    gc.collect()
    # The control actor going proves the dropped handles have been processed.
    wait_until(lambda: is_gone(control_pid), timeout=15)
    again = nc.get_actor("keeper")
    assert nc.get(again.incr.remote(), timeout=T) == 42
    assert not is_gone(kept_pid)
    nc.kill(again)
    wait_until(lambda: is_gone(kept_pid), timeout=15)


CREATE_DETACHED = """
import sys
import nbcluster as nc

nc.init(sys.argv[1], token=sys.argv[2])


@nc.remote
class Keeper:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


k = Keeper.options(name="outlives-its-driver", lifetime="detached").remote()
# One write: read_report may see a line before print()'s separate writes complete it.
sys.stdout.write(f"CREATED {nc.get(k.incr.remote(), timeout=30)}\\n")
"""


def test_detached_actor_outlives_the_driver_that_created_it(cluster):
    info = nc.init()  # already connected: the running cluster's address and session
    token = (Path(info["session_dir"]) / "token").read_text().strip()
    proc = start_driver(CREATE_DETACHED, info["address"], token)
    try:
        assert read_report(proc, "CREATED", timeout=T) == 1
        assert proc.wait(timeout=T) == 0
    finally:
        proc.kill()
    keeper = nc.get_actor("outlives-its-driver")
    assert nc.get(keeper.incr.remote(), timeout=T) == 2
    assert nc.get(lookup_and_incr.remote("outlives-its-driver"), timeout=T) == 3
    nc.kill(keeper)


# -------------------------------------------------------------------------- concurrency


@nc.remote(max_concurrency=4)
class Meeting:
    """Threaded: every call waits at a barrier that opens only when four run at once."""

    def __init__(self, parties):
        self.barrier = threading.Barrier(parties, timeout=T)

    def meet(self):
        return self.barrier.wait(), threading.get_ident()


def test_threaded_actor_runs_calls_concurrently(cluster):
    m = Meeting.remote(4)
    results = nc.get([m.meet.remote() for _ in range(4)], timeout=T)
    assert sorted(i for i, _ in results) == [0, 1, 2, 3]
    assert len({thread for _, thread in results}) == 4


@nc.remote
class Gate:
    """Async: calls park on an event that a later call sets."""

    def __init__(self):
        self.opened = asyncio.Event()
        self.parked = 0

    async def wait(self):
        self.parked += 1
        await self.opened.wait()
        return self.parked

    async def open(self):
        self.opened.set()

    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    async def await_ref(self, boxed):
        """``boxed`` is ``[ref]``: a nested ref is passed as a ref, so this awaits it."""
        return await boxed[0]

    async def await_actor(self, other):
        ref = other.incr.remote(10)
        return await ref

    async def await_temporary(self, other):
        return await other.incr.remote(10)


def test_async_actor_runs_calls_concurrently(cluster):
    g = Gate.remote()
    parked = [g.wait.remote() for _ in range(50)]
    nc.get(g.open.remote(), timeout=T)  # runs while all fifty wait
    assert nc.get(parked, timeout=T) == [50] * 50


def test_async_actor_overlaps_sleeping_calls(cluster):
    g = Gate.remote()
    nc.get(g.nap.remote(0), timeout=T)  # created and warm
    start = time.monotonic()
    assert nc.get([g.nap.remote(0.2) for _ in range(100)], timeout=T) == [0.2] * 100
    assert time.monotonic() - start < 5  # one after another would take 20 s


def test_await_ref_inside_async_method(cluster):
    g = Gate.remote()
    c = Counter.remote()
    assert nc.get(g.await_ref.remote([nc.put("boxed value")]), timeout=T) == "boxed value"
    assert nc.get(g.await_ref.remote([call_incr.remote(c, 4)]), timeout=T) == 4
    assert nc.get(g.await_actor.remote(c), timeout=T) == 14


def test_await_a_temporary_ref_inside_async_method(cluster):
    g = Gate.remote()
    c = Counter.remote()
    assert nc.get(g.await_temporary.remote(c), timeout=3) == 10


# ---------------------------------------------------------------------- failures, errors


def test_method_exception_reaches_caller_and_actor_keeps_running(cluster):
    c = Counter.remote()
    nc.get(c.incr.remote(5), timeout=T)
    with pytest.raises(ValueError, match="no good") as info:
        nc.get(c.fail.remote("no good"), timeout=T)
    assert isinstance(info.value, exc.TaskError)
    assert "Counter.fail" in str(info.value)
    assert nc.get(c.incr.remote(), timeout=T) == 6  # state intact


def test_constructor_exception_surfaces_at_first_call_with_traceback(cluster):
    b = Broken.remote(0)  # returns at once; the error is in the actor's process
    with pytest.raises(exc.ActorDiedError) as info:
        nc.get(b.ratio_.remote(), timeout=T)
    text = str(info.value)
    assert "Broken" in text
    assert "Traceback (most recent call last)" in text  # the remote one
    assert "in __init__" in text
    assert "ZeroDivisionError: division by zero" in text
    assert isinstance(info.value, exc.RayActorError)


def test_unpicklable_constructor_argument_fails_at_remote(cluster):
    with pytest.raises(TypeError, match="lock") as info:
        Counter.remote(threading.Lock())
    assert isinstance(info.value, exc.SerializationError)
    assert "Counter.__init__" in str(info.value)


def test_kill_fails_running_and_later_calls(cluster, tmp_path):
    c = Counter.remote()
    pid = nc.get(c.pid.remote(), timeout=T)
    started, gate = tmp_path / "started", tmp_path / "gate"
    running = c.wait_gate.remote(str(started), str(gate))
    wait_until(started.exists, timeout=T)
    queued = c.incr.remote()
    nc.kill(c)
    for ref in (running, queued, c.incr.remote()):
        with pytest.raises(exc.ActorDiedError):
            nc.get(ref, timeout=T)
    with pytest.raises(exc.RayActorError):
        nc.get(c.get.remote(), timeout=T)
    wait_until(lambda: is_gone(pid), timeout=15)


def test_kill_without_no_restart_restarts_the_actor(cluster):
    c = Counter.options(max_restarts=1, max_task_retries=1).remote(5)
    first = nc.get(c.pid.remote(), timeout=T)
    nc.get(c.incr.remote(), timeout=T)
    nc.kill(c, no_restart=False)
    wait_until(lambda: is_gone(first), timeout=15)
    assert nc.get(c.get.remote(), timeout=T) == 5  # constructor re-run
    assert nc.get(c.pid.remote(), timeout=T) != first
    with pytest.raises(TypeError, match="actor handle"):
        nc.kill("not a handle")


def test_actor_restarts_after_its_process_is_killed(cluster, tmp_path):
    inits = tmp_path / "inits"
    # max_task_retries: a call the caller sends before it notices the death is retried.
    c = Counter.options(max_restarts=1, max_task_retries=1).remote(0, str(inits))
    assert nc.get(c.incr.remote(), timeout=T) == 1
    first = nc.get(c.pid.remote(), timeout=T)
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: is_gone(first), timeout=15)
    # New calls wait for the restart; the constructor ran again, so the state is fresh.
    second = nc.get(c.pid.remote(), timeout=T)
    assert second != first
    assert nc.get(c.incr.remote(), timeout=T) == 1
    assert len(list(inits.iterdir())) == 2
    # No restarts left: the next death is final.
    os.kill(second, signal.SIGKILL)
    with pytest.raises(exc.ActorDiedError, match="max_restarts"):
        nc.get(c.incr.remote(), timeout=T)


def test_pending_call_is_retried_on_the_restarted_actor(cluster, tmp_path):
    c = Counter.options(max_restarts=1, max_task_retries=1).remote()
    first = nc.get(c.pid.remote(), timeout=T)
    started, gate = tmp_path / "started", tmp_path / "gate"
    running = c.wait_gate.remote(str(started), str(gate))
    queued = c.incr.remote()
    wait_until(started.exists, timeout=T)
    started.unlink()
    os.kill(first, signal.SIGKILL)
    wait_until(started.exists, timeout=T)  # the retry began on the new process
    gate.touch()
    assert nc.get(running, timeout=T) is True
    assert nc.get(queued, timeout=T) == 1
    assert nc.get(c.pid.remote(), timeout=T) != first


def test_running_call_fails_without_task_retries_but_actor_restarts(cluster, tmp_path):
    c = Counter.options(max_restarts=1).remote()
    first = nc.get(c.pid.remote(), timeout=T)
    started, gate = tmp_path / "started", tmp_path / "gate"
    running = c.wait_gate.remote(str(started), str(gate))
    wait_until(started.exists, timeout=T)
    os.kill(first, signal.SIGKILL)
    with pytest.raises(exc.ActorDiedError):
        nc.get(running, timeout=T)
    assert nc.get(c.incr.remote(), timeout=T) == 1
    assert nc.get(c.pid.remote(), timeout=T) != first


@nc.remote
class AsyncQuitter:
    async def quit(self):
        nbcluster.actor.exit_actor()

    async def pid(self):
        return os.getpid()


@nc.remote(max_concurrency=2)
class ThreadedQuitter:
    def quit(self):
        nbcluster.actor.exit_actor()

    def pid(self):
        return os.getpid()


@pytest.mark.parametrize("cls", [Counter, AsyncQuitter, ThreadedQuitter], ids=lambda c: c.__name__)
def test_exit_actor_ends_the_actor_for_good(cluster, cls):
    a = cls.options(max_restarts=3).remote()  # exit_actor is not a crash: no restart
    pid = nc.get(a.pid.remote(), timeout=T)
    assert nc.get(a.quit.remote(), timeout=T) is None
    if cls is ThreadedQuitter:
        # Runtime race: a threaded actor's other threads keep answering between the exiting
        # call's reply and os._exit, so only calls made after the process is gone must fail.
        wait_until(lambda: is_gone(pid), timeout=15)
    with pytest.raises(exc.ActorDiedError):
        nc.get(a.pid.remote(), timeout=T)
    wait_until(lambda: is_gone(pid), timeout=15)


# --------------------------------------------------------------------------- resources


@nc.remote
class Device:
    def visible(self):
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    def gpu_ids(self):
        return nc.get_gpu_ids()

    def pid(self):
        return os.getpid()


@nc.remote
def two_cpu_task():
    return "ran"


def test_actors_hold_no_cpu_while_running(cluster):
    actors = [Counter.remote() for _ in range(DEFAULT_CPUS + 2)]
    assert len(set(nc.get([a.pid.remote() for a in actors], timeout=T))) == len(actors)
    # Tasks still get every CPU.
    assert nc.get(two_cpu_task.options(num_cpus=DEFAULT_CPUS).remote(), timeout=T) == "ran"


def test_actor_with_cpus_holds_them_while_alive(cluster):
    big = Counter.options(num_cpus=DEFAULT_CPUS).remote()
    pid = nc.get(big.pid.remote(), timeout=T)
    blocked = two_cpu_task.options(num_cpus=1).remote()
    with pytest.raises(exc.GetTimeoutError):
        nc.get(blocked, timeout=0.5)
    del big
    gc.collect()
    wait_until(lambda: is_gone(pid), timeout=15)
    assert nc.get(blocked, timeout=T) == "ran"


def test_gpus_and_custom_resources_on_actors(make_cluster):
    make_cluster(num_cpus=DEFAULT_CPUS, num_gpus=2, resources={"widget": 1})
    a = Device.options(num_gpus=1).remote()
    b = Device.options(num_gpus=1).remote()
    seen = nc.get([a.visible.remote(), b.visible.remote()], timeout=T)
    assert sorted(seen) == ["0", "1"]
    # Both GPUs are held for the actors' lifetime: a third GPU actor waits.
    c = Device.options(num_gpus=1).remote()
    pending = c.visible.remote()
    with pytest.raises(exc.GetTimeoutError):
        nc.get(pending, timeout=0.5)
    freed = nc.get(a.visible.remote(), timeout=T)
    nc.kill(a)
    assert nc.get(pending, timeout=T) == freed
    # A custom resource is held the same way.
    w1 = Device.options(resources={"widget": 1}).remote()
    w1_pid = nc.get(w1.pid.remote(), timeout=T)
    w2 = Device.options(resources={"widget": 1}).remote()
    second = w2.pid.remote()
    with pytest.raises(exc.GetTimeoutError):
        nc.get(second, timeout=0.5)
    nc.kill(w1)
    assert nc.get(second, timeout=T) != w1_pid


def test_get_gpu_ids_inside_an_actor_method(make_cluster):
    make_cluster(num_cpus=DEFAULT_CPUS, num_gpus=1)
    a = Device.options(num_gpus=1).remote()
    assert nc.get(a.visible.remote(), timeout=T) == "0"
    assert nc.get(a.gpu_ids.remote(), timeout=T) == [0]


@nc.remote
def say(word):
    print(word)
    return os.getpid()


@nc.remote
class Relay:
    """Its calls submit tasks that print; each line must go home as its own call's output."""

    def first(self):
        return nc.get([say.options(scheduling_strategy="SPREAD").remote("from-first")
                       for _ in range(DEFAULT_CPUS)], timeout=30)  # fmt: skip

    def second(self):
        return nc.get([say.options(scheduling_strategy="SPREAD").remote("from-second")
                       for _ in range(DEFAULT_CPUS)], timeout=30)  # fmt: skip


def test_nested_output_goes_home_as_the_output_of_the_call_that_submitted_it(cluster, capfd):
    """The second call's tasks reuse the connections the first call's tasks opened; their
    output arrives there but belongs to the second call (under its cell, in a notebook)."""
    relay = Relay.remote()
    assert len(nc.get(relay.first.remote(), timeout=30)) == DEFAULT_CPUS
    assert len(nc.get(relay.second.remote(), timeout=30)) == DEFAULT_CPUS
    seen: list[str] = []

    def second_lines() -> list[str] | None:
        seen.extend(capfd.readouterr().out.splitlines())
        lines = [ln for ln in seen if ln.endswith("from-second")]
        return lines if len(lines) == DEFAULT_CPUS else None

    lines = wait_until(second_lines, 30, message=lambda: "\n".join(seen))
    assert all(ln.startswith("(Relay.second pid=") for ln in lines), lines

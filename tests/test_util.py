"""``nbcluster.util``: spreading work over a pool of actors, and a queue shared by tasks."""

from __future__ import annotations

import gc
import os
import pickle
import queue as stdlib_queue

import pytest
from conftest import wait_for_file, wait_until

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.util import ActorPool
from nbcluster.util.queue import Empty, Full, Queue

#: Bound on every blocking call in this module: a hang fails the test, not the run.
T = 30


@nc.remote
class Worker:
    def double(self, v):
        return 2 * v

    def double_after(self, v, gate):
        """Hold the actor until the test opens ``gate`` (a path; None for no wait)."""
        if gate is not None:
            wait_for_file(gate, T)
        return 2 * v

    def pid(self):
        return os.getpid()

    def fail_on(self, v, bad):
        if v == bad:
            raise ValueError(f"cannot take {v}")
        return v

    @nc.method(num_returns=2)
    def both(self, v):
        return v, -v


def double(actor, v):
    return actor.double.remote(v)


# ----------------------------------------------------------------------------- ActorPool


def test_pool_is_reachable_from_the_package():
    import nbcluster

    assert nbcluster.util.ActorPool is ActorPool
    assert nbcluster.util.queue.Queue is Queue
    assert issubclass(Empty, stdlib_queue.Empty)
    assert issubclass(Full, stdlib_queue.Full)


def test_map_returns_results_in_submission_order(cluster):
    pool = ActorPool([Worker.remote() for _ in range(3)])
    assert list(pool.map(double, range(20))) == [2 * v for v in range(20)]
    assert not pool.has_next()
    # The pool is reusable, and map_unordered gives every result once.
    assert sorted(pool.map_unordered(double, range(20))) == [2 * v for v in range(20)]


def test_map_spreads_work_over_every_actor(cluster, tmp_path):
    actors = [Worker.remote() for _ in range(3)]
    pool = ActorPool(actors)
    pids = set(pool.map(lambda a, _: a.pid.remote(), range(30)))
    assert pids == set(nc.get([a.pid.remote() for a in actors], timeout=T))


def test_map_unordered_yields_in_completion_order(cluster, tmp_path):
    gate = tmp_path / "gate"
    pool = ActorPool([Worker.remote(), Worker.remote()])
    # Value 1 is held at the gate; value 2 is not, so it comes first.
    results = pool.map_unordered(
        lambda a, v: a.double_after.remote(v, str(gate) if v == 1 else None), [1, 2]
    )
    assert next(results) == 4
    gate.touch()
    assert next(results) == 2
    assert list(results) == []


def test_get_next_waits_for_the_oldest_submission(cluster, tmp_path):
    gate = tmp_path / "gate"
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(lambda a, v: a.double_after.remote(v, str(gate)), 1)
    pool.submit(lambda a, v: a.double_after.remote(v, None), 2)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.2)  # the second result is ready, but it is not next
    gate.touch()
    assert pool.get_next(timeout=T) == 2
    assert pool.get_next(timeout=T) == 4
    assert not pool.has_next()
    with pytest.raises(StopIteration):
        pool.get_next()


def test_get_next_unordered_returns_whichever_is_ready(cluster, tmp_path):
    gate = tmp_path / "gate"
    pool = ActorPool([Worker.remote(), Worker.remote()])
    pool.submit(lambda a, v: a.double_after.remote(v, str(gate)), 1)
    pool.submit(lambda a, v: a.double_after.remote(v, None), 2)
    assert pool.get_next_unordered(timeout=T) == 4
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.2)
    gate.touch()
    assert pool.get_next_unordered(timeout=T) == 2
    with pytest.raises(StopIteration):
        pool.get_next_unordered()


def test_submit_queues_values_until_an_actor_is_free(cluster):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    assert pool.has_free()
    for v in range(5):
        pool.submit(double, v)
    assert not pool.has_free()
    assert pool.pop_idle() is None
    # Collecting a result frees its actor, which takes the next queued value.
    assert [pool.get_next(timeout=T) for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next()
    assert pool.has_free()


def test_pop_idle_and_push_change_the_pool(cluster):
    a, b = Worker.remote(), Worker.remote()
    pool = ActorPool([a])
    taken = pool.pop_idle()
    assert taken == a
    assert not pool.has_free()
    pool.submit(double, 21)  # no actor: queued
    assert pool.has_next() is False
    pool.push(b)  # the new actor takes the queued value at once
    assert pool.has_next()
    assert pool.get_next(timeout=T) == 42
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(b)


def test_ignored_timeout_frees_the_actor_and_moves_on(cluster, tmp_path):
    gate = tmp_path / "gate"
    pool = ActorPool([Worker.remote()])
    pool.submit(lambda a, v: a.double_after.remote(v, str(gate)), 1)
    pool.submit(lambda a, v: a.double_after.remote(v, None), 2)
    with pytest.raises(TimeoutError, match="ignored"):
        pool.get_next(timeout=0.2, ignore_if_timedout=True)
    gate.touch()  # the actor finishes the ignored call, then runs the queued one
    assert pool.get_next(timeout=T) == 4
    assert not pool.has_next()


def test_new_map_discards_results_still_owed(cluster, tmp_path):
    pool = ActorPool([Worker.remote()])
    pool.submit(double, 100)
    pool.submit(double, 200)
    assert list(pool.map(double, [1, 2])) == [2, 4]


def test_method_error_surfaces_and_pool_keeps_working(cluster):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    results = pool.map(lambda a, v: a.fail_on.remote(v, 2), [1, 2, 3])
    assert next(results) == 1
    with pytest.raises(ValueError, match="cannot take 2"):
        next(results)
    assert list(pool.map(double, [5, 6])) == [10, 12]


def test_multi_return_calls_in_a_pool(cluster):
    pool = ActorPool([Worker.remote(), Worker.remote()])
    assert list(pool.map(lambda a, v: a.both.remote(v), [1, 2, 3])) == [[1, -1], [2, -2], [3, -3]]
    assert sorted(pool.map_unordered(lambda a, v: a.both.remote(v), [1, 2])) == [[1, -1], [2, -2]]


# --------------------------------------------------------------------------------- Queue


@nc.remote
def produce(q, items):
    for item in items:
        q.put(item, timeout=T)
    return len(items)


@nc.remote
def consume(q, n):
    return [q.get(timeout=T) for _ in range(n)]


@nc.remote
def put_one(q, item):
    q.put(item, timeout=T)  # blocks while the queue is full
    return "put"


@nc.remote
class Consumer:
    """An async actor that awaits the queue instead of blocking a thread."""

    async def take(self, q, n):
        return [await q.get_async(timeout=T) for _ in range(n)]

    async def give(self, q, items):
        for item in items:
            await q.put_async(item, timeout=T)
        return len(items)


def test_queue_is_first_in_first_out(cluster):
    q = Queue()
    assert q.empty()
    for item in ("a", "b", {"c": 3}):
        q.put(item)
    assert (q.size(), q.qsize(), len(q)) == (3, 3, 3)
    assert not q.empty()
    assert not q.full()  # unbounded
    assert [q.get(), q.get(), q.get()] == ["a", "b", {"c": 3}]
    assert q.empty()


def test_bounded_queue_refuses_when_full(cluster):
    q = Queue(maxsize=2)
    q.put_nowait(1)
    q.put(2)
    assert q.full()
    with pytest.raises(Full):
        q.put_nowait(3)
    with pytest.raises(stdlib_queue.Full):  # Ray's Full is also the standard library's
        q.put(3, timeout=0.1)
    with pytest.raises(Full):
        q.put(3, block=False)
    assert [q.get_nowait(), q.get_nowait()] == [1, 2]
    with pytest.raises(Empty):
        q.get_nowait()
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.1)
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)


def test_batches_are_all_or_nothing(cluster):
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full):
        q.put_nowait_batch([3, 4])  # only one slot left: nothing is added
    assert q.size() == 2
    with pytest.raises(Empty):
        q.get_nowait_batch(3)  # only two items: nothing is taken
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)
    with pytest.raises(TypeError):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)


def test_blocked_get_wakes_when_an_item_arrives(cluster):
    q = Queue()
    waiting = consume.remote(q, 1)
    with pytest.raises(exc.GetTimeoutError):
        nc.get(waiting, timeout=0.2)  # nothing to take yet
    q.put("hello")
    assert nc.get(waiting, timeout=T) == ["hello"]


def test_blocked_put_wakes_when_a_slot_frees(cluster):
    q = Queue(maxsize=1)
    q.put("first")
    waiting = put_one.remote(q, "second")
    with pytest.raises(exc.GetTimeoutError):
        nc.get(waiting, timeout=0.2)  # no room yet
    assert q.get(timeout=T) == "first"
    assert nc.get(waiting, timeout=T) == "put"
    assert q.get(timeout=T) == "second"


def test_queue_connects_producer_and_consumer_tasks(cluster):
    q = Queue(maxsize=5)  # smaller than the stream: producers block and resume
    producers = [produce.remote(q, [(p, i) for i in range(20)]) for p in range(2)]
    got = nc.get(consume.remote(q, 40), timeout=T)
    assert nc.get(producers, timeout=T) == [20, 20]
    for p in range(2):
        assert [i for who, i in got if who == p] == list(range(20))  # FIFO per producer
    assert q.empty()


def test_async_actor_uses_the_queue_without_blocking(cluster):
    q = Queue()
    c = Consumer.remote()
    taking = c.take.remote(q, 3)
    assert nc.get(c.give.remote(q, ["x", "y", "z"]), timeout=T) == 3  # runs while take waits
    assert nc.get(taking, timeout=T) == ["x", "y", "z"]


def test_queue_pickles_as_its_actor_handle(cluster):
    q = Queue(maxsize=7)
    copy = pickle.loads(pickle.dumps(q))
    assert copy.actor == q.actor
    assert copy.maxsize == 7
    copy.put("shared")
    assert q.get(timeout=T) == "shared"
    assert nc.get(nc.put({"queue": q}), timeout=T)["queue"].actor == q.actor


def test_actor_options_name_the_backing_actor(cluster):
    q = Queue(actor_options={"name": "jobs", "namespace": "util-test", "num_cpus": 0})
    q.put("job-1")
    found = nc.get_actor("jobs", namespace="util-test")
    assert found == q.actor
    assert nc.get(found.qsize.remote(), timeout=T) == 1


@pytest.mark.parametrize("force", [False, True])
def test_shutdown_destroys_the_queue_everywhere(cluster, force):
    q = Queue()
    copy = pickle.loads(pickle.dumps(q))  # e.g. what a task holds
    blocked = consume.remote(copy, 1)
    with pytest.raises(exc.GetTimeoutError):
        nc.get(blocked, timeout=0.2)
    q.shutdown(force=force)
    with pytest.raises(exc.ActorDiedError):
        nc.get(blocked, timeout=T)  # a waiting consumer fails, it does not hang
    with pytest.raises(exc.ActorDiedError):
        copy.put_nowait("late")
    with pytest.raises(RuntimeError, match="shut down"):
        q.put("late")
    q.shutdown()  # a second shutdown is harmless


def test_queue_actor_goes_with_its_last_handle(cluster):
    q = Queue(actor_options={"name": "short-lived"})
    q.put(1)
    del q
    gc.collect()
    wait_until(lambda: _no_actor_named("short-lived"), timeout=15)


def _no_actor_named(name):
    try:
        nc.get_actor(name)
    except ValueError:
        return True
    return False

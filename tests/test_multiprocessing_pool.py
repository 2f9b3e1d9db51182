"""``nbcluster.util.multiprocessing.Pool``: ``multiprocessing.Pool`` code runs on the cluster
unchanged, on real processes (one actor each), as with Ray's ``ray.util.multiprocessing``."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time

import pytest
from conftest import is_gone, wait_until

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.util.multiprocessing import Pool

T = 30


def square(x):
    return x * x


def add(a, b):
    return a + b


def slow_identity(x):
    time.sleep(0.02 * (x % 4))  # finish out of order
    return x


def fails_on_three(x):
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def pid_of(_):
    return os.getpid()


_STATE = {}


def remember(value):
    _STATE["value"] = value


def recalled(_):
    return _STATE.get("value"), os.getpid()


def test_map_starmap_apply_in_order_on_real_processes(cluster):
    with Pool(processes=2) as pool:
        assert pool.map(square, range(50)) == [x * x for x in range(50)]
        assert pool.map(square, range(7), chunksize=3) == [x * x for x in range(7)]
        assert pool.map(square, []) == []
        assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert pool.apply(add, (2, 3)) == 5
        assert pool.apply(add, (), {"a": 1, "b": 1}) == 2
        pids = set(pool.map(pid_of, range(40), chunksize=1))
        assert len(pids) == 2 and os.getpid() not in pids
        r = pool.map_async(square, range(10))
        r.wait(T)
        assert r.ready() and r.successful() and r.get(T) == [x * x for x in range(10)]
        assert pool.starmap_async(add, [(1, 1)]).get(T) == [2]


def test_imap_keeps_order_and_imap_unordered_yields_everything(cluster):
    with Pool(processes=2) as pool:
        assert list(pool.imap(slow_identity, range(20))) == list(range(20))
        assert list(pool.imap(slow_identity, range(20), chunksize=3)) == list(range(20))
        got = list(pool.imap_unordered(slow_identity, range(20), chunksize=2))
        assert sorted(got) == list(range(20)) and len(got) == 20
        endless = pool.imap(square, itertools.count(), chunksize=3)  # read as results go
        assert [next(endless) for _ in range(10)] == [x * x for x in range(10)]


def test_close_finishes_the_work_imap_was_given(cluster):
    pool = Pool(processes=2)
    it = pool.imap(square, range(30))
    assert next(it) == 0
    pool.close()
    pool.join()
    assert list(it) == [x * x for x in range(1, 30)]


def test_the_initializer_runs_in_every_process(cluster):
    with Pool(processes=2, initializer=remember, initargs=("ready",)) as pool:
        seen = pool.map(recalled, range(20), chunksize=1)
    assert {value for value, _ in seen} == {"ready"}
    assert len({pid for _, pid in seen}) == 2


def test_maxtasksperchild_gives_fresh_processes(cluster):
    with Pool(processes=1, maxtasksperchild=2) as pool:
        pids = pool.map(pid_of, range(6), chunksize=1)
    assert len(set(pids)) == 3  # two chunks per process


def test_errors_propagate_as_multiprocessing_raises_them(cluster):
    with Pool(processes=2) as pool:
        with pytest.raises(KeyError, match="no 3") as info:
            pool.map(fails_on_three, range(6))
        assert "fails_on_three" in str(info.value.__cause__)  # the remote traceback
        with pytest.raises(KeyError):
            pool.apply(fails_on_three, (3,))
        r = pool.map_async(fails_on_three, range(6))
        r.wait(T)
        assert r.ready() and not r.successful()
        it = pool.imap(fails_on_three, range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError):
            next(it)
        assert list(it) == [4, 5]  # the iteration goes on after the failed item
        assert pool.map(square, [3]) == [9]  # the pool keeps working


def test_callbacks_and_error_callbacks(cluster):
    got, errors, done = [], [], threading.Event()
    with Pool(processes=2) as pool:
        pool.map_async(square, range(4), callback=got.append)
        r = pool.apply_async(fails_on_three, (3,), error_callback=errors.append)
        r.wait(T)
        pool.apply_async(square, (5,), callback=lambda v: done.set())
        assert done.wait(T)
        wait_until(lambda: got, T)
    assert got == [[0, 1, 4, 9]]
    assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_get_with_a_timeout_raises_multiprocessings_timeout_error(cluster):
    with Pool(processes=1) as pool:
        r = pool.apply_async(time.sleep, (2,))
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(timeout=0.05)
        with pytest.raises(TimeoutError):  # Ray raises the builtin one
            r.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            r.successful()


def test_close_join_and_terminate_leave_no_processes(cluster):
    pool = Pool(processes=2)
    pids = set(pool.map(pid_of, range(20), chunksize=1))
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    pool.join()
    wait_until(lambda: all(is_gone(p) for p in pids), T, message=lambda: f"left: {pids}")

    pool = Pool(processes=2)
    pids = set(pool.map(pid_of, range(20), chunksize=1))
    pending = pool.apply_async(time.sleep, (60,))
    pool.terminate()
    pool.join()
    wait_until(lambda: all(is_gone(p) for p in pids), T, message=lambda: f"left: {pids}")
    with pytest.raises(exc.ActorDiedError):  # its work was lost with its process
        pending.get(T)


def test_bad_arguments_are_refused(cluster):
    with pytest.raises(ValueError, match="at least 1"):
        Pool(processes=0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        Pool(processes=1, initializer=3)
    pool = Pool(processes=1)
    with pytest.raises(ValueError, match="close\\(\\) or terminate\\(\\) it first"):
        pool.join()
    pool.terminate()


def test_as_completed_and_map_unordered(cluster):
    @nc.remote
    def echo(x):
        time.sleep(0.01 * (5 - x))
        return x

    refs = [echo.remote(i) for i in range(6)]
    assert sorted(nc.util.as_completed(refs, chunk_size=2)) == list(range(6))
    got_refs = list(nc.util.as_completed(refs, chunk_size=4, yield_obj_refs=True))
    assert sorted(nc.get(got_refs, timeout=T)) == list(range(6))
    assert sorted(nc.util.map_unordered(echo, range(6), backpressure_size=2, chunk_size=1)) == [
        0, 1, 2, 3, 4, 5,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="chunk_size"):
        list(nc.util.as_completed(refs, chunk_size=0))


def test_get_node_ip_address_is_the_nodes(cluster):
    ips = {n["NodeManagerAddress"] for n in nc.nodes() if n["Alive"]}
    assert nc.util.get_node_ip_address() in ips
    assert nc.get(nc.remote(nc.util.get_node_ip_address).remote(), timeout=T) in ips


def test_results_still_waiting_at_shutdown_fail_and_leave_no_thread(make_cluster):
    make_cluster(num_cpus=1)
    pool = Pool(processes=1)
    errors = []
    r = pool.apply_async(time.sleep, (60,), error_callback=errors.append)
    nc.shutdown()
    with pytest.raises(exc.ClusterConnectionError, match="shut down before the result"):
        r.get(T)
    assert len(errors) == 1
    wait_until(lambda: "pool-results" not in {t.name for t in threading.enumerate()}, T)

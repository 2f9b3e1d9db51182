"""Streaming generators, as Ray's: a generator task returns an ObjectRefGenerator at once,
whose refs arrive one by one while the task still runs."""

from __future__ import annotations

import asyncio
import gc
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for_file, wait_until

import nbcluster as nc
from nbcluster.exceptions import TaskCancelledError, WorkerCrashedError
from nbcluster.runtime.ownership.object_ref import get_core
from nbcluster.util import state

T = 30
MiB = 1024 * 1024


@nc.remote
def count(n):
    yield from range(n)


@nc.remote
def one_then_gate(gate):
    """Yields 0, waits for the test to open the gate, then yields 1."""
    yield 0
    if not wait_for_file(gate, T):
        raise TimeoutError("the gate never opened")
    yield 1


@nc.remote
def fails_after(k):
    yield from range(k)
    raise ValueError(f"broke after {k}")


@nc.remote
def total(gen_fn, n):
    """Consumes a generator inside a task."""
    return sum(nc.get(r) for r in gen_fn.remote(n))


@nc.remote
def arrays(n, size):
    for i in range(n):
        yield np.full(size, i, dtype=np.uint8)


@nc.remote
def array_sum(a):
    return int(a.sum(dtype=np.uint64))


def test_a_generator_task_streams_its_values_in_order(cluster):
    g = count.remote(5)
    assert isinstance(g, nc.ObjectRefGenerator)
    assert [nc.get(r, timeout=T) for r in g] == [0, 1, 2, 3, 4]
    with pytest.raises(StopIteration):
        next(g)
    assert g.is_finished() and nc.get(g.completed(), timeout=T) is None
    # num_returns="streaming" says so explicitly; the values come the same way.
    g = count.options(num_returns="streaming").remote(3)
    assert [nc.get(next(g), timeout=T) for _ in range(3)] == [0, 1, 2]
    assert list(g) == []
    assert [nc.get(r, timeout=T) for r in count.remote(0)] == []


def test_a_value_arrives_while_the_task_still_runs(cluster, gate):
    g = one_then_gate.remote(str(gate))
    first = next(g)  # the task is held at the gate: only a streamed value can be here
    assert nc.get(first, timeout=T) == 0
    ready, _ = nc.wait([g.completed()], timeout=0)
    assert ready == [] and not g.next_ready(), "the task ended before the gate opened"
    # wait() takes generators too, as Ray's: ready when next() would not block.
    assert nc.wait([g], timeout=0) == ([], [g])
    gate.touch()
    assert nc.wait([g, first], num_returns=2, timeout=T) == ([g, first], [])
    assert [nc.get(r, timeout=T) for r in g] == [1]


def test_an_error_after_k_values_comes_after_them_then_the_stream_ends(cluster):
    refs = list(fails_after.remote(2))
    assert len(refs) == 3
    assert nc.get(refs[:2], timeout=T) == [0, 1]
    with pytest.raises(ValueError, match="broke after 2") as info:
        nc.get(refs[2], timeout=T)
    assert isinstance(info.value, nc.exceptions.TaskError)  # with the remote traceback
    g = fails_after.remote(0)
    with pytest.raises(ValueError, match="broke after 0"):
        nc.get(next(g), timeout=T)
    with pytest.raises(StopIteration):
        next(g)


def test_a_task_consumes_a_generator(cluster):
    assert nc.get(total.remote(count, 4), timeout=T) == 6


def test_large_values_go_through_the_store_and_refs_pass_on(cluster):
    g = arrays.remote(3, 4 * MiB)
    refs = list(g)
    # Each value is a stored object (read zero-copy), and its ref is an argument like any.
    first = nc.get(refs[0], timeout=T)
    assert first.shape == (4 * MiB,) and not first.flags.writeable
    assert nc.get([array_sum.remote(r) for r in refs], timeout=T) == [0, 4 * MiB, 8 * MiB]
    # The state API lists them, with where the task was submitted.
    wanted = {r.hex() for r in refs}

    def listed():
        return {o.object_id: o for o in state.list_objects() if o.object_id in wanted}

    wait_until(lambda: len(listed()) == 3, T, message=lambda: f"listed: {listed()}")
    assert all("test_generators.py" in o.call_site for o in listed().values())


@nc.remote
def yields_refs(n):
    """Yields refs inside values: the consumer borrows objects this worker owns."""
    for i in range(n):
        yield [nc.put(i * 10)]


def test_refs_inside_yielded_values_stay_alive(cluster):
    inner = [nc.get(r, timeout=T)[0] for r in yields_refs.remote(3)]
    gc.collect()
    assert nc.get(inner, timeout=T) == [0, 10, 20]


@nc.remote
class Streamer:
    def count(self, n):
        yield from range(n)

    def until_cancelled(self):
        """Yields 0, waits until the cancel has reached it, then would yield on and on."""
        yield 0
        ctx = nc.get_runtime_context()
        wait_until(ctx.is_canceled, T, message="the cancel never arrived")
        yield from range(1, 1000)


@nc.remote
class AsyncStreamer:
    async def count(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i * i

    async def until_cancelled(self):
        yield 0
        await asyncio.wait_for(asyncio.Event().wait(), T)  # only a cancel ends this early
        yield 1


def test_actor_generators_sync_and_async(cluster):
    s = Streamer.remote()
    assert [nc.get(r, timeout=T) for r in s.count.remote(3)] == [0, 1, 2]
    a = AsyncStreamer.remote()

    async def consume():
        got = [await r async for r in a.count.remote(4)]
        g = a.count.remote(1)
        got.append(await (await g.__anext__()))
        with pytest.raises(StopAsyncIteration):
            await g.__anext__()
        return got

    assert asyncio.run(consume()) == [0, 1, 4, 9, 0]


def left_of(task_id: bytes) -> list[str]:
    """What of a task's objects is left: in the driver's reference table, or in the store."""
    core = get_core()
    refs = [oid.hex() for oid in list(core.refs.entries) if oid.startswith(task_id)]
    stored = [o["oid"] for o in core.agent_call("store_objects", timeout=T)]
    return refs + [oid for oid in stored if oid.startswith(task_id.hex())]


@nc.remote
def arrays_behind_gate(gate):
    for i in range(2):
        yield np.full(8 * MiB, i, dtype=np.uint8)
    wait_for_file(gate, T)
    for i in range(2, 4):
        yield np.full(8 * MiB, i, dtype=np.uint8)


def test_an_abandoned_generator_leaks_nothing(cluster, gate):
    g = arrays_behind_gate.remote(str(gate))
    task_id = g.task_id()
    done = g.completed()
    assert int(nc.get(next(g), timeout=T)[0]) == 0
    wait_until(g.next_ready, T, message="the second value never arrived")
    del g  # one value taken (and dropped), one delivered and not taken, two to come
    gc.collect()
    gate.touch()  # the task runs on to its end, as in Ray; what it yields now is freed
    # Its end comes after its values, every one created in the store by then.
    assert nc.get(done, timeout=T) is None
    del done
    wait_until(lambda: not left_of(task_id), T, message=lambda: f"left: {left_of(task_id)}")


@nc.remote
def forever_after_one(gate):
    yield 0
    wait_for_file(gate, 120)  # only a cancel ends this wait early
    yield 1


def test_cancel_stops_a_generator(cluster, gate):
    g = forever_after_one.remote(str(gate))
    assert nc.get(next(g), timeout=T) == 0
    nc.cancel(g)
    with pytest.raises(TaskCancelledError):
        nc.get(next(g), timeout=T)
    with pytest.raises(StopIteration):
        next(g)
    # An actor's generator is not interrupted: it stops at its next value.
    s = Streamer.remote()
    g = s.until_cancelled.remote()
    assert nc.get(next(g), timeout=T) == 0
    nc.cancel(g)
    rest = list(g)
    assert len(rest) <= 2, "the actor's generator ran on after the cancel"
    with pytest.raises(TaskCancelledError):
        nc.get(rest[-1], timeout=T)
    # An async actor's generator is cancelled as its asyncio task.
    g = AsyncStreamer.remote().until_cancelled.remote()
    assert nc.get(next(g), timeout=T) == 0
    nc.cancel(g)
    with pytest.raises(TaskCancelledError):
        nc.get(next(g), timeout=T)
    assert list(g) == []


@nc.remote(max_retries=1)
def dies_once(gate, marker):
    yield 0
    yield 1
    wait_for_file(gate, T)
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker dies mid-stream
    yield 2
    yield 3


def test_a_retried_generator_skips_what_was_delivered(cluster, gate, tmp_path):
    g = dies_once.remote(str(gate), str(tmp_path / "died"))
    assert nc.get([next(g), next(g)], timeout=T) == [0, 1]
    gate.touch()
    assert [nc.get(r, timeout=T) for r in g] == [2, 3]
    # Without retries left, the worker's death is the stream's last item.
    gate2 = tmp_path / "gate2"
    g = dies_once.options(max_retries=0).remote(str(gate2), str(tmp_path / "died-again"))
    assert nc.get([next(g), next(g)], timeout=T) == [0, 1]
    gate2.touch()
    with pytest.raises(WorkerCrashedError):
        nc.get(next(g), timeout=T)
    assert list(g) == []


@nc.remote(retry_exceptions=True, max_retries=1)
def raises_once(marker):
    yield 0
    if not os.path.exists(marker):
        Path(marker).touch()
        raise RuntimeError("first attempt")
    yield 1


def test_retry_exceptions_resumes_after_the_delivered_values(cluster, tmp_path):
    assert [nc.get(r, timeout=T) for r in raises_once.remote(str(tmp_path / "m"))] == [0, 1]


@nc.remote(num_returns="dynamic")
def dynamic_squares(n):
    for i in range(n):
        yield i * i


@nc.remote
def plain():
    return 1


def test_options_and_misuse_are_refused_as_ray_does(cluster):
    # num_returns="dynamic" still returns one ref of a DynamicObjectRefGenerator.
    dyn = nc.get(dynamic_squares.remote(3), timeout=T)
    assert [nc.get(r, timeout=T) for r in dyn] == [0, 1, 4]
    with pytest.raises(ValueError, match="only accepts None, a non-negative integer, 'streaming'"):
        count.options(num_returns=-1)
    with pytest.raises(ValueError, match="can only be used with generator functions"):
        plain.options(num_returns="streaming")
    with pytest.raises(ValueError, match="can only be used with generator functions"):
        nc.method(num_returns="streaming")(lambda self: 1)
    assert nc.get(count.options(num_returns=2).remote(2), timeout=T) == [0, 1]
    g = count.remote(1)
    with pytest.raises(TypeError, match="cannot be passed"):
        pickle.dumps(g)
    with pytest.raises(TypeError):
        nc.get(g)
    list(g)

"""Objects: put and get, refs inside values, large arrays in shared memory, spilling, freeing."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
from conftest import wait_until

import nbcluster as nc
from nbcluster.util import state

MiB = 1024 * 1024


def random_bytes(n: int, seed: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(n), dtype=np.uint8)


@nc.remote
def echo(value):
    return value


@nc.remote
def array_facts(arr):
    """What a task sees of an array argument: is it writable, and what does it hold."""
    return bool(arr.flags.writeable), int(arr.sum(dtype=np.uint64)), arr.shape, str(arr.dtype)


@nc.remote
def make_array(n_bytes, seed):
    return random_bytes(n_bytes, seed).copy()


@nc.remote
def put_inside_task(value):
    """A worker owns an object it put, and hands out a ref to it inside a list."""
    return [nc.put(value)]


@nc.remote
def checksum(arr):
    return int(arr.sum(dtype=np.uint64))


VALUES = [
    None,
    0,
    -1.5,
    "text",
    b"\x00bytes\xff",
    [1, {"a": (2, 3)}, {4, 5}],
    {"nested": {"deeper": [None, True]}},
    "x" * 300_000,  # above the inline threshold
    bytes(range(256)) * 8_000,  # ~2 MB of bytes
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + str(len(repr(v))))
def test_put_get_roundtrip(cluster, value):
    ref = nc.put(value)
    assert isinstance(ref, nc.ObjectRef)
    assert nc.get(ref) == value


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + str(len(repr(v))))
def test_values_cross_to_a_worker_and_back(cluster, value):
    assert nc.get(echo.remote(value)) == value
    assert nc.get(echo.remote(nc.put(value))) == value


def test_refs_are_hashable_and_comparable(cluster):
    a = nc.put(1)
    b = nc.put(1)
    assert a == nc.get(nc.put([a]))[0]  # a ref equals its copy
    assert a != b
    assert len({a, b, a}) == 2
    assert {a: "x"}[a] == "x"


def test_refs_inside_a_put_value_stay_refs(cluster):
    inner = nc.put("inner value")
    outer = nc.put({"ref": inner, "list": [inner]})
    got = nc.get(outer)
    assert isinstance(got["ref"], nc.ObjectRef)
    assert nc.get(got["ref"]) == "inner value"
    assert nc.get(got["list"][0]) == "inner value"


def test_ref_owned_by_a_worker_reaches_the_driver(cluster):
    (small,) = nc.get(put_inside_task.remote("made in a worker"))
    assert isinstance(small, nc.ObjectRef)
    assert nc.get(small) == "made in a worker"

    (large,) = nc.get(put_inside_task.remote(np.arange(1_000_000)))
    assert np.array_equal(nc.get(large), np.arange(1_000_000))


def test_object_lives_while_a_ref_lives(cluster):
    ref = nc.put(np.arange(2_000_000))
    holder = [ref]
    del ref
    gc.collect()
    assert np.array_equal(nc.get(holder[0]), np.arange(2_000_000))
    assert nc.get(checksum.remote(holder[0])) == int(np.arange(2_000_000).sum())


# ------------------------------------------------------------------------- large arrays


def test_large_array_is_shared_read_only_and_cheap_to_get(cluster):
    original = random_bytes(200 * MiB, seed=1)
    ref = nc.put(original)

    t0 = time.perf_counter()
    got = nc.get(ref)
    elapsed = time.perf_counter() - t0

    assert isinstance(got, np.ndarray)
    assert got.flags.writeable is False
    assert got.dtype == np.uint8
    assert got.shape == original.shape
    assert np.array_equal(got, original)
    assert elapsed < 0.05, f"get of 200 MB took {elapsed * 1000:.0f} ms: it should map, not copy"
    with pytest.raises(ValueError):
        got[0] = 1


def test_get_time_does_not_grow_with_size(cluster):
    def get_seconds(n_bytes: int) -> float:
        ref = nc.put(np.zeros(n_bytes, dtype=np.uint8))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            arr = nc.get(ref)
            best = min(best, time.perf_counter() - t0)
            del arr
        return best

    small = get_seconds(2 * MiB)
    large = get_seconds(200 * MiB)
    # A copy would make the 100x larger array ~100x slower; a mapping costs about the same.
    assert large < 10 * small + 0.02, f"2 MB: {small * 1e3:.2f} ms, 200 MB: {large * 1e3:.2f} ms"


def test_large_array_from_a_task(cluster):
    ref = make_array.remote(50 * MiB, 7)
    got = nc.get(ref, timeout=60)
    assert got.flags.writeable is False
    assert np.array_equal(got, random_bytes(50 * MiB, 7))


def test_large_array_as_task_argument_is_read_only_in_the_task(cluster):
    original = random_bytes(20 * MiB, seed=3)
    writable, total, shape, dtype = nc.get(array_facts.remote(original))
    assert writable is False
    assert total == int(original.sum(dtype=np.uint64))
    assert shape == original.shape
    assert dtype == "uint8"


def test_driver_array_is_unchanged_and_still_writable_after_put(cluster):
    original = np.arange(5 * MiB, dtype=np.uint8)
    ref = nc.put(original)
    original[0] = 255  # the caller's own copy stays theirs
    assert nc.get(ref)[0] == 0


# ------------------------------------------------------------------- spilling and freeing


def test_objects_beyond_store_capacity_spill_and_come_back(make_cluster):
    make_cluster(num_cpus=2, object_store_memory=50 * MiB)
    refs = [nc.put(random_bytes(10 * MiB, seed=i)) for i in range(10)]  # 100 MB > 50 MB

    for order in (range(10), reversed(range(10)), range(10)):
        for i in order:
            got = nc.get(refs[i], timeout=60)
            assert np.array_equal(got, random_bytes(10 * MiB, seed=i)), f"object {i} corrupted"
            del got  # unpin, so it can be spilled again

    # Workers read spilled objects too.
    sums = nc.get([checksum.remote(r) for r in refs], timeout=60)
    assert sums == [int(random_bytes(10 * MiB, seed=i).sum(dtype=np.uint64)) for i in range(10)]


def store_used_bytes() -> int:
    """The node stores' used bytes, as ``nbcluster memory`` reports them."""
    return sum(node.object_store_used for node in state.memory_summary()["nodes"])


def listed_objects() -> set[str]:
    return {o.object_id for o in state.memory_summary()["objects"]}


def test_memory_is_freed_when_the_last_ref_goes(cluster):
    baseline = store_used_bytes()
    ref = nc.put(np.ones(100 * MiB, dtype=np.uint8))
    object_id = ref.hex()
    wait_until(
        lambda: store_used_bytes() >= baseline + 100 * MiB,
        10,
        message=lambda: f"store use {store_used_bytes()} after a 100 MiB put (was {baseline})",
    )
    assert object_id in listed_objects()

    del ref
    gc.collect()
    wait_until(lambda: object_id not in listed_objects(), 10)
    wait_until(
        lambda: store_used_bytes() <= baseline + MiB,
        10,
        message=lambda: f"store use {store_used_bytes()} after del (was {baseline})",
    )


def test_many_puts_and_frees_fit_a_small_store(make_cluster):
    """Freed objects give their room back: 40 x 10 MB through a 50 MB store, one at a time."""
    make_cluster(num_cpus=2, object_store_memory=50 * MiB)
    for i in range(40):
        ref = nc.put(np.full(10 * MiB, i % 256, dtype=np.uint8))
        got = nc.get(ref)
        assert got[0] == i % 256 and got[-1] == i % 256
        del got, ref


def test_an_object_larger_than_the_store_is_refused(make_cluster):
    make_cluster(num_cpus=2, object_store_memory=50 * MiB)
    with pytest.raises(nc.exceptions.ObjectStoreFullError) as info:
        nc.put(np.zeros(80 * MiB, dtype=np.uint8))
    assert isinstance(info.value, MemoryError)
    # The store is still usable for objects that fit.
    assert np.array_equal(nc.get(nc.put(np.ones(10 * MiB, dtype=np.uint8))), np.ones(10 * MiB))

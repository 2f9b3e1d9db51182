"""The workloads, written once against Ray's API (see :class:`frameworks.RayLike`).

Every workload warms up first, times with :func:`time.perf_counter`, repeats, and reports the
median of the repeats in the unit given by :mod:`benchmarks.catalog`. Task and actor bodies
live at module level so that every framework's workers can import them by reference.
"""

from __future__ import annotations

import importlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.frameworks import Session, Unsupported

MB = 1_000_000
NUM_TASKS = 10_000
NUM_SMALL_OBJECTS = 10_000
NUM_STREAMED = 10_000
CHAIN_LENGTH = 200


# --- bodies run by the workers ---------------------------------------------------------------


def noop() -> None:
    return None


def inc(x: int) -> int:
    return x + 1


def array_sum(a: Any) -> float:
    return float(a.sum())


def count_up(n: int) -> Any:
    """A generator task: the caller gets each value's ref as soon as it is yielded."""
    for i in range(n):  # noqa: UP028 (Ray's generator tasks send() into yield from)
        yield i


class Echo:
    def m(self) -> int:
        return 1


class AsyncEcho:
    async def m(self) -> int:
        return 1


def call_actors(module_name: str, actors: list[Any], calls: int) -> int:
    """A caller task for n_n_actor_calls: ``calls`` calls spread over ``actors``."""
    api: Any = importlib.import_module(module_name)
    refs = [actors[i % len(actors)].m.remote() for i in range(calls)]
    return len(api.get(refs))


# --- harness ---------------------------------------------------------------------------------


@dataclass
class Measurement:
    """The median figure of a workload and the per-repeat figures it came from."""

    value: float
    samples: list[float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """How hard to work: ``quick`` runs fewer repeats."""

    quick: bool
    num_cpus: int

    def reps(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def fit(
        self, count: int, warmup: Callable[[int], object], warmup_count: int, budget_s: float
    ) -> int:
        """Run ``warmup(warmup_count)``; return ``count``, or fewer if one repeat of ``count``
        would take longer than ``budget_s`` (1.5 times that in full runs). Only slow frameworks are
        trimmed, never below a tenth of ``count``; the figures are rates, so still comparable.
        """
        per_item = seconds(lambda: warmup(warmup_count)) / warmup_count
        budget_s = budget_s if self.quick else 1.5 * budget_s
        return max(count // 10, min(count, int(budget_s / per_item)))


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def repeat(fn: Callable[[], object], reps: int) -> list[float]:
    return [seconds(fn) for _ in range(reps)]


def measurement(samples: list[float], **extra: Any) -> Measurement:
    return Measurement(statistics.median(samples), samples, dict(extra))


def per_call(times: list[float], calls: int, scale: float) -> Measurement:
    """Seconds per repeat -> ``scale`` units per call (e.g. 1e3 for ms)."""
    return measurement([t / calls * scale for t in times], calls=calls)


def rate(times: list[float], count: int) -> Measurement:
    """Seconds per repeat -> ``count`` items per second."""
    return measurement([count / t for t in times], count=count)


def _kill(session: Session, actor: Any) -> None:
    kill = getattr(session.api, "kill", None)
    if kill is not None:
        kill(actor)


def _array(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8, dtype=np.float64)


# --- workloads -------------------------------------------------------------------------------


def cold_start(session: Session, plan: Plan) -> Measurement:
    """Only the first task; the caller times from before the import (see ``child.py``)."""
    api = session.api
    api.get(api.remote(noop).remote())
    return Measurement(0.0, [])


def sync_round_trip(session: Session, plan: Plan) -> Measurement:
    api = session.api
    f = api.remote(noop)

    def batch(n: int) -> None:
        for _ in range(n):
            api.get(f.remote())

    calls = plan.fit(plan.reps(300, 2000), batch, 100, budget_s=1.5)
    return per_call(repeat(lambda: batch(calls), plan.reps(3, 5)), calls, 1e3)


def async_throughput(session: Session, plan: Plan) -> Measurement:
    api = session.api
    f = api.remote(noop)

    def burst(n: int) -> None:
        api.get([f.remote() for _ in range(n)])

    count = plan.fit(NUM_TASKS, burst, 1000, budget_s=8)
    return rate(repeat(lambda: burst(count), plan.reps(2, 5)), count)


def put_task_100mb(session: Session, plan: Plan) -> Measurement:
    api = session.api
    f = api.remote(array_sum)
    array = _array(100 * MB)
    expected = float(array.sum())

    def put_and_read() -> None:
        ref = api.put(array)
        assert api.get(f.remote(ref)) == expected
        del ref

    repeat(put_and_read, 2)
    times = repeat(put_and_read, plan.reps(7, 15))
    return measurement([100 * MB / t / 1e9 for t in times])


def _get_stored(session: Session, plan: Plan, nbytes: int) -> Measurement:
    api = session.api
    ref = api.put(_array(nbytes))
    for _ in range(3):
        api.get(ref)
    times = repeat(lambda: api.get(ref), plan.reps(10, 30))
    return measurement([t * 1e3 for t in times], nbytes=nbytes)


def get_stored_10mb(session: Session, plan: Plan) -> Measurement:
    return _get_stored(session, plan, 10 * MB)


def get_stored_100mb(session: Session, plan: Plan) -> Measurement:
    return _get_stored(session, plan, 100 * MB)


def get_stored_400mb(session: Session, plan: Plan) -> Measurement:
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if available < 4 * 400 * MB:
        raise Unsupported(f"skipped (only {available / 1e9:.1f} GB of memory free)")
    return _get_stored(session, plan, 400 * MB)


def chain_200(session: Session, plan: Plan) -> Measurement:
    api = session.api
    f = api.remote(inc)

    def chain(length: int) -> None:
        ref = f.remote(0)
        for _ in range(length - 1):
            ref = f.remote(ref)
        assert api.get(ref) == length

    chain(20)
    return per_call(repeat(lambda: chain(CHAIN_LENGTH), plan.reps(3, 7)), CHAIN_LENGTH, 1e3)


def small_objects(session: Session, plan: Plan) -> Measurement:
    api = session.api
    payload = bytes(100)

    def put_then_get(n: int) -> None:
        refs = [api.put(payload) for _ in range(n)]
        assert len(api.get(refs)) == n

    count = plan.fit(NUM_SMALL_OBJECTS, put_then_get, 1000, budget_s=8)
    return rate(repeat(lambda: put_then_get(count), plan.reps(2, 5)), count)


def generator_stream(session: Session, plan: Plan) -> Measurement:
    if session.framework == "dask":
        raise Unsupported("n/a (no generator tasks)")
    api = session.api
    gen = api.remote(count_up)

    def stream(n: int) -> None:
        refs = list(gen.remote(n))  # each ref as its value is yielded
        assert api.get(refs) == list(range(n))

    count = plan.fit(NUM_STREAMED, stream, 1000, budget_s=8)
    return rate(repeat(lambda: stream(count), plan.reps(2, 5)), count)


def actor_sync_call(session: Session, plan: Plan) -> Measurement:
    api = session.api
    actor = api.remote(Echo).remote()

    def batch(n: int) -> None:
        for _ in range(n):
            api.get(actor.m.remote())

    calls = plan.fit(plan.reps(300, 2000), batch, 100, budget_s=1.5)
    result = per_call(repeat(lambda: batch(calls), plan.reps(3, 5)), calls, 1e6)
    _kill(session, actor)
    return result


def _actor_calls(session: Session, plan: Plan, cls: type) -> Measurement:
    api = session.api
    actor = api.remote(cls).remote()

    def burst(n: int) -> None:
        api.get([actor.m.remote() for _ in range(n)])

    count = plan.fit(NUM_TASKS, burst, 1000, budget_s=8)
    result = rate(repeat(lambda: burst(count), plan.reps(2, 5)), count)
    _kill(session, actor)
    return result


def actor_async_calls(session: Session, plan: Plan) -> Measurement:
    return _actor_calls(session, plan, Echo)


def async_actor_calls(session: Session, plan: Plan) -> Measurement:
    return _actor_calls(session, plan, AsyncEcho)


def n_n_actor_calls(session: Session, plan: Plan) -> Measurement:
    api = session.api
    actor_cls = api.remote(Echo)
    module = session.worker_module
    if module is None:
        raise Unsupported("n/a (tasks cannot reach the API)")
    n = plan.num_cpus
    actors = [actor_cls.remote() for _ in range(n)]
    caller = api.remote(call_actors)

    def round_(per_caller: int) -> None:
        done = api.get([caller.remote(module, actors, per_caller) for _ in range(n)])
        assert sum(done) == n * per_caller

    calls = plan.fit(plan.reps(2000, 5000), round_, 200, budget_s=4)
    result = rate(repeat(lambda: round_(calls), plan.reps(2, 5)), n * calls)
    for actor in actors:
        _kill(session, actor)
    return result


def actor_create(session: Session, plan: Plan) -> Measurement:
    api = session.api
    actor_cls = api.remote(Echo)

    def create() -> None:
        actor = actor_cls.remote()
        api.get(actor.m.remote())
        _kill(session, actor)

    create()
    return measurement([t * 1e3 for t in repeat(create, plan.reps(3, 7))])


WORKLOADS: dict[str, Callable[[Session, Plan], Measurement]] = {
    fn.__name__: fn
    for fn in (
        cold_start,
        sync_round_trip,
        async_throughput,
        put_task_100mb,
        get_stored_10mb,
        get_stored_100mb,
        get_stored_400mb,
        chain_200,
        small_objects,
        generator_stream,
        actor_sync_call,
        actor_async_calls,
        async_actor_calls,
        n_n_actor_calls,
        actor_create,
    )
}

"""A notebook session runs for days: what it leaves behind must not grow with what it did.

``shutdown`` lets go of everything of the old cluster, even while the notebook keeps
ObjectRefs and futures; the tables of every process stay bounded however many tasks, actors
and workers came and went; node logs rotate.
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import own_leaks, wait_until

import nbcluster as nc
from nbcluster.runtime.ownership.object_ref import get_core

T = 30


@nc.remote
def inc(x):
    return x + 1


@nc.remote
def big(n):
    return np.ones(n)


def test_shutdown_lets_go_of_the_cluster_while_refs_remain(no_cluster):
    before = own_leaks()
    nc.init(num_cpus=2)
    kept = [nc.put(np.zeros(2_000_000)), big.remote(1_000_000), inc.remote(1)]
    assert nc.get(kept[2], timeout=T) == 2
    value = nc.get(kept[0], timeout=T)
    assert value.sum() == 0
    del value
    future = kept[1].future()
    assert future.result(timeout=T).sum() == 1_000_000
    del future
    assert own_leaks() != before, "the check sees nothing of a running cluster"
    nc.shutdown()
    gc.collect()
    wait_until(lambda: own_leaks() == before, 10,
               message=lambda: f"left after shutdown: {own_leaks()} (before: {before})")
    assert len(kept) == 3  # the refs are still here, holding nothing of the old cluster


def test_futures_of_many_refs_use_a_few_threads(cluster):
    refs = [inc.remote(i) for i in range(300)]
    names: set[str] = set()
    lock = threading.Lock()

    def note(_: Any) -> None:
        with lock:
            names.add(threading.current_thread().name)

    futures = [r.future() for r in refs]
    for f in futures:
        f.add_done_callback(note)
    assert [f.result(timeout=T) for f in futures] == list(range(1, 301))
    assert len(names) <= 8, f"{len(names)} threads resolved 300 futures"


# ---------------------------------------------------------- tables stay bounded


def sizes_of(address: str) -> dict[str, int]:
    """The table sizes of the process at ``address`` (``debug_sizes``), asked from here."""
    core = get_core()

    async def ask() -> dict[str, int]:
        conn = await core.connect(address)
        return await conn.call("debug_sizes")  # type: ignore[no-any-return]

    return core.run_sync(ask, timeout=T)  # type: ignore[no-any-return]


@nc.remote
def echo_big(blob, n):
    return np.ones(n)  # in the store: its task is kept as lineage


def test_lineage_is_bounded_by_bytes_too(cluster, monkeypatch):
    from nbcluster.runtime.config import CONFIG

    monkeypatch.setattr(CONFIG, "max_lineage_bytes", 300_000)
    blob = b"x" * 60_000
    refs = [echo_big.remote(blob, 20_000) for _ in range(20)]
    nc.wait(refs, num_returns=20, timeout=T)
    sizes = sizes_of(get_core().address)
    assert 0 < sizes["lineage_bytes"] <= 300_000, sizes
    assert sizes["lineage"] < 20, sizes
    del refs


@nc.remote
class Short:
    def ping(self):
        return os.getpid()


def test_dead_actors_are_forgotten_past_a_limit(no_cluster, make_cluster, monkeypatch):
    monkeypatch.setenv("NBCLUSTER_MAX_DEAD_ACTORS", "3")
    monkeypatch.setenv("NBCLUSTER_EVENT_MAX_SOURCES", "4")
    make_cluster(num_cpus=2)
    core = get_core()
    first = None
    for _ in range(10):
        a = Short.remote()
        nc.get(a.ping.remote(), timeout=T)
        nc.kill(a)
        first = first or a
        with pytest.raises(nc.exceptions.ActorDiedError):
            nc.get(a.ping.remote(), timeout=T)
    head = core.head_call("debug_head_sizes", timeout=T)
    assert head["actors"] <= 3, head  # every one of them dead
    assert head["event_sources"] <= 4, head  # ten actor processes, and more, reported
    assert sizes_of(core.address)["actor_queues"] == 0
    with pytest.raises(nc.exceptions.ActorDiedError):  # the forgotten still fail clearly
        nc.get(first.ping.remote(), timeout=T)


@nc.remote
def quick(i):
    return i


def test_cancels_of_finished_or_queued_tasks_leave_nothing_behind(cluster):
    from nbcluster.util import state

    for _ in range(3):
        refs = [quick.remote(i) for i in range(300)]
        nc.wait(refs, num_returns=20, timeout=T)  # on their way: queued, running or done
        for r in refs:
            nc.cancel(r)
        for r in refs:
            try:
                nc.get(r, timeout=T)
            except nc.exceptions.TaskCancelledError:
                pass
    workers = state.list_workers(filters=[("state", "=", "ALIVE"), ("worker_type", "=", "WORKER")])
    checked = 0
    for w in workers:
        try:
            sizes = sizes_of(w.address)
        except Exception:  # a worker since stopped
            continue
        checked += 1
        assert sizes["cancelled"] == 0 and sizes["queued"] == 0, (w.address, sizes)
    assert checked, f"no worker answered among {workers}"


def test_a_nodes_log_is_rotated(no_cluster, make_cluster, monkeypatch):
    monkeypatch.setenv("NBCLUSTER_LOG_MAX_BYTES", "20000")
    monkeypatch.setenv("NBCLUSTER_LOG_BACKUPS", "2")
    make_cluster(num_cpus=1)
    log = Path(nc.init()["session_dir"]) / "node.log"

    @nc.remote
    def chatter(n):
        for _ in range(n):
            os.write(1, b"x" * 999 + b"\n")  # the node's log, not the task's output
        return n

    for _ in range(3):
        assert nc.get(chatter.remote(100), timeout=T) == 100
        wait_until(lambda: log.stat().st_size <= 20000, T,
                   message=lambda: f"{log} is {log.stat().st_size} bytes")  # fmt: skip
    assert (log.parent / "node.log.1").exists()
    assert (log.parent / "node.log.2").exists()
    assert not (log.parent / "node.log.3").exists()

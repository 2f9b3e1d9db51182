"""Logical resources: CPUs, GPUs and custom resources decide what runs where and when."""

from __future__ import annotations

import itertools
import logging
import os
import time
import warnings

import pytest
from conftest import (
    DEFAULT_CPUS,
    file_barrier,
    wait_for_file,
    wait_until,
    write_pid,
)

import nbcluster as nc
from nbcluster.exceptions import TaskCancelledError


@nc.remote
def add(a, b=0):
    return a + b


@nc.remote
def interval(seconds=0.2):
    """When this task held its resources: (start, end) on the machine's clock."""
    start = time.time()
    time.sleep(seconds)  # the work being timed, not synchronisation
    return start, time.time()


@nc.remote
def blocked(started, gate):
    write_pid(started)
    return wait_for_file(gate, 60)


@nc.remote(num_gpus=1)
def gpu_view(barrier=None):
    met = file_barrier(barrier, 2) if barrier is not None else None
    return (
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        nc.get_runtime_context().get_assigned_resources(),
        met,
    )


def assert_never_overlap(intervals: list[tuple[float, float]]) -> None:
    ordered = sorted(intervals)
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end, f"two tasks overlapped in time: {ordered}"


# ------------------------------------------------------------------ the default cluster


def test_cluster_resources_and_nodes(cluster):
    resources = nc.cluster_resources()
    assert resources["CPU"] == float(DEFAULT_CPUS)
    assert resources.get("GPU", 0.0) == 0.0

    nodes = nc.nodes()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["Alive"] is True
    assert node["NodeID"]
    assert node["Resources"]["CPU"] == float(DEFAULT_CPUS)


def test_available_resources_follow_running_tasks(cluster, tmp_path, gate):
    wait_until(lambda: nc.available_resources().get("CPU", 0.0) == float(DEFAULT_CPUS), 10)
    started = tmp_path / "started"
    ref = blocked.remote(str(started), str(gate))
    wait_until(started.exists, 30)
    wait_until(
        lambda: nc.available_resources().get("CPU", 0.0) == float(DEFAULT_CPUS) - 1,
        10,
        message=lambda: f"available while one task runs: {nc.available_resources()}",
    )
    assert nc.cluster_resources()["CPU"] == float(DEFAULT_CPUS)

    gate.touch()
    assert nc.get(ref, timeout=30) is True
    wait_until(lambda: nc.available_resources().get("CPU", 0.0) == float(DEFAULT_CPUS), 10)


def test_tasks_needing_every_cpu_run_one_at_a_time(cluster):
    wide = interval.options(num_cpus=DEFAULT_CPUS)
    assert_never_overlap(nc.get([wide.remote() for _ in range(3)], timeout=30))


def test_infeasible_task_stays_pending_and_warns_once(make_cluster, capfd, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Started inside the capture, so the cluster's own processes write into it too.
        make_cluster(num_cpus=DEFAULT_CPUS)
        ref = add.options(resources={"unobtainium": 1}).remote(1, 2)

        ready, not_ready = nc.wait([ref], timeout=3)
        assert (ready, not_ready) == ([], [ref])
        assert nc.get(add.remote(1, 2), timeout=30) == 3  # feasible work still runs
        ready, not_ready = nc.wait([ref], timeout=2)  # a repeated warning would show by now
        assert (ready, not_ready) == ([], [ref])

        nc.cancel(ref)
        with pytest.raises(TaskCancelledError):
            nc.get(ref, timeout=10)

    err = capfd.readouterr().err
    channels = {
        "warnings": [str(w.message) for w in caught if "unobtainium" in str(w.message)],
        "logging": [r.getMessage() for r in caplog.records if "unobtainium" in r.getMessage()],
        "stderr": [line for line in err.splitlines() if "unobtainium" in line],
    }
    assert any(channels.values()), f"no warning naming the missing resource: {channels}"
    for where, messages in channels.items():
        assert len(messages) <= 1, f"warned more than once ({where}): {messages}"


# ------------------------------------------------------------------- special clusters


def test_custom_resource_limits_concurrency(make_cluster):
    make_cluster(num_cpus=DEFAULT_CPUS, resources={"special": 1})
    assert nc.cluster_resources()["special"] == 1.0

    special = interval.options(resources={"special": 1})
    assert_never_overlap(nc.get([special.remote() for _ in range(4)], timeout=30))


def test_gpus_are_assigned_through_cuda_visible_devices(make_cluster):
    make_cluster(num_cpus=DEFAULT_CPUS, num_gpus=2)
    assert nc.cluster_resources()["GPU"] == 2.0

    device, assigned, _ = nc.get(gpu_view.remote(), timeout=30)
    assert device in {"0", "1"}
    assert assigned["GPU"] == 1.0

    both, both_assigned, _ = nc.get(gpu_view.options(num_gpus=2).remote(), timeout=30)
    assert sorted(both.split(",")) == ["0", "1"]
    assert both_assigned["GPU"] == 2.0


def test_fractional_gpu_tasks_share_one_device(make_cluster, tmp_path):
    make_cluster(num_cpus=DEFAULT_CPUS, num_gpus=1)
    barrier = str(tmp_path / "barrier")
    half = gpu_view.options(num_gpus=0.5)
    (first, got1, met1), (second, got2, met2) = nc.get(
        [half.remote(barrier), half.remote(barrier)], timeout=30
    )
    assert (met1, met2) == (True, True), "two half-GPU tasks should run at once on one GPU"
    assert first == second == "0"
    assert got1["GPU"] == got2["GPU"] == 0.5
    # A whole GPU is free again once both halves are.
    device, assigned, _ = nc.get(gpu_view.remote(), timeout=30)
    assert (device, assigned["GPU"]) == ("0", 1.0)


@nc.remote
def gpu_meet(barrier, parties):
    return os.environ.get("CUDA_VISIBLE_DEVICES"), file_barrier(barrier, parties)


def test_fractions_are_packed_so_a_whole_gpu_stays_free(make_cluster, tmp_path):
    make_cluster(num_cpus=4, num_gpus=2)
    barrier = str(tmp_path / "barrier")
    half, whole = gpu_meet.options(num_gpus=0.5), gpu_meet.options(num_gpus=1)
    got = nc.get([half.remote(barrier, 3), half.remote(barrier, 3),
                  whole.remote(barrier, 3)], timeout=30)  # fmt: skip
    assert [met for _, met in got] == [True] * 3, "the three tasks should run at once"
    (a, _), (b, _), (c, _) = got
    assert a == b and c != a and {a, c} == {"0", "1"}, got


def test_bad_gpu_amounts_are_refused_at_the_call(cluster):
    with pytest.raises(ValueError, match="num_gpus"):
        gpu_view.options(num_gpus=1.5)
    with pytest.raises(ValueError, match="num_gpus"):
        gpu_view.options(num_gpus=-1)


def test_gpu_tasks_at_the_same_time_get_different_devices(make_cluster, tmp_path):
    make_cluster(num_cpus=DEFAULT_CPUS, num_gpus=2)
    barrier = str(tmp_path / "barrier")
    (first, _, met1), (second, _, met2) = nc.get(
        [gpu_view.remote(barrier), gpu_view.remote(barrier)], timeout=30
    )
    assert (met1, met2) == (True, True), "two one-GPU tasks should run at once on two GPUs"
    assert {first, second} == {"0", "1"}


@nc.remote
def nest(depth):
    """``depth`` tasks below this one, each blocked in ``get`` on the next: one worker each."""
    if depth == 0:
        return 0
    return nc.get(nest.remote(depth - 1)) + 1


def test_nested_tasks_past_max_workers_wait_and_the_driver_is_told_why(
    make_cluster, monkeypatch, capfd
):
    monkeypatch.setenv("NBCLUSTER_MAX_WORKERS", "3")  # read by the node the cluster starts
    make_cluster(num_cpus=1)
    assert nc.get(nest.remote(2), timeout=30) == 2  # three workers: within the limit

    ref = nest.remote(5)  # needs six
    err = []

    def told():
        err.append(capfd.readouterr().err)
        return "max_workers limit" in "".join(err)

    wait_until(told, 60, message=lambda: "no warning on stderr:\n" + "".join(err)[-3000:])
    assert "NBCLUSTER_MAX_WORKERS" in "".join(err)
    ready, _ = nc.wait([ref], timeout=0.5)
    assert ready == []  # it waits for a worker; nothing failed
    nc.cancel(ref, recursive=True)
    with pytest.raises(TaskCancelledError):
        nc.get(ref, timeout=30)

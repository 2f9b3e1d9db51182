"""Remote functions: calling them, passing refs, nesting, waiting, options and cancellation."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import (
    descendants,
    file_barrier,
    is_gone,
    read_pid,
    read_report,
    start_driver,
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
def pid():
    return os.getpid()


@nc.remote
def meet(directory, parties=2):
    """Returns only once ``parties`` tasks are running at the same time."""
    return file_barrier(directory, parties), os.getpid()


@nc.remote
def blocked(started_dir, gate, timeout=60.0):
    """Announces it started, then holds its worker until the test opens the gate."""
    Path(started_dir).mkdir(parents=True, exist_ok=True)
    write_pid(str(Path(started_dir) / f"started-{os.getpid()}-{time.monotonic_ns()}"))
    return wait_for_file(gate, timeout)


@nc.remote
def sleeper(started, seconds):
    write_pid(started)
    time.sleep(seconds)
    return "finished"


@nc.remote
def touch(path, *_after):
    Path(path).touch()
    return True


@nc.remote(num_returns=2)
def quotient_and_remainder(a, b):
    return divmod(a, b)


@nc.remote
def three():
    return 1, 2, 3


@nc.remote
def inspect_args(top, container):
    """Reports how its arguments arrived: top-level refs resolved, nested refs left as refs."""
    return {
        "top": top,
        "nested_are_refs": [isinstance(r, nc.ObjectRef) for r in container["refs"]],
        "nested_values": nc.get(container["refs"]),
    }


@nc.remote
def leaf(i, j):
    return 10 * i + j


@nc.remote
def middle(i):
    return sum(nc.get([leaf.remote(i, j) for j in range(2)]))


@nc.remote
def top():
    return sum(nc.get([middle.remote(i) for i in range(4)]))


@nc.remote
def context():
    ctx = nc.get_runtime_context()
    return {
        "task_id": ctx.get_task_id(),
        "node_id": ctx.get_node_id(),
        "worker_id": ctx.get_worker_id(),
        "resources": ctx.get_assigned_resources(),
        "pid": os.getpid(),
    }


@nc.remote
def parent_of_blocked(child_started_dir, gate):
    return nc.get(blocked.remote(child_started_dir, gate))


# ------------------------------------------------------------------------------- basics


def test_remote_function_returns_its_result(cluster):
    assert nc.get(add.remote(1, 2)) == 3
    assert nc.get(add.remote(1, b=5)) == 6


def test_a_lambda_can_be_a_remote_function(cluster):
    assert nc.get(nc.remote(lambda: 1).remote()) == 1


def test_get_takes_one_ref_or_a_list_in_order(cluster):
    refs = [add.remote(i, i) for i in range(20)]
    assert all(isinstance(r, nc.ObjectRef) for r in refs)
    assert nc.get(refs) == [2 * i for i in range(20)]
    assert nc.get(refs[3]) == 6
    assert nc.get([refs[1], refs[1]]) == [2, 2]


def test_tasks_run_in_worker_processes_of_the_cluster(cluster):
    pids = set(nc.get([pid.remote() for _ in range(10)]))
    assert os.getpid() not in pids
    assert pids <= {p.pid for p in descendants()}, "workers should be processes of this cluster"


def test_two_tasks_run_at_the_same_time_on_two_cpus(cluster, tmp_path):
    results = nc.get([meet.remote(str(tmp_path / "barrier")) for _ in range(2)], timeout=30)
    assert [met for met, _ in results] == [True, True]
    assert len({worker for _, worker in results}) == 2


def test_a_short_task_finishes_while_a_long_one_runs(cluster, tmp_path, gate):
    long_task = blocked.remote(str(tmp_path / "started"), str(gate))
    assert nc.get(add.remote(1, 2), timeout=10) == 3, "a CPU is free for it"
    gate.touch()
    assert nc.get(long_task, timeout=30) is True


def test_num_returns_gives_one_ref_per_value(cluster):
    q, r = quotient_and_remainder.remote(7, 3)
    assert isinstance(q, nc.ObjectRef)
    assert nc.get([q, r]) == [2, 1]

    a, b, c = three.options(num_returns=3).remote()
    assert nc.get([c, b, a]) == [3, 2, 1]
    assert nc.get(three.remote()) == (1, 2, 3)


def test_options_do_not_change_the_original_function(cluster):
    named = add.options(name="my-add", num_cpus=1, max_retries=1)
    assert nc.get(named.remote(2, 3)) == 5
    assert nc.get(add.remote(2, 3)) == 5


def test_decorator_with_options(cluster):
    @nc.remote(num_cpus=1, max_retries=0, name="double")
    def double(x):
        return 2 * x

    assert nc.get(double.remote(21)) == 42


def test_refs_as_arguments_are_resolved_nested_refs_are_passed(cluster):
    stored = nc.put(10)
    computed = add.remote(1, 1)
    report = nc.get(inspect_args.remote(stored, {"refs": [stored, computed]}))
    assert report == {"top": 10, "nested_are_refs": [True, True], "nested_values": [10, 2]}


def test_results_chain_into_further_tasks(cluster):
    total = add.remote(add.remote(1, 2), add.remote(3, 4))
    assert nc.get(total) == 10
    ref = nc.put(5)
    for _ in range(10):
        ref = add.remote(ref, 1)
    assert nc.get(ref) == 15


def test_redefined_function_runs_its_new_body(cluster):
    def f():
        return 1

    assert nc.get(nc.remote(f).remote()) == 1

    def f():  # same name, new body
        return 2

    assert nc.get(nc.remote(f).remote()) == 2


MAIN_SCRIPT = r"""
import json
import nbcluster as nc

nc.init(num_cpus=2)

@nc.remote
def f():
    return 1

first = nc.get(f.remote())

@nc.remote
def f():
    return 2

second = nc.get(f.remote())

class Point:
    def __init__(self, x):
        self.x = x

@nc.remote
def double(p):
    return type(p).__name__, p.x * 2

@nc.remote
def make_point(x):
    return Point(x)

point = nc.get(make_point.remote(4))
doubled = nc.get(double.remote(Point(21)))
print("RESULT " + json.dumps([first, second, doubled, point.x]), flush=True)
nc.shutdown()
"""


def test_functions_and_classes_from_main_travel_by_value():
    """A script's own functions and classes reach workers, and redefinitions take effect."""
    proc = start_driver(MAIN_SCRIPT)
    try:
        result = read_report(proc, "RESULT")
        assert result == [1, 2, ["Point", 42], 4]
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


# ------------------------------------------------------------------------------- nesting


def test_nested_tasks_do_not_deadlock_the_pool(cluster):
    """Blocked parents lend their CPU back: 1 + 4 + 8 tasks on a two-CPU cluster."""
    expected = sum(10 * i + j for i in range(4) for j in range(2))
    assert nc.get(top.remote(), timeout=45) == expected


def test_many_nested_parents_at_once(cluster):
    expected = sum(10 * i + j for i in range(4) for j in range(2))
    assert nc.get([top.remote() for _ in range(3)], timeout=45) == [expected] * 3


# --------------------------------------------------------------------------------- wait


def test_wait_splits_ready_from_not_ready(cluster, tmp_path, gate):
    fast = [add.remote(i) for i in range(3)]
    slow = blocked.remote(str(tmp_path), str(gate))

    ready, not_ready = nc.wait([*fast, slow], num_returns=3, timeout=30)
    assert set(ready) == set(fast)
    assert not_ready == [slow]

    ready, not_ready = nc.wait([slow], timeout=0.2)
    assert (ready, not_ready) == ([], [slow])

    gate.touch()
    ready, not_ready = nc.wait([slow], timeout=30, fetch_local=True)
    assert (ready, not_ready) == ([slow], [])
    assert nc.get(slow) is True


def test_wait_returns_one_by_default(cluster):
    refs = [add.remote(i) for i in range(4)]
    nc.get(refs)
    ready, not_ready = nc.wait(refs)
    assert len(ready) == 1
    assert len(not_ready) == 3
    assert set(ready) | set(not_ready) == set(refs)


def test_wait_without_timeout_waits_for_num_returns(cluster):
    refs = [add.remote(i) for i in range(5)]
    ready, not_ready = nc.wait(refs, num_returns=5, fetch_local=False)
    assert set(ready) == set(refs)
    assert not_ready == []


# ----------------------------------------------------------------------- runtime context


def test_runtime_context_inside_tasks(cluster):
    first, second = nc.get([context.remote(), context.remote()])
    node_ids = [node["NodeID"] for node in nc.nodes()]

    assert first["task_id"] and second["task_id"]
    assert first["task_id"] != second["task_id"]
    assert first["worker_id"]
    assert first["node_id"] == second["node_id"] == node_ids[0]
    assert first["resources"] == {"CPU": 1.0}

    wide = nc.get(context.options(num_cpus=2).remote())
    assert wide["resources"] == {"CPU": 2.0}

    assert nc.get_runtime_context().get_node_id() == node_ids[0]


# ---------------------------------------------------------------------------- cancellation


def test_cancel_pending_task_never_runs(cluster, tmp_path, gate):
    started = tmp_path / "started"
    holder = blocked.remote(str(started), str(gate))  # holds one of the two CPUs
    wait_until(lambda: started.exists() and any(started.iterdir()), 30)

    # Pending for want of resources: it needs both CPUs.
    needs_both = touch.options(num_cpus=2).remote(str(tmp_path / "ran-wide"))
    # Pending for want of an argument: the holder's result.
    needs_arg = touch.remote(str(tmp_path / "ran-dependent"), holder)
    assert nc.wait([needs_both, needs_arg], num_returns=2, timeout=0.5)[0] == []
    nc.cancel(needs_both)
    nc.cancel(needs_arg)
    gate.touch()

    assert nc.get(holder, timeout=30) is True
    for ref in (needs_both, needs_arg):
        with pytest.raises(TaskCancelledError):
            nc.get(ref, timeout=10)
    assert nc.get([add.remote(i) for i in range(4)], timeout=30) == [0, 1, 2, 3]
    assert nc.get(add.options(num_cpus=2).remote(1), timeout=30) == 1
    assert not (tmp_path / "ran-wide").exists(), "a task cancelled while pending must never run"
    assert not (tmp_path / "ran-dependent").exists()


def test_cancel_interrupts_a_running_task(cluster, tmp_path):
    started = tmp_path / "started"
    ref = sleeper.remote(str(started), 60)
    wait_until(lambda: read_pid(started), 30)
    try:
        t0 = time.monotonic()
        nc.cancel(ref)
        with pytest.raises(TaskCancelledError):
            nc.get(ref, timeout=10)
        assert time.monotonic() - t0 < 5

        # Its CPU comes back and the cluster keeps working.
        wait_until(lambda: nc.available_resources().get("CPU", 0) == 2.0, 10)
        assert nc.get(add.remote(1, 1)) == 2
    finally:
        nc.cancel(ref, force=True)  # never leave a 60 s task behind for the next test


def test_force_cancel_kills_the_worker(cluster, tmp_path):
    started = tmp_path / "started"
    ref = sleeper.remote(str(started), 60)
    worker = wait_until(lambda: read_pid(started), 30)

    nc.cancel(ref, force=True)
    with pytest.raises(TaskCancelledError):
        nc.get(ref, timeout=10)
    wait_until(lambda: is_gone(worker), 10, message="force-cancelled worker still alive")

    # The pool replaces the worker and the cluster keeps working.
    workers = set(nc.get([pid.remote() for _ in range(4)], timeout=30))
    assert worker not in workers


def test_cancel_is_recursive_by_default(cluster, tmp_path, gate):
    child_started = tmp_path / "child"
    ref = parent_of_blocked.remote(str(child_started), str(gate))
    wait_until(lambda: child_started.exists() and any(child_started.iterdir()), 30)

    nc.cancel(ref)
    with pytest.raises(TaskCancelledError):
        nc.get(ref, timeout=10)
    # The child is cancelled too: both CPUs come back while its gate is still shut.
    wait_until(
        lambda: nc.available_resources().get("CPU", 0) == 2.0,
        15,
        message=lambda: f"available: {nc.available_resources()}",
    )


def test_cancel_of_a_finished_task_keeps_its_result(cluster):
    ref = add.remote(2, 2)
    assert nc.get(ref) == 4
    nc.cancel(ref)
    assert nc.get(ref) == 4

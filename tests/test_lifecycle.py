"""A cluster's life: init, pre-started workers, re-init, shutdown, and drivers that exit or die.

Whatever way the driver goes, no process and no /dev/shm entry of its cluster may remain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from conftest import (
    CLEANUP_TIMEOUT_S,
    DEFAULT_CPUS,
    REPO_ROOT,
    descendants,
    describe,
    file_barrier,
    kill_quietly,
    own_leaks,
    read_report,
    start_driver,
    still_alive,
    still_mapped,
    store_inodes,
    wait_until,
)
from parts import missing

import nbcluster as nc


@nc.remote
def pid():
    return os.getpid()


@nc.remote
def meet(directory, parties):
    """Returns only once ``parties`` tasks are running at the same time."""
    return file_barrier(directory, parties), os.getpid()


def assert_all_gone(pids: set[int], stores: set[str], what: str) -> None:
    """Every process of the cluster is gone, and so is its object store: no process on the
    machine maps it any more."""
    wait_until(
        lambda: not still_alive(pids),
        CLEANUP_TIMEOUT_S,
        message=lambda: f"{what}: processes left: {describe(still_alive(pids))}",
    )
    wait_until(
        lambda: not still_mapped(stores),
        CLEANUP_TIMEOUT_S,
        message=lambda: f"{what}: the object store is still mapped by {still_mapped(stores)}",
    )


def test_init_shutdown_leaves_nothing_behind(no_cluster):
    before = own_leaks()
    assert not nc.is_initialized()

    nc.init(num_cpus=DEFAULT_CPUS)
    try:
        assert nc.is_initialized()
        workers = set(nc.get([pid.remote() for _ in range(8)]))
        cluster_pids = {p.pid for p in descendants()} | workers
        assert workers <= cluster_pids
        stores = store_inodes(cluster_pids | {os.getpid()})
        assert stores, "the check sees no object store"
    finally:
        nc.shutdown()

    assert not nc.is_initialized()
    assert_all_gone(cluster_pids, stores, "after shutdown()")
    wait_until(lambda: own_leaks() == before, CLEANUP_TIMEOUT_S,
               message=lambda: f"left in the driver: {own_leaks()} (before: {before})")


def test_shutdown_without_a_cluster_is_harmless(no_cluster):
    nc.shutdown()
    nc.shutdown()
    assert not nc.is_initialized()


def test_a_new_cluster_after_shutdown(no_cluster):
    for _ in range(2):
        nc.init(num_cpus=DEFAULT_CPUS)
        assert nc.get(pid.remote()) != os.getpid()
        nc.shutdown()
    assert not nc.is_initialized()


def test_workers_are_pre_started(no_cluster):
    nc.init(num_cpus=DEFAULT_CPUS)
    # The pool comes up without any task asking for it: a head and its workers.
    wait_until(lambda: len(descendants()) >= 1 + DEFAULT_CPUS, 20, message="no worker pool")
    submitted_at = time.time()
    worker = nc.get(pid.remote(), timeout=30)
    assert psutil.Process(worker).create_time() < submitted_at, "worker started for the task"


def test_a_fresh_cluster_runs_two_tasks_at_once(no_cluster, tmp_path):
    nc.init(num_cpus=DEFAULT_CPUS)
    barrier = str(tmp_path / "barrier")
    results = nc.get([meet.remote(barrier, DEFAULT_CPUS) for _ in range(DEFAULT_CPUS)], timeout=30)
    assert [met for met, _ in results] == [True] * DEFAULT_CPUS, "the tasks ran one after another"
    assert len({w for _, w in results}) == DEFAULT_CPUS


def test_init_again_in_the_same_process_is_harmless(cluster):
    nc.init(num_cpus=DEFAULT_CPUS, ignore_reinit_error=True)
    try:
        nc.init(num_cpus=DEFAULT_CPUS)
    except RuntimeError:
        pass  # Ray's behaviour without ignore_reinit_error: refuse, but break nothing
    assert nc.is_initialized()
    assert len(nc.nodes()) == 1
    assert nc.cluster_resources()["CPU"] == float(DEFAULT_CPUS)
    assert nc.get(pid.remote()) != os.getpid()


# ----------------------------------------------------------- drivers in separate processes

DRIVER = r"""
import faulthandler, json, os, signal, sys, time
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for stacks on a hang
# Ctrl-C as a user's Python has it: a test run started in the background by a shell passes
# SIGINT on ignored, and Python then leaves it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
import nbcluster as nc

nc.init(num_cpus=2)

@nc.remote
def pid():
    return os.getpid()

@nc.remote
def block(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, path)
    time.sleep(120)

marker = sys.argv[1]
pids = nc.get([pid.remote() for _ in range(6)])
big = nc.put(b"x" * (20 * 1024 * 1024))  # something in shared memory
long_task = block.remote(marker)
while not os.path.exists(marker):
    time.sleep(0.01)
pids.append(int(open(marker).read()))
print("READY " + json.dumps({"driver": os.getpid(), "workers": sorted(set(pids))}), flush=True)
if sys.argv[2] == "exit":
    sys.exit(0)          # normal exit, no shutdown(), a task still running
nc.get(long_task)        # wait here until killed
"""


def drain(proc: subprocess.Popen[bytes]) -> list[bytes]:
    """Keep reading the driver's output (so it never blocks on a full pipe); the list fills."""
    out: list[bytes] = []
    assert proc.stdout is not None
    stream = proc.stdout

    def read() -> None:
        try:
            out.extend(iter(lambda: stream.read1(65536), b""))
        except (ValueError, OSError):  # closed by the test's cleanup
            pass

    threading.Thread(target=read, daemon=True).start()
    return out


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, output: list[bytes]) -> int:
    """The driver's exit status; if it does not exit in time, fail with its threads' stacks."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while b"most recent call first" not in b"".join(output) and time.monotonic() < deadline:
            time.sleep(0.05)  # (a diagnostic on the way to failing: nothing to order)
        raise AssertionError(
            f"the driver did not exit in {timeout}s; its stacks and output:\n"
            + b"".join(output).decode(errors="replace")[-8000:]
        ) from None


def run_driver_and_end_it(tmp_path, how: str) -> None:
    proc = start_driver(DRIVER, str(tmp_path / "running"), how)
    cluster_pids: set[int] = set()
    try:
        report = read_report(proc, "READY", timeout=60)
        assert report["driver"] == proc.pid
        cluster_pids = {p.pid for p in descendants(proc.pid)} | set(report["workers"])
        stores = store_inodes(cluster_pids | {proc.pid})
        assert stores, "the check sees no object store"
        assert set(report["workers"]) <= cluster_pids
        assert len(cluster_pids) >= 3, "expected a head and workers under the driver"

        if how == "kill":
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        else:
            assert proc.wait(timeout=30) == 0, "the driver should exit normally"
        assert_all_gone(cluster_pids, stores, f"after the driver's {how}")
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        kill_quietly(still_alive(cluster_pids))


def test_normal_exit_of_the_driver_leaves_nothing_behind(tmp_path):
    run_driver_and_end_it(tmp_path, "exit")


def test_kill_9_of_the_driver_leaves_nothing_behind(tmp_path):
    run_driver_and_end_it(tmp_path, "kill")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signalled_driver_leaves_nothing_behind(tmp_path, sig):
    proc = start_driver(DRIVER, str(tmp_path / "running"), "block")
    cluster_pids: set[int] = set()
    try:
        report = read_report(proc, "READY", timeout=60)
        cluster_pids = {p.pid for p in descendants(proc.pid)} | set(report["workers"])
        stores = store_inodes(cluster_pids | {proc.pid})
        output = drain(proc)
        os.kill(proc.pid, sig)
        wait_exit(proc, 15, output)
        assert_all_gone(cluster_pids, stores, f"after {sig.name} to the driver")
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
        kill_quietly(still_alive(cluster_pids))


# ------------------------------------------------ a node never signals a pid it reaped

PID_SQUATTER = r"""
import json, os, signal, threading, time
import nbcluster as nc

nc.init(num_cpus=1)

@nc.remote
def pid():
    return os.getpid()

worker = nc.get(pid.remote(), timeout=60)
deadline = time.monotonic() + 30
while nc.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
    time.sleep(0.02)  # the idle lease goes back to the node: the worker is idle, not ours
stopped = threading.Event()
threading.Thread(target=lambda: (nc.shutdown(), stopped.set())).start()
squatter, tries = 0, 0
while not stopped.is_set() and not squatter:  # take the worker's pid once it is free
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(worker - 1))
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    tries += 1
    if child == worker:
        squatter = child
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
stopped.wait(60)
killed = None
if squatter:
    got, status = os.waitpid(squatter, os.WNOHANG)
    killed = bool(got) and os.WIFSIGNALED(status)
    if not got:
        os.kill(squatter, signal.SIGKILL)
        os.waitpid(squatter, 0)
print("RESULT " + json.dumps({"squatted": bool(squatter), "killed": killed, "tries": tries}))
"""


def test_stopping_a_node_never_kills_a_process_that_took_a_workers_pid(tmp_path):
    """Once the fork server has reaped a worker, its pid may belong to anyone: a new PID
    namespace, where the test can hand that pid to a process of its own, shows whether the
    node still signals it."""
    if shutil.which("unshare") is None:
        missing("unshare", "util-linux gives a PID namespace to squat a worker's pid in")
    env = {**os.environ, "NBCLUSTER_TEMP_DIR": str(tmp_path / "nbcluster"),
           "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", PID_SQUATTER],
        check=False, capture_output=True, text=True, timeout=120, env=env, cwd=str(REPO_ROOT),
    )  # fmt: skip
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    result = json.loads(lines[-1][len("RESULT "):])
    if not result["squatted"]:
        pytest.skip(f"the worker's pid was not free before the node stopped: {result}")
    assert result["killed"] is False, f"the node killed the pid's new owner: {result}"

"""The cluster lives exactly as long as its kernel: shutdown, restart and SIGKILL leave no
process behind, and a kernel pointed at an existing cluster attaches instead of starting one.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from kernel_helpers import KernelSession, kernelspec, new_kernel  # noqa: F401

pytestmark = pytest.mark.timeout(120)

NewKernel = Callable[..., KernelSession]


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def wait_gone(pids: list[int], timeout: float) -> float:
    """Seconds until every pid has exited; fail after ``timeout``."""
    start = time.monotonic()
    while not gone(pids):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"still running after {timeout}s: {pids}")
        psutil.wait_procs(_procs(pids), timeout=0.05)
    return time.monotonic() - start


def _procs(pids: list[int]) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return out


def cluster_pids(kernel: KernelSession) -> list[int]:
    kernel.ok("import nbcluster as nc\nassert nc.get(nc.remote(lambda: 1).remote()) == 1")
    pids = [p.pid for p in kernel.processes()]
    assert pids, "the kernel started no cluster processes"
    return pids


def test_shutdown_stops_the_cluster_within_two_seconds(new_kernel: NewKernel) -> None:  # noqa: F811
    kernel = new_kernel()
    pids = cluster_pids(kernel)
    start = time.monotonic()
    kernel.km.request_shutdown()
    elapsed = wait_gone(pids, timeout=2.0)
    assert time.monotonic() - start <= 2.0, elapsed
    kernel.km.finish_shutdown()


def test_restart_stops_the_old_cluster_and_starts_a_new_one(new_kernel: NewKernel) -> None:  # noqa: F811
    kernel = new_kernel()
    old = cluster_pids(kernel)
    start = time.monotonic()
    kernel.km.restart_kernel(now=False)
    wait_gone(old, timeout=2.0)
    assert time.monotonic() - start < 5.0
    kernel.kc.wait_for_ready(timeout=60)
    new = cluster_pids(kernel)
    assert not set(new) & set(old)


def test_sigkill_of_the_kernel_leaves_no_cluster_process(new_kernel: NewKernel) -> None:  # noqa: F811
    kernel = new_kernel()
    pids = cluster_pids(kernel)
    os.kill(kernel.pid, signal.SIGKILL)
    wait_gone([kernel.pid, *pids], timeout=10.0)


def test_kernel_attaches_to_an_existing_cluster(new_kernel: NewKernel) -> None:  # noqa: F811
    import nbcluster as nc

    started_here = not nc.is_initialized()
    info = nc.init(num_cpus=2)
    try:
        token = (Path(info["session_dir"]) / "token").read_text()
        kernel = new_kernel(NBCLUSTER_ADDRESS=info["address"], NBCLUSTER_TOKEN=token)
        cell = kernel.ok(
            "import nbcluster as nc\n"
            "(nc.init()['address'], nc.get(nc.remote(lambda: 'from the shared cluster').remote()))"
        )
        assert cell.result == repr((info["address"], "from the shared cluster"))
        assert kernel.processes() == []  # attached: it started no head of its own
        kernel.shutdown()
        assert nc.get(nc.remote(lambda: "still up").remote(), timeout=30) == "still up"
    finally:
        if started_here:
            nc.shutdown()

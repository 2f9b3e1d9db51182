"""Cross-node workloads, on a two-node cluster started on this machine.

Each framework's own command line starts two nodes, as a user would (``nbcluster start`` /
``ray start``): node A (the head, ``resources={"a": 1}``) and node B (``resources={"b": 1}``),
one CPU each, each with its own object store, talking over TCP on 127.0.0.1. The driver
attaches to the cluster (it lands on node A) and pins tasks with ``.options(resources=...)``.
Dask has no equivalent (a ``LocalCluster`` is one node), so it reports "n/a".

Everything is started in a fresh temporary directory (``NBCLUSTER_TEMP_DIR`` / ``--temp-dir``),
on free ports, and in new sessions, so that a user's own cluster is never touched: the cluster
is stopped with ``nbcluster stop`` run on that temporary directory (for Ray, by terminating the
processes of the sessions it started, not with ``ray stop``, which would stop every Ray
cluster of the user), and whatever is left in those sessions is killed.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.frameworks import Session, Unsupported
from benchmarks.workloads import MB, Measurement, Plan, measurement, noop, per_call, repeat

#: Capacity of each node's object store (both frameworks): room for the 500 MB object twice.
STORE_BYTES = 2_000_000_000
TRANSFER_BYTES = 500 * MB
#: Elements between the ones the consuming task reads: it touches every page of the array.
STRIDE = 4096
JOIN_TIMEOUT_S = 60.0


# --- bodies run by the workers ---------------------------------------------------------------


def make_array(nbytes: int) -> Any:
    import numpy as np

    return np.ones(nbytes // 8, dtype=np.float64)


def strided_sum(a: Any) -> float:
    return float(a[::STRIDE].sum())


def node_of(module_name: str) -> str:
    """The node this task runs on (``module_name`` is the framework's API module)."""
    api: Any = importlib.import_module(module_name)
    return str(api.get_runtime_context().get_node_id())


# --- starting and stopping a two-node cluster -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Nodes:
    """The processes of one two-node cluster: each start command runs in a session of its own,
    which its daemons inherit, so that stopping kills exactly those sessions."""

    def __init__(self, framework: str) -> None:
        # Short: Ray puts Unix socket paths (at most 107 bytes) under its temp dir.
        self.temp_dir = tempfile.mkdtemp(prefix=f"nbb-{framework[:2]}-")
        self.env = dict(os.environ, NBCLUSTER_TEMP_DIR=self.temp_dir)
        self.sessions: list[int] = []

    def run(self, cmd: list[str], timeout_s: float = 120.0) -> str:
        """Run a start/stop command in a new session; return its stdout."""
        proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.sessions.append(proc.pid)
        out, err = proc.communicate(timeout=timeout_s)
        if proc.returncode != 0:
            tail = " | ".join((err or out).strip().splitlines()[-3:])
            raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({proc.returncode}): {tail}")
        return out

    def leftovers(self) -> list[int]:
        me = os.getpid()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            pid = int(entry.name)
            try:
                if os.getsid(pid) in self.sessions and not _is_zombie(pid):
                    pids.append(pid)
            except OSError:
                continue
        return pids

    def kill(self, grace_s: float = 10.0) -> int:
        """SIGTERM what is left in our sessions, then SIGKILL; return how many were found."""
        found = 0
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 3.0)):
            pids = self.leftovers()
            found = found or len(pids)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait_s
            while pids and time.monotonic() < deadline and self.leftovers():
                time.sleep(0.1)
        return found

    def remove(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _wait_for_both(api: Any) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while True:
        resources = api.cluster_resources()
        if resources.get("a") and resources.get("b"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"node B did not join within {JOIN_TIMEOUT_S:.0f} s: {resources}")
        time.sleep(0.2)


def _stopper(nodes: _Nodes, shutdown: Callable[[], None], stop: Callable[[], None]) -> Any:
    def close() -> None:
        try:
            shutdown()
        finally:
            try:
                stop()
            finally:
                left = nodes.kill()
                nodes.remove()
                if left:
                    print(f"cross_node: killed {left} leftover process(es)", file=sys.stderr)

    return close


def _open_nbcluster_cluster() -> Session:
    nodes = _Nodes("nbcluster")
    token = os.urandom(16).hex()
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(STORE_BYTES)]
    nodes.env["NBCLUSTER_TOKEN"] = token  # never on a command line, where ps shows it
    cli = [sys.executable, "-m", "nbcluster"]

    def stop() -> None:
        nodes.run([*cli, "stop"], timeout_s=60)

    try:
        out = nodes.run(
            [*cli, "start", "--head", "--port", "0", "--resources", '{"a": 1}', *common]
        )
        address = next(
            line.rsplit(" ", 1)[1] for line in out.splitlines() if "head node started at" in line
        )
        nodes.run([*cli, "start", "--address", address, "--resources", '{"b": 1}', *common])
        # The driver reads the same configuration (temp dir) as the nodes.
        os.environ["NBCLUSTER_TEMP_DIR"] = nodes.temp_dir
        nc: Any = importlib.import_module("nbcluster")
        nc.init(address=address, token=token)
        _wait_for_both(nc)
    except BaseException:
        _stopper(nodes, lambda: None, stop)()
        raise
    version = str(getattr(nc, "__version__", "?"))
    return Session("nbcluster", version, nc, "nbcluster", _stopper(nodes, nc.shutdown, stop))


def _open_ray_cluster() -> Session:
    nodes = _Nodes("ray")
    # Token authentication, as a local ``ray.init()`` enables by default: set explicitly for
    # both nodes and the driver, since a joining ``ray start`` does not enable it by itself
    # (it then fails with InvalidAuthToken). The token is the user's (~/.ray/auth_token) or one
    # Ray generates.
    nodes.env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"] = "token"
    port = _free_port()
    cli = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    common = ["--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(STORE_BYTES)]
    common += ["--temp-dir", nodes.temp_dir, "--disable-usage-stats"]

    def node_ports() -> list[str]:  # two nodes on one host must not share the fixed defaults
        return [
            "--dashboard-agent-listen-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port()),
        ]  # fmt: skip

    try:
        nodes.run(
            [*cli, "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--include-dashboard=false", "--ray-client-server-port", str(_free_port()),
             "--resources", json.dumps({"a": 1}), *node_ports(), *common]
        )  # fmt: skip
        nodes.run(
            [*cli, "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
             "--resources", json.dumps({"b": 1}), *node_ports(), *common]
        )  # fmt: skip
        ray: Any = importlib.import_module("ray")
        ray.init(address=f"127.0.0.1:{port}")
        _wait_for_both(ray)
    except BaseException:
        _stopper(nodes, lambda: None, lambda: None)()
        raise
    # Stopped by terminating our own sessions' processes (``_Nodes.kill``), not ``ray stop``.
    return Session(
        "ray", str(ray.__version__), ray, "ray", _stopper(nodes, ray.shutdown, nodes.kill)
    )


def open_cluster_session(framework: str) -> Session:
    """Start a two-node cluster of ``framework`` on this machine and attach a driver to it."""
    if framework == "nbcluster":
        return _open_nbcluster_cluster()
    if framework == "ray":
        return _open_ray_cluster()
    raise Unsupported("n/a (no multi-node cluster)")


# --- workloads -------------------------------------------------------------------------------


def _pinned(api: Any, fn: Callable[..., Any], resource: str) -> Any:
    return api.remote(fn).options(resources={resource: 1})


def _nodes(session: Session) -> tuple[str, str, str]:
    """(driver's node, node A, node B), after checking that A and B differ."""
    api = session.api
    module = session.worker_module
    assert module is not None
    driver = str(api.get_runtime_context().get_node_id())
    a, b = api.get([_pinned(api, node_of, r).remote(module) for r in ("a", "b")])
    if a == b:
        raise RuntimeError(f"tasks pinned to nodes a and b both ran on node {a}")
    return driver, a, b


def cross_node_transfer_500mb(session: Session, plan: Plan) -> Measurement:
    """A 500 MB array made by a task on node A, read by a task on node B (which pulls it from
    A's store into its own); 500 MB / the consuming task's ``get``. The driver never holds the
    array: it waits for it to exist (``fetch_local=False``) before timing."""
    api = session.api
    _nodes(session)
    make = _pinned(api, make_array, "a")
    touch = _pinned(api, strided_sum, "b")

    def transfer(nbytes: int) -> float:
        ref = make.remote(nbytes)
        api.wait([ref], fetch_local=False)
        expected = float(len(range(0, nbytes // 8, STRIDE)))
        start = time.perf_counter()
        assert api.get(touch.remote(ref)) == expected
        elapsed = time.perf_counter() - start
        del ref  # at most two copies (A's and B's) alive at a time
        return elapsed

    transfer(1 * MB)  # warm-up: both nodes' workers, function definitions, connections
    times = [transfer(TRANSFER_BYTES) for _ in range(plan.reps(2, 3))]
    return measurement([TRANSFER_BYTES / t / 1e9 for t in times], nbytes=TRANSFER_BYTES)


def cross_node_round_trip(session: Session, plan: Plan) -> Measurement:
    """``get(f.remote())`` of a no-op pinned to the node the driver is not on."""
    api = session.api
    driver, a, _ = _nodes(session)
    f = _pinned(api, noop, "b" if driver == a else "a")

    def batch(n: int) -> None:
        for _ in range(n):
            api.get(f.remote())

    calls = plan.fit(plan.reps(300, 2000), batch, 100, budget_s=1.5)
    result = per_call(repeat(lambda: batch(calls), plan.reps(3, 5)), calls, 1e3)
    result.extra["driver_on_head"] = driver == a
    return result


CROSS_NODE_WORKLOADS: dict[str, Callable[[Session, Plan], Measurement]] = {
    fn.__name__: fn for fn in (cross_node_transfer_500mb, cross_node_round_trip)
}

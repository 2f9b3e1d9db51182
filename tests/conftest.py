"""Shared fixtures and helpers for the integration tests: real clusters, real processes.

Every test that needs a cluster asks for ``cluster`` (the default two-CPU cluster, shared by
the tests of a module and restarted only when needed) or ``make_cluster`` (a cluster with
special ``init`` arguments, shut down after the test). Nothing here mocks the runtime.

Helpers that tasks call (``file_barrier``, ``wait_for_file``) live here too, so that tasks in
every test module share one copy; workers import this module like any other helper module
beside the driver's code.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import nbcluster as nc
from nbcluster.runtime.config import CONFIG

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CPUS = 2
#: How long a cluster's processes and shared memory may take to disappear once it is told to.
CLEANUP_TIMEOUT_S = 10.0
#: The session files (tokens, records, logs) of every cluster this run starts without a
#: directory of its own: made when pytest starts (``pytest_configure``; not at import, since
#: workers import this module too) and inherited by every process the tests start (kernels,
#: drivers, CLI commands), so the run can check that no cluster leaves any.
SESSION_DIR = Path()


def pytest_configure(config: pytest.Config) -> None:
    global SESSION_DIR
    SESSION_DIR = Path(tempfile.mkdtemp(prefix="nbcluster-test-sessions-"))
    os.environ["NBCLUSTER_TEMP_DIR"] = CONFIG.temp_dir = str(SESSION_DIR)


# --------------------------------------------------------------------------- polling helpers


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A test whose ``get`` timed out shows what the cluster was doing then: what waited
    behind what is the whole story of such a failure, and it is gone once the test ends."""
    outcome = yield
    if call.excinfo is None or not call.excinfo.errisinstance(nc.exceptions.GetTimeoutError):
        return
    outcome.get_result().sections.append(("cluster when get timed out", cluster_snapshot()))


def cluster_snapshot() -> str:
    """Resources, unfinished tasks, live actors and each node's pending demand, as text."""
    if not nc.is_initialized():
        return "(no cluster)"
    from nbcluster.util import state

    lines = []
    try:
        lines.append(f"resources: {nc.available_resources()} free of {nc.cluster_resources()}")
        for t in state.list_tasks(limit=None):
            if t.state not in ("FINISHED", "FAILED", "CANCELLED"):
                lines.append(f"task {t.name} {t.state} attempt {t.attempt_number} worker "
                             f"{t.worker_pid} owner {t.owner_pid} since {t.creation_time_ms}")
        for a in state.list_actors(limit=None):
            if a.state != "DEAD":
                lines.append(f"actor {a.class_name} {a.state} pid {a.pid} name {a.name!r}")
        for n in state.list_nodes(limit=None):
            lines.append(f"node {n.node_id[:12]} {n.state} available {n.resources_available} "
                         f"demand {n.pending_demand}")
    except Exception as e:  # (a broken cluster is itself the answer)
        lines.append(f"could not read the cluster's state: {type(e).__name__}: {e}")
    return "\n".join(lines)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds.

    For things that become true eventually (a process exiting, a resource being released),
    never as a way to order two events.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"not true within {timeout}s: {text or predicate}")
        time.sleep(interval)


# ------------------------------------------------------------------------ process helpers


def descendants(pid: int | None = None) -> list[psutil.Process]:
    """Every live (non-zombie) descendant process of ``pid`` (default: this process)."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in procs if not is_gone(p.pid)]


def is_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting to be reaped counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def still_alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if not is_gone(pid)]


def describe(pids: Iterable[int]) -> str:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.status()} {' '.join(p.cmdline())[:200]}")
        except psutil.Error:
            out.append(f"{pid} (gone)")
    return "; ".join(out) or "(none)"


def kill_quietly(pids: Iterable[int]) -> None:
    """Last-resort cleanup of processes a failed test leaked (only ones the test recorded)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def session_files(root: Path | None = None) -> list[str]:
    """What clusters left under a session directory (default: the run's): records and
    session directories (``clusters`` and ``tls`` themselves are the user's, not a
    cluster's)."""
    root = root or SESSION_DIR
    if not root.exists():
        return []
    found = [str(p.relative_to(root)) for p in root.glob("clusters/*")]
    found += [p.name for p in root.iterdir() if p.name not in ("clusters", "tls")]
    return sorted(found)


def own_leaks(pid: int | None = None) -> dict[str, Any]:
    """What a cluster can leave in a process (default: this one), to compare before and
    after: mappings of and descriptors on a node's object store (an unnamed memfd, so
    nothing shows in /dev/shm), threads, listening TCP ports and child processes."""
    pid = os.getpid() if pid is None else pid
    proc = f"/proc/{pid}"
    try:
        with open(f"{proc}/maps") as f:
            maps = sorted({line.split()[-2] for line in f if "memfd:nbcluster" in line})
    except OSError:
        maps = []
    fds = []
    for fd in _listdir(f"{proc}/fd"):
        try:
            target = os.readlink(f"{proc}/fd/{fd}")
        except OSError:
            continue
        if "memfd:nbcluster" in target:
            fds.append(target)
    if pid == os.getpid():
        threads = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    else:
        threads = sorted(_listdir(f"{proc}/task"))
    try:
        ports = sorted(
            c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        )  # fmt: skip
    except psutil.Error:
        ports = []
    return {
        "store mappings": maps,
        "store descriptors": sorted(fds),
        "threads": threads,
        "listening ports": ports,
        "child processes": sorted(p.pid for p in descendants(pid)),
    }


def store_inodes(pids: Iterable[int]) -> set[str]:
    """The inodes of the object stores (memfds) these processes map."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                inodes.update(line.split()[4] for line in f if "memfd:nbcluster" in line)
        except OSError:
            pass
    return inodes


def still_mapped(inodes: set[str]) -> list[int]:
    """Processes anywhere on the machine that still map one of these stores: its memory is
    only freed once none does."""
    if not inodes:
        return []
    holders = []
    for name in _listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/maps") as f:
                if any("memfd:nbcluster" in line and line.split()[4] in inodes for line in f):
                    holders.append(int(name))
        except OSError:
            pass
    return holders


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


# ---------------------------------------------------------------- helpers called in tasks


def file_barrier(directory: str, parties: int, timeout: float = 20.0) -> bool:
    """Meet ``parties`` tasks at a directory; True if all arrived within ``timeout``.

    Proves tasks run at the same time: no task can pass until every one of them has started.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{os.getpid()}-{uuid.uuid4().hex}").touch()
    deadline = time.monotonic() + timeout
    while len(list(d.iterdir())) < parties:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def wait_for_file(path: str, timeout: float = 60.0) -> bool:
    """Block until ``path`` exists (the test's gate opens); False on timeout."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def write_pid(path: str) -> int:
    """Record this process's pid in ``path`` atomically, so a reader never sees half of it."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    Path(tmp).write_text(str(os.getpid()))
    os.replace(tmp, path)
    return os.getpid()


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


# ------------------------------------------------------------------ separate driver scripts


def start_driver(script: str, *args: str) -> subprocess.Popen[bytes]:
    """Run ``python -c script`` as a separate driver process (its stdout merged with stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(REPO_ROOT),
        env=env,
    )


def read_report(proc: subprocess.Popen[bytes], tag: str, timeout: float = 60.0) -> Any:
    """Read the driver's output until a line ``<tag> <json>``; return the decoded JSON."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    prefix = f"{tag} ".encode()
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        for line in buf.split(b"\n")[:-1]:  # whole lines only: a report may arrive in parts
            if line.startswith(prefix):
                return json.loads(line[len(prefix) :])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"driver did not print {tag!r} in {timeout}s; output:\n{buf.decode()}"
            )
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                code = proc.wait(timeout=5)
                raise AssertionError(
                    f"driver exited with {code} before printing {tag!r}; output:\n{buf.decode()}"
                )
            buf += chunk


# -------------------------------------------------------------------------------- clusters


class Clusters:
    """Keeps at most one cluster running in this process, restarting it only when the
    arguments a test needs differ from those of the running one."""

    def __init__(self) -> None:
        self.args: dict[str, Any] | None = None

    def start(self, **init_args: Any) -> None:
        if nc.is_initialized() and self.args == init_args and self._healthy():
            return
        self.stop()
        nc.init(**init_args)
        self.args = init_args

    def stop(self) -> None:
        gc.collect()  # drop ObjectRefs from finished tests before their cluster goes away
        if nc.is_initialized():
            nc.shutdown()
        self.args = None

    @staticmethod
    def _healthy() -> bool:
        """A previous test may have left the shared cluster broken; start afresh if so."""
        try:
            return nc.get(nc.remote(_ping).remote(), timeout=10) == "pong"
        except Exception:
            return False


def _ping() -> str:
    return "pong"


_CLUSTERS = Clusters()


@pytest.fixture
def clusters() -> Clusters:
    """The process's cluster manager, for tests that drive ``init``/``shutdown`` themselves."""
    return _CLUSTERS


@pytest.fixture
def cluster() -> Iterator[Any]:
    """The default cluster: ``nc.init(num_cpus=2)``, shared with the module's other tests."""
    _CLUSTERS.start(num_cpus=DEFAULT_CPUS)
    yield nc


@pytest.fixture
def make_cluster() -> Iterator[Callable[..., Any]]:
    """Start a cluster with special ``init`` arguments; it is shut down after the test."""

    def start(**init_args: Any) -> Any:
        _CLUSTERS.start(**init_args)
        return nc

    yield start
    _CLUSTERS.stop()


@pytest.fixture
def no_cluster() -> Iterator[None]:
    """No cluster is running when the test starts; none is left running after it."""
    _CLUSTERS.stop()
    yield
    _CLUSTERS.stop()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """A file tasks wait for (``wait_for_file``); the test opens it by creating it, and it is
    opened after the test in any case, so no blocked task outlives a failed test."""
    path = tmp_path / "gate"
    yield path
    path.touch()


@pytest.fixture(scope="module", autouse=True)
def _cluster_per_module() -> Iterator[None]:
    """Each module starts without a cluster and shuts down whatever it started."""
    yield
    _CLUSTERS.stop()


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_behind() -> Iterator[None]:
    """After the whole run, no process, thread, port or store mapping of ours may remain."""
    before = own_leaks()
    yield
    _CLUSTERS.stop()
    gc.collect()
    try:
        wait_until(
            lambda: not descendants(),
            timeout=CLEANUP_TIMEOUT_S,
            message=lambda: "child processes left: " + describe(p.pid for p in descendants()),
        )
        wait_until(
            lambda: own_leaks() == before,
            timeout=CLEANUP_TIMEOUT_S,
            message=lambda: f"left behind: {own_leaks()} (at the start: {before})",
        )
    finally:
        kill_quietly(p.pid for p in descendants())

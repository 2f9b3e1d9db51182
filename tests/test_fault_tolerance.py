"""What survives what: each failure of the README's table, injected for real, and what the
user sees afterwards.

Workers, actors, owners, memory and the object store are failed on a local cluster
(``nc.init``). Nodes and heads are failed on clusters started with the CLI as a user starts
them, under a temporary ``NBCLUSTER_TEMP_DIR``, with ``NBCLUSTER_NODE_TIMEOUT_S=2``: a node
*dies* by SIGKILL to its whole process group (agent, fork server, workers), and is *cut off*
by SIGSTOP to it, so that its sockets stay open and nothing answers, which is what a network
partition looks like from the other side. The random mix of all of these under a workload is
``tests/faults/``.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cluster_helpers import REPO_ROOT, CliCluster, attach, node_entry, node_id_of
from conftest import Clusters, is_gone, read_pid, read_report, wait_for_file, wait_until, write_pid
from faults.helpers import (
    DEATHS,
    big,
    big_sum,
    cut_off,
    dead_entry,
    join,
    kill_node,
    node_of_this_task,
    record,
    runs,
    used_memory,
)

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.runtime.scheduling.placement import NodeAffinitySchedulingStrategy

#: A task waiting for a node with its resources warns that it is pending: expected here,
#: where such tasks wait for the replacement of a node that died.
pytestmark = pytest.mark.filterwarnings("ignore:A task requires:UserWarning")

#: Seconds any single step may take on a loaded 2-core machine (healthy: well under one).
T = 60
MiB = 1 << 20
GiB = 1 << 30


@nc.remote
def ping() -> str:
    return "pong"


def assert_cluster_works() -> None:
    assert nc.get([ping.remote() for _ in range(4)], timeout=T) == ["pong"] * 4


# ------------------------------------------------------------------ a worker dies mid-task


@nc.remote
def die_the_first_times(directory: str, how: str, deaths: int) -> int:
    """Die ``deaths`` times (one way of ``DEATHS``), then return the attempt number."""
    attempt = record(directory)
    if attempt < deaths:
        DEATHS[how]()
    return attempt


@pytest.mark.parametrize("how", sorted(DEATHS))
def test_a_worker_that_dies_mid_task_is_retried_while_max_retries_allows(
    cluster: Any, tmp_path: Path, how: str
) -> None:
    task = die_the_first_times.options(max_retries=2)
    assert nc.get(task.remote(str(tmp_path / "twice"), how, 2), timeout=T) == 2
    assert runs(tmp_path / "twice") == 3

    with pytest.raises(exc.WorkerCrashedError, match="retries left: 0"):
        nc.get(task.remote(str(tmp_path / "always"), how, 100), timeout=T)
    assert runs(tmp_path / "always") == 3  # the first try and two retries
    assert_cluster_works()


def test_retries_default_to_three_and_minus_one_retries_forever(
    cluster: Any, tmp_path: Path
) -> None:
    forever = die_the_first_times.options(max_retries=-1)
    assert nc.get(forever.remote(str(tmp_path / "forever"), "os_exit", 6), timeout=T) == 6
    assert runs(tmp_path / "forever") == 7

    with pytest.raises(exc.WorkerCrashedError):
        nc.get(die_the_first_times.remote(str(tmp_path / "default"), "sigkill", 100), timeout=T)
    assert runs(tmp_path / "default") == 4


@nc.remote
def hold(gate: str, pid_file: str, directory: str) -> tuple[int, int]:
    """Run until ``gate`` opens; (attempt number, pid)."""
    attempt = record(directory)
    write_pid(pid_file)
    wait_for_file(gate)
    return attempt, os.getpid()


def test_a_worker_killed_from_outside_mid_task_is_retried_on_another_worker(
    cluster: Any, tmp_path: Path
) -> None:
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    ref = hold.remote(str(gate), str(pid_file), str(tmp_path / "runs"))
    first = wait_until(lambda: read_pid(pid_file), T)
    pid_file.unlink()
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: read_pid(pid_file), T)  # the retry is running
    gate.touch()
    assert nc.get(ref, timeout=T) == (1, second)
    assert second != first


class DiesWhenPickled:
    """As a task's second return value: pickling it kills the worker, the first time only,
    after the first (large) return value is already sealed in the node's store."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __reduce__(self) -> Any:
        if record(self.directory) == 0:
            nc.put(b"x" * 200_000)  # a round trip to the agent: the first result's seal is in
            os._exit(1)
        return (str, ("second",))


@nc.remote(num_returns=2)
def big_then_die(k: float, directory: str) -> tuple[np.ndarray, DiesWhenPickled]:
    return big(k), DiesWhenPickled(directory)


def test_a_task_whose_worker_died_after_storing_its_result_is_retried(
    cluster: Any, tmp_path: Path
) -> None:
    first, second = big_then_die.remote(3, str(tmp_path / "attempts"))
    assert float(nc.get(first, timeout=T).sum()) == big_sum(3)
    assert nc.get(second, timeout=T) == "second"
    assert runs(tmp_path / "attempts") == 2


class TooManyAttempts(Exception):
    """A user's exception class, to retry by name."""


@nc.remote
def raise_the_first_times(directory: str, failures: int, error: str) -> int:
    attempt = record(directory)
    if attempt < failures:
        kind = {"ValueError": ValueError, "KeyError": KeyError, "own": TooManyAttempts}[error]
        raise kind(f"attempt {attempt} failed")
    return attempt


def test_application_exceptions_are_retried_only_when_asked(cluster: Any, tmp_path: Path) -> None:
    def d(name: str) -> str:
        return str(tmp_path / name)

    # Not by default, whatever max_retries allows.
    with pytest.raises(ValueError, match="attempt 0 failed"):
        nc.get(raise_the_first_times.options(max_retries=3).remote(d("a"), 1, "ValueError"))
    assert runs(d("a")) == 1

    # retry_exceptions=True: any exception, while max_retries allows.
    every = raise_the_first_times.options(max_retries=3, retry_exceptions=True)
    assert nc.get(every.remote(d("b"), 3, "own"), timeout=T) == 3

    # A list: only those classes are retried; the last error is raised once retries are spent.
    listed = raise_the_first_times.options(
        max_retries=3, retry_exceptions=[ValueError, TooManyAttempts]
    )
    assert nc.get(listed.remote(d("c"), 2, "ValueError"), timeout=T) == 2
    assert runs(d("c")) == 3
    with pytest.raises(KeyError, match="attempt 0 failed"):
        nc.get(listed.remote(d("d"), 2, "KeyError"), timeout=T)
    assert runs(d("d")) == 1
    with pytest.raises(TooManyAttempts, match="attempt 3 failed"):
        nc.get(listed.remote(d("e"), 100, "own"), timeout=T)
    assert runs(d("e")) == 4


# ----------------------------------------------------------- an actor's process dies, under load

CALLS = 1000


@nc.remote
class Doubler:
    def __init__(self, inits: str) -> None:
        record(inits)  # counts constructor runs: one per (re)start

    def pid(self) -> int:
        return os.getpid()

    def double(self, x: int, gate: str = "") -> int:
        if gate:  # held until the test opens the gate: still in flight at the kill
            wait_for_file(gate)
        return 2 * x


def kill_under_load(actor: Any, gate: Path) -> tuple[list[Any], int]:
    """Send CALLS calls, SIGKILL the actor's process once the first fifth are done, while
    the rest wait behind ``gate`` (opened after the kill, for calls retried by a restarted
    actor); the calls' refs, and its pid."""
    pid = nc.get(actor.pid.remote(), timeout=T)
    free = CALLS // 5
    refs = [actor.double.remote(i, "" if i < free else str(gate)) for i in range(CALLS)]
    nc.wait(refs, num_returns=free, timeout=T)
    os.kill(pid, signal.SIGKILL)
    gate.touch()
    return refs, pid


def test_an_actor_killed_under_load_restarts_and_retries_every_call_in_flight(
    cluster: Any, tmp_path: Path
) -> None:
    inits = tmp_path / "inits"
    actor = Doubler.options(max_restarts=1, max_task_retries=-1).remote(str(inits))
    refs, first = kill_under_load(actor, tmp_path / "gate")
    assert nc.get(refs, timeout=T) == [2 * i for i in range(CALLS)]
    assert nc.get(actor.pid.remote(), timeout=T) != first
    assert runs(inits) == 2  # the constructor ran again


def test_an_actor_killed_under_load_without_task_retries_fails_the_calls_in_flight(
    cluster: Any, tmp_path: Path
) -> None:
    actor = Doubler.options(max_restarts=1).remote(str(tmp_path / "inits"))
    refs, _ = kill_under_load(actor, tmp_path / "gate")
    outcomes: list[Any] = []
    t0 = time.monotonic()
    for i, ref in enumerate(refs):
        try:
            outcomes.append(nc.get(ref, timeout=T) == 2 * i)
        except exc.ActorDiedError:
            outcomes.append("died")
    assert time.monotonic() - t0 < T / 2, "the failed calls were slow to fail"
    done = outcomes.count(True)
    # Calls run in order: those done before the kill are a prefix; every later one failed.
    assert outcomes == [True] * done + ["died"] * (CALLS - done)
    assert done == CALLS // 5
    # The actor itself restarted: new calls are served.
    assert nc.get(actor.double.remote(21), timeout=T) == 42


def test_an_actor_out_of_restarts_fails_pending_and_new_calls_with_actor_died(
    cluster: Any, tmp_path: Path
) -> None:
    actor = Doubler.options(max_restarts=1, max_task_retries=-1).remote(str(tmp_path / "inits"))
    refs, _ = kill_under_load(actor, tmp_path / "gate1")
    assert nc.get(refs, timeout=T) == [2 * i for i in range(CALLS)]  # restart 1 of 1
    refs, _ = kill_under_load(actor, tmp_path / "gate2")  # and no restart left
    died = 0
    for i, ref in enumerate(refs):
        try:
            assert nc.get(ref, timeout=T) == 2 * i
        except exc.ActorDiedError as e:
            assert "max_restarts" in str(e), e
            died += 1
    assert died > 0
    with pytest.raises(exc.ActorDiedError, match="max_restarts"):
        nc.get(actor.double.remote(1), timeout=T)


# ------------------------------------------------------------------------- an owner dies


@nc.remote
class Borrower:
    """Keeps refs it was lent, and reads them only when asked."""

    def __init__(self) -> None:
        self.refs: list[Any] = []

    def keep(self, refs: list[Any]) -> int:
        self.refs = refs
        return len(refs)

    def read(self, started: str = "") -> list[Any]:
        """For each ref: ["value", its length], or [error class, seconds get took, message]."""
        if started:
            Path(started).touch()
        out: list[Any] = []
        for ref in self.refs:
            t0 = time.monotonic()
            try:
                value = nc.get(ref, timeout=60)
                out.append(["value", len(value)])
            except Exception as e:
                out.append([type(e).__name__, round(time.monotonic() - t0, 2), str(e)])
        return out


@nc.remote(max_retries=0)
def lend(borrower: Any, size: int) -> int:
    """Put an object (this worker owns it), lend it to ``borrower``; this worker's pid."""
    ref = nc.put(b"x" * size)
    assert nc.get(borrower.keep.remote([ref])) == 1
    return os.getpid()


@pytest.mark.parametrize("size", [100, 2 * MiB], ids=["inline", "in_the_store"])
def test_a_borrower_of_a_dead_tasks_object_gets_owner_died(cluster: Any, size: int) -> None:
    borrower = Borrower.remote()
    owner = nc.get(lend.remote(borrower, size), timeout=T)
    os.kill(owner, signal.SIGKILL)
    wait_until(lambda: is_gone(owner), T)
    [(what, waited, why)] = nc.get(borrower.read.remote(), timeout=T)
    assert what == "OwnerDiedError", why
    assert waited < 10


@nc.remote(max_retries=0)
def lend_pending_and_hang(borrower: Any, gate: str, pid_file: str, runs_dir: str) -> None:
    """Lend ``borrower`` the ref of a task that is still running, then hang until killed."""
    child = hold.remote(gate, pid_file + ".child", runs_dir)
    assert nc.get(borrower.keep.remote([child])) == 1
    write_pid(pid_file)
    wait_for_file(gate)


def test_a_borrower_waiting_on_a_dead_owners_object_gets_owner_died_not_a_hang(
    cluster: Any, tmp_path: Path
) -> None:
    borrower = Borrower.remote()
    gate, pid_file, started = tmp_path / "gate", tmp_path / "owner", tmp_path / "reading"
    owner_task = lend_pending_and_hang.remote(
        borrower, str(gate), str(pid_file), str(tmp_path / "runs")
    )
    owner = wait_until(lambda: read_pid(pid_file), T)
    reading = borrower.read.remote(str(started))  # blocks in get: the object is not ready
    wait_until(started.exists, T)
    os.kill(owner, signal.SIGKILL)
    try:
        [(what, waited, why)] = nc.get(reading, timeout=T)
        assert what == "OwnerDiedError", why
        assert waited < 10
        with pytest.raises(exc.WorkerCrashedError):
            nc.get(owner_task, timeout=T)
    finally:
        gate.touch()


KILLED_DRIVER = r"""
import json, os, signal, sys
import numpy as np
import nbcluster as nc

nc.init(address=sys.argv[1], token=sys.argv[2])

@nc.remote
class Holder:
    def __init__(self):
        self.refs = []
    def keep(self, refs):
        self.refs = refs
        return len(refs)
    def read(self):
        out = []
        for ref in self.refs:
            try:
                out.append(["value", int(len(nc.get(ref, timeout=60)))])
            except Exception as e:
                out.append([type(e).__name__, str(e)])
        return out

holder = Holder.options(name=sys.argv[3], lifetime="detached").remote()
refs = [nc.put(np.arange(10)), nc.put(np.full(1 << 20, 7.0))]  # inline, and in the store
assert nc.get(holder.keep.remote(refs)) == 2
print("READY " + json.dumps({"pid": os.getpid()}), flush=True)
signal.pause()  # until killed
"""


def test_a_detached_actor_holding_a_killed_drivers_objects_gets_owner_died(
    cluster: Any, tmp_path: Path
) -> None:
    info = nc.init()
    token = Path(info["session_dir"], "token").read_text().strip()
    name = f"holder-{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_DRIVER, info["address"], token, name],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=str(REPO_ROOT), env=env,
    )  # fmt: skip
    try:
        assert read_report(proc, "READY", timeout=T)["pid"] == proc.pid
        proc.kill()
        proc.wait(T)
        holder = nc.get_actor(name)  # detached: it outlives the driver that made it
        t0 = time.monotonic()
        got = nc.get(holder.read.remote(), timeout=T)
        assert [what for what, _ in got] == ["OwnerDiedError", "OwnerDiedError"], got
        assert time.monotonic() - t0 < 10
        nc.kill(holder)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


# ------------------------------------------------------------------------ memory pressure


@nc.remote
def bystander(started: str, gate: str, directory: str) -> str:
    record(directory)
    Path(started).touch()
    wait_for_file(gate)
    return "done"


@nc.remote(num_cpus=0.99)  # a shape of its own: a fresh lease, so the newest task is the hog
def hog(directory: str) -> int:
    """Allocate 100 MB at a time, up to 4 GB: far past the limit the test sets."""
    record(directory)
    chunks = []
    for _ in range(40):
        chunks.append(np.ones(100 * MiB // 8))
    return len(chunks)


def test_memory_monitor_kills_the_newest_task_and_the_rest_carry_on(
    make_cluster: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The limit is what the machine uses now plus 1 GiB, so the machine is never at risk.
    monkeypatch.setenv("NBCLUSTER_MEMORY_LIMIT_BYTES", str(used_memory() + GiB))
    make_cluster(num_cpus=2, resources={"memory_test": 1})
    nodes_before = [n["NodeID"] for n in nc.nodes()]
    started, gate = tmp_path / "started", tmp_path / "gate"
    older = bystander.remote(str(started), str(gate), str(tmp_path / "bystander"))
    wait_until(started.exists, T)
    try:
        with pytest.raises(exc.OutOfMemoryError, match="low on memory") as info:
            nc.get(hog.options(max_retries=1).remote(str(tmp_path / "hog")), timeout=T)
        assert "newest task" in str(info.value)
        assert runs(tmp_path / "hog") == 2  # killed, retried once, killed again
    finally:
        gate.touch()
    # The older task was never touched; the node lives on and runs new work.
    assert nc.get(older, timeout=T) == "done"
    assert runs(tmp_path / "bystander") == 1
    assert [n["NodeID"] for n in nc.nodes() if n["Alive"]] == nodes_before
    assert_cluster_works()


def assert_intact(held: list[np.ndarray]) -> None:
    """Each array the user holds from ``get`` still reads as it was put (key k: all k)."""
    for k, a in enumerate(held):
        assert a[0] == k and a[-1] == k and float(a.sum()) == big_sum(k), (
            f"the array of key {k} from get() now starts with {a[0]} and ends with {a[-1]}"
        )


def test_a_store_full_of_pinned_objects_refuses_more_and_loses_nothing(
    make_cluster: Any,
) -> None:
    make_cluster(num_cpus=1, object_store_memory=350 * MiB)
    refs: list[Any] = []
    held: list[np.ndarray] = []  # zero-copy views into the store: they pin their objects
    with pytest.raises(exc.ObjectStoreFullError):
        for k in range(8):
            refs.append(nc.put(big(k)))
            held.append(nc.get(refs[-1]))
            assert_intact(held)
    assert 2 <= len(held) <= 3
    assert_intact(held)
    # Once the views go, the store makes room (spilling) and every object is still there.
    del held
    more = [nc.put(big(k)) for k in range(len(refs), len(refs) + 3)]
    for k, ref in enumerate(refs + more):
        assert float(nc.get(ref, timeout=T).sum()) == big_sum(k)


def test_a_task_result_larger_than_the_store_raises_object_store_full(make_cluster: Any) -> None:
    make_cluster(num_cpus=1, object_store_memory=50 * MiB)
    with pytest.raises(exc.ObjectStoreFullError) as info:
        nc.get(nc.remote(big).remote(1), timeout=T)  # 100 MB for a 50 MB store
    assert isinstance(info.value, MemoryError)
    assert_cluster_works()


# ------------------------------------------------------------- nodes that die or are cut off


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """A head with one CPU started with the CLI; each test joins the nodes it fails."""
    cluster = CliCluster(tmp_path_factory.mktemp("nodes"), NBCLUSTER_NODE_TIMEOUT_S="2")
    try:
        cluster.start_head("--num-cpus", "1", "--object-store-memory", str(GiB))
        yield cluster
    finally:
        nc.shutdown()
        cluster.close()


@pytest.fixture
def nodes(node_cluster: CliCluster, clusters: Clusters) -> CliCluster:
    """The CLI cluster, with this process attached to it as a driver."""
    if clusters.args is not None:
        clusters.stop()  # a local cluster of an earlier test
    attach(node_cluster.head.address, node_cluster.token)
    return node_cluster


@nc.remote
def make_big(k: float, directory: str) -> np.ndarray:
    record(directory)
    return big(k)


@nc.remote
def add(a: np.ndarray, d: float, directory: str) -> np.ndarray:
    record(directory)
    return a + d


@nc.remote
def total(a: np.ndarray) -> float:
    return float(a.sum())


@nc.remote
def put_here(k: float) -> list[Any]:
    """A ref owned by this worker, to an object in this node's store."""
    return [nc.put(big(k))]


@nc.remote
class Maker:
    def make(self, k: float) -> np.ndarray:
        return big(k)


@nc.remote
def where() -> str:
    return node_of_this_task()


@nc.remote
def held_until(gate: str, started: str) -> str:
    """Hold a CPU until ``gate`` opens; the node the task finished on."""
    Path(started).touch()
    wait_for_file(gate)
    return node_of_this_task()


def test_objects_lost_with_a_killed_node_are_rebuilt_from_lineage(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "doomed", '{"doomed": 4}')
    on = {"resources": {"doomed": 1}}
    made, added = tmp_path / "made", tmp_path / "added"
    a = make_big.options(**on).remote(1, str(made))
    b = add.options(**on).remote(a, 1, str(added))  # b's argument is a: both live only there
    assert nc.get(total.options(**on).remote(b), timeout=T) == big_sum(2)
    # Objects no lineage can rebuild: one whose owner is a worker there, an actor's result.
    [owned_there] = nc.get(put_here.options(**on).remote(5), timeout=T)
    maker = Maker.options(resources={"doomed": 1}).remote()
    from_actor = maker.make.remote(6)
    nc.wait([from_actor], timeout=T)

    kill_node(node)
    assert dead_entry(node_id, timeout=10)["DeathReason"]
    _, replacement = join(nodes, "doomed-replacement", '{"doomed": 4}')

    t0 = time.monotonic()
    assert float(nc.get(b, timeout=T).sum()) == big_sum(2)
    assert float(nc.get(a, timeout=T).sum()) == big_sum(1)
    print(f"\nrebuilt two 100 MB objects, one from the other, in {time.monotonic() - t0:.2f}s")
    assert (runs(made), runs(added)) == (2, 2)  # each rebuilt once, the argument first
    assert nc.get(total.options(**on).remote(b), timeout=T) == big_sum(2)
    assert nc.get(where.options(**on).remote(), timeout=T) == replacement
    with pytest.raises(exc.OwnerDiedError):
        nc.get(owned_there, timeout=T)
    with pytest.raises(exc.ObjectLostError) as lost:
        nc.get(from_actor, timeout=T)
    assert not isinstance(lost.value, exc.OwnerDiedError)


def test_an_object_is_rebuilt_on_a_node_that_holds_a_copy_of_it(
    nodes: CliCluster, tmp_path: Path
) -> None:
    first, first_id = join(nodes, "copy-maker", '{"copies": 1, "copy_maker": 1}')
    second, _ = join(nodes, "copy-reader", '{"copies": 1, "copy_reader": 1}')
    made = tmp_path / "made"
    try:
        there = NodeAffinitySchedulingStrategy(first_id, soft=True)
        ref = make_big.options(resources={"copies": 1}, scheduling_strategy=there).remote(
            7, str(made)
        )
        # Read on the other node: it pulls a copy into its store.
        assert nc.get(total.options(resources={"copy_reader": 1}).remote(ref)) == big_sum(7)
        kill_node(first)
        dead_entry(first_id, timeout=10)
        value = nc.get(ref, timeout=T)  # rebuilt on the only node that fits: the reader
        assert float(value.sum()) == big_sum(7)
        assert runs(made) in (1, 2)  # the copy was used, or the task ran again
    finally:
        kill_node(second)


@nc.remote
class Where:
    def node(self) -> str:
        return node_of_this_task()


def test_a_restartable_actor_on_a_killed_node_restarts_on_its_replacement(
    nodes: CliCluster,
) -> None:
    node, node_id = join(nodes, "actor-home", '{"actor_home": 1}')
    actor = Where.options(
        resources={"actor_home": 1}, max_restarts=-1, max_task_retries=-1
    ).remote()
    assert nc.get(actor.node.remote(), timeout=T) == node_id
    kill_node(node)
    dead_entry(node_id, timeout=10)
    replacement, replacement_id = join(nodes, "actor-home-replacement", '{"actor_home": 1}')
    try:
        assert nc.get(actor.node.remote(), timeout=T) == replacement_id
    finally:
        kill_node(replacement)


def test_a_restarting_actor_survives_the_death_of_the_node_it_restarts_on(
    nodes: CliCluster,
) -> None:
    home, home_id = join(nodes, "spot-1", '{"spot": 1}')
    actor = Where.options(resources={"spot": 1}, max_restarts=-1, max_task_retries=-1).remote()
    assert nc.get(actor.node.remote(), timeout=T) == home_id
    other, other_id = join(nodes, "spot-2", '{"spot": 1}')
    squatter = Where.options(resources={"spot": 1}).remote()  # holds the other node's spot
    assert nc.get(squatter.node.remote(), timeout=T) == other_id
    kill_node(home)  # the actor restarts on the other node, waiting for the spot there...
    dead_entry(home_id, timeout=10)
    kill_node(other)  # ...which dies too
    dead_entry(other_id, timeout=10)
    later, later_id = join(nodes, "spot-3", '{"spot": 1}')
    try:
        assert nc.get(actor.node.remote(), timeout=T) == later_id  # it waited for a node
    finally:
        kill_node(later)


@nc.remote
def make_small(k: float) -> np.ndarray:
    """512 KB: in the store (over 100 KiB), too small to draw tasks to its node (under 1 MB)."""
    return np.full(1 << 16, k, dtype=np.float64)


def test_a_task_whose_argument_is_lost_while_fetched_runs_again_once_it_is_rebuilt(
    nodes: CliCluster,
) -> None:
    source, source_id = join(nodes, "arg-source", '{"arg_source": 1}')
    reader, _ = join(nodes, "arg-reader", '{"arg_reader": 1}')
    try:
        arg = make_small.options(resources={"arg_source": 1}).remote(3)
        nc.wait([arg], timeout=T)
        cut_off(source)  # the owner does not know yet: the task goes out with the old location
        task = total.options(resources={"arg_reader": 1}).remote(arg)
        dead_entry(source_id, timeout=15)  # meanwhile the reader pulls from the silent node
        kill_node(source)  # and now that pull fails
        join(nodes, "arg-source-replacement", '{"arg_source": 1}')
        assert nc.get(task, timeout=T) == 3.0 * (1 << 16)
    finally:
        kill_node(source)
        kill_node(reader)


def test_tasks_running_and_waiting_on_a_killed_node_run_on_its_replacement(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, _ = join(nodes, "busy", '{"busy": 4}')
    gate, started = tmp_path / "gate", tmp_path / "started"
    running = held_until.options(resources={"busy": 1}).remote(str(gate), str(started))
    wait_until(started.exists, T)
    # Another shape, waiting for the node's only CPU.
    waiting = [
        held_until.options(resources={"busy": 2}).remote(str(gate), str(tmp_path / f"w{i}"))
        for i in range(3)
    ]
    assert_cluster_works()  # a round trip: the waiting tasks' lease requests reached the node
    kill_node(node)
    _, replacement = join(nodes, "busy-replacement", '{"busy": 4}')
    gate.touch()
    assert nc.get([running, *waiting], timeout=T) == [replacement] * 4


@nc.remote
def total_when_open(a: np.ndarray, gate: str, started: str) -> tuple[float, str]:
    """Sum ``a`` once ``gate`` opens; (the sum, the node the task finished on)."""
    Path(started).touch()
    wait_for_file(gate)
    return float(a.sum()), node_of_this_task()


def test_a_task_running_beside_its_argument_on_a_killed_node_runs_on_its_replacement(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "beside", '{"beside": 1}')
    on = {"resources": {"beside": 1}}
    a = make_big.options(**on).remote(2, str(tmp_path / "made"))
    nc.wait([a], timeout=T)
    gate, started = tmp_path / "gate", tmp_path / "started"
    task = total_when_open.options(**on).remote(a, str(gate), str(started))  # runs beside a
    wait_until(started.exists, T)
    kill_node(node)
    dead_entry(node_id, timeout=10)
    replacement, replacement_id = join(nodes, "beside-replacement", '{"beside": 1}')
    gate.touch()
    try:
        assert nc.get(task, timeout=T) == (big_sum(2), replacement_id)
    finally:
        kill_node(replacement)


def test_a_node_cut_off_is_declared_dead_after_the_timeout_and_its_work_redone(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "cut", '{"cut": 4}')
    on = {"resources": {"cut": 1}}
    made = tmp_path / "made"
    a = make_big.options(**on).remote(3, str(made))
    b = add.options(**on).remote(a, 1, str(tmp_path / "added"))
    nc.wait([b], timeout=T)
    gate, started = tmp_path / "gate", tmp_path / "started"
    running = held_until.options(**on).remote(str(gate), str(started))
    wait_until(started.exists, T)
    try:
        t0 = cut_off(node)
        entry = dead_entry(node_id, timeout=15)
        silent = time.monotonic() - t0
        assert "heartbeat" in entry["DeathReason"], entry
        assert 0.5 <= silent < 10, f"declared dead after {silent:.1f}s (timeout 2 s)"
        _, replacement = join(nodes, "cut-replacement", '{"cut": 4}')
        gate.touch()
        assert nc.get(running, timeout=T) == replacement
        assert float(nc.get(b, timeout=T).sum()) == big_sum(4)
        assert runs(made) == 2
    finally:
        gate.touch()
        kill_node(node)


def test_tasks_waiting_for_a_node_that_is_cut_off_run_on_its_replacement(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "island", '{"island": 4}')
    gate, started = tmp_path / "gate", tmp_path / "started"
    try:
        running = held_until.options(resources={"island": 1}).remote(str(gate), str(started))
        wait_until(started.exists, T)
        waiting = [
            held_until.options(resources={"island": 2}).remote(str(gate), str(tmp_path / f"{i}"))
            for i in range(3)
        ]
        assert_cluster_works()  # a round trip: the waiting tasks' lease requests reached it
        cut_off(node)
        dead_entry(node_id, timeout=15)
        _, replacement = join(nodes, "island-replacement", '{"island": 4}')
        gate.touch()
        assert nc.get([running, *waiting], timeout=T) == [replacement] * 4
    finally:
        gate.touch()
        kill_node(node)


def test_a_get_from_a_frozen_node_keeps_its_timeout_and_moves_on_once_the_node_is_dead(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "frozen", '{"frozen": 1}')
    made = tmp_path / "made"
    there = NodeAffinitySchedulingStrategy(node_id, soft=True)
    ref = make_big.options(scheduling_strategy=there).remote(8, str(made))
    nc.wait([ref], timeout=T, fetch_local=False)
    try:
        cut_off(node)  # the object's only copy is on a node that answers nothing
        t0 = time.monotonic()
        with pytest.raises(exc.GetTimeoutError):
            nc.get(ref, timeout=1)
        assert time.monotonic() - t0 < 1 + 2, "get did not keep its timeout"
        # Without a timeout, the get waits until the node is declared dead; then the pull
        # from it is given up and the object rebuilt here.
        assert float(nc.get(ref, timeout=T).sum()) == big_sum(8)
        assert not node_entry(node_id)["Alive"]
        assert runs(made) == 2
    finally:
        kill_node(node)


def test_a_reader_that_stops_reading_does_not_pin_the_object_forever(
    nodes: CliCluster, tmp_path: Path
) -> None:
    """A node pulling an object that freezes mid-transfer: the sender gives up once it
    makes no progress for the node timeout, and releases its pin on the object."""
    import socket

    from nbcluster.runtime.objects import transfer
    from nbcluster.runtime.ownership.object_ref import get_core

    on_head = NodeAffinitySchedulingStrategy(node_id_of(nodes.head.address))
    ref = make_big.options(scheduling_strategy=on_head).remote(9, str(tmp_path / "made"))
    nc.wait([ref], timeout=T, fetch_local=False)
    core = get_core()
    head = next(v for v in core.head_call("cluster_view", timeout=T).values()
                if v["address"] == nodes.head.address)  # fmt: skip

    def pins() -> int:
        objects = core.agent_call("store_objects", timeout=T)
        return next(o["pins"] for o in objects if o["oid"] == ref.hex())

    host, port = head["transfer"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=T) as sock:
        transfer.client_handshake(sock, nodes.token)
        sock.sendall(bytes([len(ref.binary())]) + ref.binary())
        sock.recv(1 << 20)  # the first bytes of 100 MB, then nothing more: frozen
        assert pins() == 1, "the sender pins the object while it sends"
        t0 = time.monotonic()
        wait_until(lambda: pins() == 0, T, message="the stalled transfer still pins it")
        assert time.monotonic() - t0 < 2 + 5  # the node timeout, and slack for load
    assert float(nc.get(ref, timeout=T).sum()) == big_sum(9)


EVICTING_DRIVER = r"""
import json, sys
import numpy as np
import nbcluster as nc

nc.init()  # NBCLUSTER_ADDRESS, NBCLUSTER_TOKEN; NBCLUSTER_MAX_LINEAGE_TASKS=2

@nc.remote(resources={"evicting": 1})
def make(k):
    return np.full(1 << 18, k, dtype=np.float64)  # 2 MB: in the node's store

refs = []
for k in range(4):  # one after another: the lineage kept is that of the last two
    refs.append(make.remote(k))
    nc.wait(refs[-1:])
print("READY {}", flush=True)
sys.stdin.readline()  # the node dies and a replacement joins meanwhile
out = []
for ref in refs:
    try:
        out.append(["value", float(nc.get(ref, timeout=60)[0])])
    except Exception as e:
        out.append([type(e).__name__, str(e)])
print("RESULT " + json.dumps(out), flush=True)
"""


def test_objects_whose_lineage_was_evicted_fail_with_reconstruction_failed(
    nodes: CliCluster, tmp_path: Path
) -> None:
    node, node_id = join(nodes, "evicting", '{"evicting": 1}')
    proc = subprocess.Popen(
        [sys.executable, "-c", EVICTING_DRIVER],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
        cwd=str(REPO_ROOT), env=nodes.driver_env(NBCLUSTER_MAX_LINEAGE_TASKS="2"),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        read_report(proc, "READY", timeout=T)
        kill_node(node)
        dead_entry(node_id, timeout=10)
        join(nodes, "evicting-replacement", '{"evicting": 1}')
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        got = read_report(proc, "RESULT", timeout=T)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert [what for what, _ in got] == [
        "ObjectReconstructionFailedError", "ObjectReconstructionFailedError", "value", "value",
    ], got  # fmt: skip
    assert "NBCLUSTER_MAX_LINEAGE_TASKS" in got[0][1]
    assert [value for _, value in got[2:]] == [2.0, 3.0]


# ------------------------------------------------------------------------------ the head dies


def test_a_killed_head_fails_pending_gets_at_once_and_init_starts_afresh(
    clusters: Clusters, tmp_path: Path
) -> None:
    clusters.stop()
    cluster = CliCluster(tmp_path, NBCLUSTER_NODE_TIMEOUT_S="2")
    try:
        head = cluster.start_head("--num-cpus", "1")
        attach(head.address, cluster.token)
        gate, started = tmp_path / "gate", tmp_path / "started"
        pending = held_until.remote(str(gate), str(started))
        wait_until(started.exists, T)

        def get_pending() -> tuple[BaseException | None, float]:
            try:
                nc.get(pending, timeout=T)
            except BaseException as e:
                return e, time.monotonic()
            return None, time.monotonic()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            getting = pool.submit(get_pending)
            t0 = kill_node(head)
            error, when = getting.result(timeout=T)
        assert isinstance(error, exc.ClusterConnectionError), error
        assert "head" in str(error)
        assert when - t0 < 2, f"the driver noticed after {when - t0:.1f}s"
        with pytest.raises(exc.ClusterConnectionError, match=r"nbcluster.init\(\)"):
            nc.get(pending, timeout=T)
        assert not nc.is_initialized()
        nc.init(num_cpus=1)  # a fresh local cluster, in the same process
        assert_cluster_works()
    finally:
        nc.shutdown()
        cluster.close()


FROZEN_HEAD_DRIVER = r"""
import json, sys, time
import nbcluster as nc

nc.init()  # NBCLUSTER_ADDRESS, NBCLUSTER_TOKEN; NBCLUSTER_NODE_TIMEOUT_S=2

@nc.remote
def forever():
    import threading
    threading.Event().wait()

ref = forever.remote()
print("READY {}", flush=True)
sys.stdin.readline()  # the head is cut off now
t0 = time.monotonic()
try:
    nc.get(ref, timeout=float(sys.argv[1]))
    what = ["value", ""]
except Exception as e:
    what = [type(e).__name__, str(e)]
after = time.monotonic() - t0
nc.init(address="local", num_cpus=1)  # a fresh cluster of its own, in the same process
fresh = nc.get(nc.remote(lambda: "pong").remote(), timeout=60)
nc.shutdown()
print("RESULT " + json.dumps({"what": what, "after": after, "fresh": fresh}), flush=True)
"""


def test_a_cut_off_head_is_noticed_by_drivers_within_the_heartbeat_timeout(
    clusters: Clusters, tmp_path: Path
) -> None:
    clusters.stop()
    cluster = CliCluster(tmp_path, NBCLUSTER_NODE_TIMEOUT_S="2")
    head = cluster.start_head("--num-cpus", "1")
    proc = subprocess.Popen(
        [sys.executable, "-c", FROZEN_HEAD_DRIVER, "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
        cwd=str(REPO_ROOT), env=cluster.driver_env(),
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    try:
        read_report(proc, "READY", timeout=T)
        cut_off(head)
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        got = read_report(proc, "RESULT", timeout=T)
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        kill_node(head)
        cluster.close()
    assert got["what"][0] == "ClusterConnectionError", got
    assert got["after"] < 2 + 3, got  # the timeout, and a ping interval to see it pass
    assert got["fresh"] == "pong"

"""The runtime's window: events, the state API and the timeline, read the way a user reads them.

Each test runs a real workload on a real cluster and asserts on what ``nbcluster.util.state``
(and ``nbcluster.timeline``) report about it. Events reach the head within a flush interval,
so assertions about other processes' events poll with a deadline (``wait_until``).
"""

from __future__ import annotations

import gc
import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import is_gone, wait_for_file, wait_until

import nbcluster as nc
from nbcluster.runtime import events
from nbcluster.runtime.core import output
from nbcluster.util import state

MiB = 1 << 20
HERE = os.path.basename(__file__)


def inc(x: int) -> int:
    return x + 1


def noop() -> None:
    return None


def boom(msg: str) -> None:
    raise ValueError(msg)


def total(a: Any, b: Any) -> float:
    return float(np.asarray(a).sum()) + float(b)


def wait_gate(path: str) -> str:
    wait_for_file(path)
    return "opened"


def crash_once(marker: str) -> str:
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)  # the worker dies mid-task: its owner retries
    return "second try"


def task_of(ref: nc.ObjectRef, want: str, timeout: float = 10) -> state.TaskState:
    """The task that returns ``ref``, once the state API reports it in state ``want``."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (t := state.get_task(ref)) is not None and t.state == want and t,
        timeout=timeout,
        message=lambda: f"task is {state.get_task(ref)}, expected {want}",
    )


class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


def test_a_query_sees_at_least_what_this_process_has_seen(cluster: Any) -> None:
    """Right after ``get`` returns, the state API and the timeline show those tasks done:
    the query waits for the workers this process holds to ship their events first."""
    f = nc.remote(inc)
    tally = nc.remote(Tally).remote()
    for _ in range(5):  # a lagging report would slip through one round by luck, not five
        refs = [f.remote(i) for i in range(10)]
        assert nc.get(refs) == list(range(1, 11))
        counted = tally.add.remote()
        nc.get(counted)
        states = {t.task_id: t.state for t in state.list_tasks(limit=None)}
        assert [states.get(r.task_id().hex()) for r in [*refs, counted]] == ["FINISHED"] * 11
        summary = state.summarize_tasks()["cluster"]["summary"]
        assert "PENDING_NODE_ASSIGNMENT" not in summary["inc"]["state_counts"], summary
        ran = {e["args"]["task_id"] for e in nc.timeline() if e["ph"] == "X"}
        assert {r.task_id().hex() for r in refs} <= ran
    nc.kill(tally)


def test_a_finished_task_shows_where_it_ran_and_its_object_graph(cluster: Any) -> None:
    arg = nc.put(np.ones(MiB // 8))  # 1 MiB: in the store, an ObjectRef argument
    first = nc.remote(inc).remote(1)
    ref = nc.remote(total).remote(arg, first)  # line number checked below
    assert nc.get(ref) == MiB // 8 + 2
    task_of(ref, "FINISHED")
    # The worker reports running on its own schedule: it may reach the head after the owner.
    t = wait_until(lambda: (x := state.get_task(ref)) is not None and x.start_time_ms and x)
    assert t.name == "total" and t.type == "NORMAL_TASK" and t.attempt_number == 0
    assert t.args == [arg.hex(), first.hex()] and t.returns == [ref.hex()]
    assert t.call_site.endswith(f"{HERE}:{_line_of('ref = nc.remote(total)')}")
    assert t.worker_pid and t.worker_pid != os.getpid() and t.node_id
    assert t.creation_time_ms <= t.start_time_ms <= t.end_time_ms  # type: ignore[operator]
    obj = {o.object_id: o for o in state.list_objects(limit=None)}
    assert obj[arg.hex()].state == "IN_MEMORY" and obj[arg.hex()].object_size >= MiB
    assert obj[arg.hex()].owner_pid == os.getpid() and obj[arg.hex()].task_id is None
    # A small result lives in its owner's memory: the owner says why it is alive.
    held = {o.object_id: o for o in state.memory_summary()["objects"]}[ref.hex()]
    assert held.task_id == t.task_id and held.call_site == t.call_site
    assert [r["reference_type"] for r in held.references] == ["LOCAL_REFERENCE"]
    summary = state.summarize_tasks()["cluster"]["summary"]
    assert summary["total"]["state_counts"].get("FINISHED", 0) >= 1


def _line_of(text: str) -> int:
    lines = Path(__file__).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line and "_line_of" not in line)


def test_a_failed_task_shows_its_error(cluster: Any) -> None:
    ref = nc.remote(boom).remote("the disk is full")
    with pytest.raises(ValueError, match="the disk is full"):
        nc.get(ref)
    t = task_of(ref, "FAILED")
    assert t.error_type == "ValueError"
    assert t.error_message is not None and "the disk is full" in t.error_message
    failed = state.list_tasks(filters=[("state", "=", "FAILED"), ("name", "=", "boom")])
    assert t.task_id in [x.task_id for x in failed]
    assert all(x.state == "FAILED" for x in failed)


def test_running_and_cancelled_tasks_keep_the_cell_tag(cluster: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    output.set_tag_provider(lambda: "cell-msg-42")  # what the kernel does for each cell
    try:
        running = nc.remote(wait_gate).remote(str(gate))
        waiting = nc.remote(inc).remote(running)  # pending: its argument is not ready
    finally:
        output.set_tag_provider(None)
    t = task_of(running, "RUNNING")
    assert t.tag == "cell-msg-42" and t.worker_pid
    assert t.task_id in [x.task_id for x in state.list_tasks([("state", "=", "RUNNING")])]
    assert task_of(waiting, "PENDING_NODE_ASSIGNMENT").args == [running.hex()]
    nc.cancel(waiting)
    with pytest.raises(nc.exceptions.TaskCancelledError):
        nc.get(waiting, timeout=20)
    assert task_of(waiting, "CANCELLED").tag == "cell-msg-42"
    gate.touch()
    assert nc.get(running, timeout=20) == "opened"


def test_a_retried_task_counts_its_attempts(cluster: Any, tmp_path: Path) -> None:
    ref = nc.remote(crash_once).options(max_retries=1).remote(str(tmp_path / "crashed"))
    assert nc.get(ref, timeout=30) == "second try"
    t = task_of(ref, "FINISHED")
    assert t.attempt_number == 1
    history = _events_of(t.task_id, {"TASK_SUBMITTED", "TASK_RETRIED", "TASK_FINISHED"})
    kinds = [e.type for e in history]
    assert {"TASK_SUBMITTED", "TASK_RETRIED", "TASK_RUNNING"} <= set(kinds)
    assert kinds.index("TASK_SUBMITTED") < kinds.index("TASK_RETRIED")  # the owner's order
    retried = history[kinds.index("TASK_RETRIED")]
    assert retried.data["attempt"] == 1 and "died" in retried.data["reason"]


def _events_of(task_id: str, needed: set[str]) -> list[state.Event]:
    """The retained events about ``task_id`` (replayed from the head's history), up to the
    point where every kind in ``needed`` has been seen."""
    out = []
    with state.subscribe(from_seq=1) as sub:
        while not needed <= {e.type for e in out}:
            ev = sub.get(timeout=10)
            if ev.data.get("task_id") == task_id:
                out.append(ev)
    return out


def test_a_freed_object_disappears(cluster: Any) -> None:
    ref = nc.put(np.zeros(2 * MiB, dtype=np.uint8))
    oid = ref.hex()
    obj = wait_until(lambda: [o for o in state.list_objects(limit=None) if o.object_id == oid])
    assert obj[0].object_size >= 2 * MiB and obj[0].call_site.endswith(
        f"{HERE}:{_line_of('ref = nc.put(np.zeros(2 * MiB')}"
    )
    del ref
    gc.collect()
    wait_until(
        lambda: oid not in {o.object_id for o in state.list_objects(limit=None)},
        message="the freed object is still listed",
    )


def test_a_spilled_object_says_so(make_cluster: Any) -> None:
    make_cluster(num_cpus=2, object_store_memory=48 * MiB)
    with state.subscribe() as sub:
        refs = [nc.put(np.full(10 * MiB, i, dtype=np.uint8)) for i in range(8)]

        def spilled_now() -> list[nc.ObjectRef]:
            objs = {o.object_id: o for o in state.list_objects(limit=None)}
            return [r for r in refs if objs[r.hex()].spilled]

        spilled = wait_until(spilled_now, message="no object is listed as spilled")
        assert state.list_objects([("object_id", "=", spilled[0].hex())])[0].state == "SPILLED"
        node = wait_until(lambda: next((n for n in state.list_nodes() if n.spilled_objects), None))
        assert node.spilled_bytes >= 10 * MiB and node.object_store_capacity == 48 * MiB
        assert int(nc.get(spilled[0])[0]) == refs.index(spilled[0])  # read back: restored
        wait_until(lambda: state.list_objects(filters=[("object_id", "=", spilled[0].hex())])[0]
                   .state == "IN_MEMORY")  # fmt: skip
        kinds = set()
        while "OBJECT_RESTORED" not in kinds:
            ev = sub.get(timeout=10)
            if ev.data.get("object_id") == spilled[0].hex():
                kinds.add(ev.type)
        assert "OBJECT_SPILLED" in kinds


def test_a_subscriber_gets_every_event_in_order_while_10000_tasks_run(cluster: Any) -> None:
    f = nc.remote(noop)
    with state.subscribe() as sub:
        refs = [f.remote() for _ in range(10_000)]
        wanted = {r.task_id().hex() for r in refs}
        nc.get(refs)
        seqs, submitted, finished = [], set(), set()
        while len(finished) < len(wanted):
            ev = sub.get(timeout=15)
            assert ev.type != "EVENTS_LOST", ev
            seqs.append(ev.seq)
            tid = ev.data.get("task_id")
            if tid in wanted:
                if ev.type == "TASK_SUBMITTED":  # from the owner (the driver)
                    submitted.add(tid)
                elif ev.type == "TASK_FINISHED":  # from the worker that ran it
                    finished.add(tid)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sub.lost == 0
    while len(submitted) < len(wanted):  # the two processes report independently
        ev = sub.get(timeout=15)
        assert ev.seq == seqs[-1] + 1 and ev.type != "EVENTS_LOST", ev
        seqs.append(ev.seq)
        if ev.type == "TASK_SUBMITTED" and ev.data["task_id"] in wanted:
            submitted.add(ev.data["task_id"])


def test_actors_report_their_lifecycle(cluster: Any) -> None:
    @nc.remote(max_restarts=1)
    class Counter:
        def pid(self) -> int:
            return os.getpid()

    a = Counter.options(name="obs-counter").remote()
    pid = nc.get(a.pid.remote())
    info = wait_until(lambda: (s := state.get_actor(a)) is not None and s.state == "ALIVE" and s)
    assert info.class_name == "Counter" and info.name == "obs-counter" and info.pid == pid
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: state.get_actor(a).num_restarts == 1)  # type: ignore[union-attr]
    new_pid = nc.get(a.pid.remote(), timeout=30)
    assert wait_until(lambda: state.get_actor(a).pid == new_pid)  # type: ignore[union-attr]
    nc.kill(a)
    dead = wait_until(lambda: (s := state.get_actor(a)) is not None and s.state == "DEAD" and s)
    assert dead.death_cause and "kill" in dead.death_cause
    assert dead.actor_id in [x.actor_id for x in state.list_actors([("state", "=", "DEAD")])]


def test_nodes_and_workers_are_listed_with_their_use(cluster: Any) -> None:
    nc.get([nc.remote(inc).remote(i) for i in range(4)])
    node = wait_until(
        lambda: next((n for n in state.list_nodes() if n.cpu_percent is not None), None)
    )
    assert node.state == "ALIVE" and node.resources_total == {"CPU": 2.0}
    assert node.mem_total and node.mem_used and node.object_store_capacity > 0
    workers = state.list_workers(limit=None)
    me = [w for w in workers if w.pid == os.getpid()]
    assert me and me[0].worker_type == "DRIVER" and me[0].is_alive
    assert len([w for w in workers if w.worker_type == "WORKER" and w.is_alive]) >= 2
    assert wait_until(lambda: [w for w in state.list_workers(limit=None) if w.memory_rss])


def test_timeline_is_a_chrome_trace_of_tasks_per_worker(cluster: Any, tmp_path: Path) -> None:
    refs = [nc.remote(inc).remote(i) for i in range(20)]
    nc.get(refs)
    path = tmp_path / "trace.json"
    # Given a file, it writes the trace there and returns nothing (as Ray), so a notebook
    # cell ending with it prints nothing; and right after get, every task is on it.
    assert nc.timeline(str(path)) is None
    trace = json.loads(path.read_text())
    ran = {e["args"]["task_id"] for e in trace if e["ph"] == "X" and e["name"] == "inc"}
    assert {r.task_id().hex() for r in refs} <= ran
    slices = [e for e in trace if e["ph"] == "X" and e["name"] == "inc"]
    assert all(e["dur"] >= 0 and e["ts"] > 0 for e in slices)
    names = {e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {f"worker {e['tid']}" for e in slices} <= names


def test_history_and_tables_are_bounded_and_say_what_was_lost(
    no_cluster: None, make_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCLUSTER_EVENT_HISTORY", "2000")
    monkeypatch.setenv("NBCLUSTER_EVENT_MAX_TASKS", "300")
    make_cluster(num_cpus=2)
    f = nc.remote(inc)
    refs = []
    for _wave in range(10):
        refs += [f.remote(i) for i in range(100)]
        nc.get(refs[-100:])
    task_of(refs[-1], "FINISHED")
    # Finished tasks count against the bound (unfinished ones wait for their reports).
    wait_until(lambda: state.summarize_tasks()["cluster"]["total_tasks"] <= 300)
    assert state.get_task(refs[0]) is None  # the oldest finished tasks went first
    assert state.get_task(refs[-1]) is not None
    with state.subscribe(from_seq=1) as sub:
        first = sub.get(timeout=10)
        assert first.type == "EVENTS_LOST" and first.data["from_seq"] == 1
        assert first.data["to_seq"] > 1 and sub.lost == first.data["to_seq"] - 1
        assert sub.get(timeout=10).seq == first.data["to_seq"]


def test_events_can_be_turned_off(
    no_cluster: None, make_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBCLUSTER_EVENTS", "0")
    monkeypatch.setattr(events, "ENABLED", False)  # this process read its config at import
    make_cluster(num_cpus=2)
    assert nc.get([nc.remote(inc).remote(i) for i in range(10)]) == list(range(1, 11))
    assert state.list_tasks() == [] and state.list_nodes() == []



def my_pid() -> int:
    return os.getpid()


def pids_nested() -> list[int]:
    """Blocks in ``get`` on a nested task: the node lends its CPU and starts an extra worker,
    which the node reaps once idle."""
    return [os.getpid(), nc.get(nc.remote(my_pid).remote())]


def test_workers_that_go_report_the_tasks_they_ran_first(
    no_cluster: None, make_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that retires (``max_calls``) or is reaped as an idle extra ships its events
    before it goes: its tasks end FINISHED, not running forever in the state tables. The
    workers' flush timer is set far beyond the test, so only the goodbye can ship them."""
    monkeypatch.setenv("NBCLUSTER_EVENT_FLUSH_S", "600")
    monkeypatch.setenv("NBCLUSTER_IDLE_WORKER_TIMEOUT_S", "0.2")
    make_cluster(num_cpus=1)
    retired = nc.remote(max_calls=1)(my_pid).remote()
    pid = nc.get(retired, timeout=30)
    wait_until(lambda: is_gone(pid), message=f"worker {pid} did not retire")
    task_of(retired, "FINISHED")

    outer = nc.remote(pids_nested).remote()
    pids = nc.get(outer, timeout=30)
    assert pids[0] != pids[1]
    wait_until(lambda: any(map(is_gone, pids)), message="no idle extra worker reaped")
    if is_gone(pids[0]):  # the outer task's worker went: its run and its submission arrive
        task_of(outer, "FINISHED")
        wait_until(lambda: len(state.list_tasks()) == 3, message="the nested task is unknown")
    else:  # the nested task's worker went: its run arrives
        ran = lambda: [t.state for t in state.list_tasks() if t.worker_pid == pids[1]]  # noqa: E731
        wait_until(lambda: ran() == ["FINISHED"], message=lambda: f"tasks: {state.list_tasks()}")

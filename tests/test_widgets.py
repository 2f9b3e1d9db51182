"""The widgets' aggregation (no browser): tables built from events, progress per function,
static fallbacks, and the long-wait hook on a real cluster."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import nbcluster as nc
from nbcluster.runtime import long_wait
from nbcluster.runtime.event_stream import Event
from nbcluster.widgets import Static, progress
from nbcluster.widgets.progress_view import ProgressView
from nbcluster.widgets.tables import Tables, cell_of

TID = "ab" * 16


def ev(seq: int, kind: str, source: dict[str, Any] | None = None, **data: Any) -> Event:
    return Event(seq, 1000.0 + seq, kind, data, source or {})


def test_a_task_moves_forward_even_when_a_worker_reports_before_its_owner() -> None:
    t = Tables()
    t.apply([ev(1, "TASK_RUNNING", {"address": "w1"}, task_id=TID, name="f")])
    ch = t.apply([
        ev(2, "TASK_SUBMITTED", task_id=TID, name="f", attempt=0, args=["cd" * 20],
           nested_args=None, num_returns=1, tag="CellTag(msg_id='m1', plain=False)",
           call_site="", actor_id=None),
        ev(3, "TASK_FINISHED", task_id=TID, results=[{"object_id": TID + "00000001",
                                                      "size": 12, "location": None}]),
    ])  # fmt: skip
    task = t.tasks[TID]
    assert (task.state, task.name, task.cell, task.worker) == ("finished", "f", "m1", "w1")
    assert t.objects[TID + "00000001"].size == 12
    assert ch.tasks == {TID} and TID + "00000001" in ch.objects
    t.apply([ev(4, "TASK_RUNNING", task_id=TID, name="f")])  # late, out of order
    assert t.tasks[TID].state == "finished"
    t.apply([ev(5, "TASK_RETRIED", task_id=TID, attempt=1, reason="worker died")])
    assert t.tasks[TID].state == "pending"


def test_a_malformed_event_is_skipped_and_a_gap_is_reported() -> None:
    t = Tables()
    ch = t.apply([ev(1, "TASK_FAILED"), ev(2, "EVENTS_LOST", from_seq=2, to_seq=9)])
    assert ch.lost and not t.tasks


def test_cell_of_reads_the_kernel_tag() -> None:
    assert cell_of("CellTag(msg_id='abc-1', plain=True)") == "abc-1"
    assert cell_of(None) is None


class FakeRef:
    """Only what ProgressView reads of a ref: its task id."""

    def __init__(self, tid: str) -> None:
        self._tid = bytes.fromhex(tid)

    def task_id(self) -> bytes:
        return self._tid


def test_progress_counts_per_function_with_the_first_error() -> None:
    tids = [f"{i:032x}" for i in range(6)]
    t = Tables()
    for i, tid in enumerate(tids):
        t.apply([ev(i, "TASK_SUBMITTED", task_id=tid, name="f" if i < 4 else "g")])
    t.apply([ev(10, "TASK_FINISHED", task_id=tids[0], results=[]),
             ev(11, "TASK_RUNNING", task_id=tids[1], name="f"),
             ev(12, "TASK_FAILED", task_id=tids[4], attempt=0, error_type="ValueError",
                error_message="bad input\nmore"),
             ev(13, "TASK_CANCELLED", task_id=tids[5], attempt=0)])  # fmt: skip
    view = ProgressView([FakeRef(x) for x in tids] + [FakeRef("ff" * 16)])
    s = view.compute(t, time.time())
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["f"] == {"name": "f", "total": 4, "pending": 2, "running": 1, "finished": 1,
                         "failed": 0, "cancelled": 0}  # fmt: skip
    assert (rows["g"]["failed"], rows["g"]["cancelled"]) == (1, 1)
    assert (s["total"], s["ended"]) == (6, 3)  # the unknown ref is not counted yet
    assert s["error"] == "g: ValueError: bad input"
    view.state = s
    assert "ValueError: bad input" in view.html() and "3/6 tasks" in view.html()
    assert view.text().splitlines()[2].split() == ["f", "1/4", "2", "1", "1", "0"]


@pytest.mark.timeout(60)
def test_progress_of_real_tasks_finishes(cluster: Any) -> None:
    @nc.remote
    def f(i: int) -> int:
        return i

    refs = [f.remote(i) for i in range(20)]
    nc.get(refs)
    shown = progress(refs, title="twenty")
    view = shown.owner if hasattr(shown, "owner") else shown.view
    deadline = time.monotonic() + 20
    while not view.finished:
        assert time.monotonic() < deadline, view.state
        time.sleep(0.05)
    assert view.state["done"] and view.state["ended"] == 20
    assert [r["name"].rpartition(".")[2] for r in view.state["rows"]] == ["f"]
    assert "20/20 tasks" in view.html()
    if hasattr(shown, "snapshot"):
        assert shown.snapshot["done"] is True
        bundle = shown._repr_mimebundle_()
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        assert "application/vnd.jupyter.widget-view+json" in data
        assert "20/20 tasks" in data["text/html"] and "Progress: twenty" in data["text/plain"]
        shown.close()
    with pytest.raises(TypeError, match="ObjectRef"):
        progress([1, 2])
    again = nc.widgets.progress(refs)  # still the function, not a submodule of that name
    (again.owner if hasattr(again, "owner") else again.view).finished or None
    for name in ("progress", "graph", "cluster", "store"):
        assert callable(getattr(nc.widgets, name)), name
    assert isinstance(Static(view).__repr__(), str)


@pytest.mark.timeout(60)
def test_long_wait_hooks_hear_of_a_blocking_get_once(cluster: Any, monkeypatch: Any) -> None:
    from nbcluster.runtime import config

    monkeypatch.setattr(config.CONFIG, "long_wait_s", 0.3)

    @nc.remote
    def slow(dt: float) -> float:
        time.sleep(dt)
        return dt

    heard: list[long_wait.LongWait] = []
    finished = threading.Event()

    def hook(wait: long_wait.LongWait) -> None:
        heard.append(wait)
        wait.add_done_callback(finished.set)

    remove = long_wait.add_hook(hook)
    try:
        nc.get([slow.remote(0.0), slow.remote(0.0)])  # quick: no call
        nc.get(slow.remote(1.0))  # one ref: no call
        refs = [slow.remote(1.0), slow.remote(1.0)]
        assert nc.get(refs) == [1.0, 1.0]
        assert finished.is_set()  # called before get returned
        nc.wait([slow.remote(1.0), slow.remote(0.0)], num_returns=2)
    finally:
        remove()
    assert [(w.kind, len(w.refs)) for w in heard] == [("get", 2), ("wait", 2)]
    assert heard[0].refs == refs and heard[0].done.is_set()

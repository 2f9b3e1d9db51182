"""The widgets without a browser: progress drawn from the head's counts, variable names,
static fallbacks, the long-wait hook, and on a real cluster the live path: a burst coalesced
to ten updates a second per widget, deltas, a fresh view's snapshot, resync after a gap, and
no work for a widget nobody shows. (The head's side of it: ``test_digests``.)"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import nbcluster as nc
from nbcluster.runtime.core import long_wait
from nbcluster.widgets import Static, progress
from nbcluster.widgets.progress_view import ProgressView


class FakeRef:
    """Only what ProgressView reads of a ref: its task id."""

    def __init__(self, i: int) -> None:
        self._tid = i.to_bytes(16, "big")

    def task_id(self) -> bytes:
        return self._tid


def test_progress_draws_the_heads_counts_with_rate_and_first_error() -> None:
    view = ProgressView([FakeRef(i) for i in range(7)])
    view.on_digest({"rows": [["f", 4, 2, 1, 1, 0, 0], ["g", 2, 0, 0, 0, 1, 1]], "total": 6,
                    "ended": 3, "error": "g: ValueError: bad input", "size": 7}, True)  # fmt: skip
    s = view.compute(time.time())
    rows = {r["name"]: r for r in s["rows"]}
    assert rows["f"] == {"name": "f", "total": 4, "pending": 2, "running": 1, "finished": 1,
                         "failed": 0, "cancelled": 0}  # fmt: skip
    assert (rows["g"]["failed"], rows["g"]["cancelled"]) == (1, 1)
    assert (s["total"], s["ended"], s["all_ended"]) == (6, 3, False)
    view.state = s
    assert "ValueError: bad input" in view.html() and "3/6 tasks" in view.html()
    assert view.text().splitlines()[2].split() == ["f", "1/4", "2", "1", "1", "0"]


def test_variables_are_named_after_what_holds_each_ref(cluster: Any) -> None:
    from nbcluster.widgets.names import ref_names

    a, b = nc.put(1), nc.put(2)
    ns = {"a": a, "pair": (a, b), "d": {"k": b}, "_hidden": nc.put(3)}
    assert ref_names(ns) == {a.hex(): "a", b.hex(): "pair[1]"}


@pytest.mark.timeout(60)
def test_progress_of_real_tasks_finishes(cluster: Any) -> None:
    @nc.remote
    def f(i: int) -> int:
        return i

    refs = [f.remote(i) for i in range(20)]
    nc.get(refs)
    bar = shown(progress(refs, title="twenty"))
    view = bar.owner
    wait_until(lambda: view.finished, what=f"the progress to finish: {view.state}")
    assert view.state["done"] and view.state["ended"] == 20
    assert [r["name"].rpartition(".")[2] for r in view.state["rows"]] == ["f"]
    assert "20/20 tasks" in view.html()
    assert bar.snapshot["done"] is True
    bar.close()
    # Never shown (a front end without widgets): its HTML and text are current when drawn.
    more = [f.remote(i) for i in range(5)]
    quiet = progress(more, title="five")
    nc.get(more)

    def drawn() -> dict[str, Any]:
        bundle = quiet._repr_mimebundle_()
        return dict(bundle[0] if isinstance(bundle, tuple) else bundle)

    wait_until(lambda: "5/5 tasks" in drawn()["text/html"], what="a current drawing")
    assert "application/vnd.jupyter.widget-view+json" in drawn()
    assert "Progress: five" in drawn()["text/plain"]
    quiet.close()
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


# -- live widgets on a real cluster: coalescing, deltas, snapshots, resync, views -----------------
def shown(widget: Any) -> Any:
    """Tell the widget a browser view shows it, as the front end does when it renders."""
    widget._handle_custom_msg({"kind": "view", "on": True}, [])
    return widget


def recorded(widget: Any) -> list[tuple[float, str, Any]]:
    """Every update the widget sends the browser: (time, "delta" or "snapshot", content)."""
    log: list[tuple[float, str, Any]] = []
    send, snapshot = widget.send, widget.set_snapshot

    def send_(content: Any, buffers: Any = None) -> None:
        log.append((time.monotonic(), "delta", content))
        send(content, buffers)

    def snapshot_(state: Any) -> None:
        log.append((time.monotonic(), "snapshot", state))
        snapshot(state)

    widget.send, widget.set_snapshot = send_, snapshot_
    return log


def wait_until(cond: Any, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what or cond}"
        time.sleep(0.02)


def most_in_a_second(log: list[tuple[float, str, Any]]) -> int:
    times = sorted(t for t, _, _ in log)
    return max((sum(1 for u in times[i:] if u - t < 1.0) for i, t in enumerate(times)),
               default=0)  # fmt: skip


@pytest.mark.timeout(180)
def test_a_burst_reaches_each_widget_coalesced_to_ten_updates_a_second(cluster: Any) -> None:
    @nc.remote
    def noop() -> None:
        return None

    graph = nc.widgets.graph()  # outside a kernel: every task of the cluster
    graph_log = recorded(shown(graph))
    refs = [noop.remote() for _ in range(20_000)]
    bar = nc.widgets.progress(refs)
    bar_log = recorded(shown(bar))
    nc.get(refs)
    wait_until(lambda: bar.owner.finished, what="the progress to finish")
    wait_until(lambda: graph.owner.summary["states"].get("finished", 0) >= 20_000,
               what="the graph to count every task")  # fmt: skip
    assert bar.snapshot["done"] and bar.snapshot["ended"] == 20_000
    for log in (graph_log, bar_log):
        assert log and most_in_a_second(log) <= 12, [(round(t, 2), k) for t, k, _ in log]
    # Past a few thousand nodes the graph is groups, not 40,000 records: the browser gets
    # at most one message of node records (up to the limit), then short lists of groups.
    assert graph.owner.mode == "grouped" and graph.snapshot["mode"] == "grouped"
    sizes = [len(str(c)) for _, _, c in graph_log]
    assert max(sizes) < 250_000 and sum(sizes) < 1_000_000, sizes
    graph.close()
    bar.close()


@pytest.mark.timeout(120)
def test_a_fresh_view_renders_from_the_snapshot_and_a_gap_resyncs(cluster: Any) -> None:
    from nbcluster.widgets.feed import feed

    @nc.remote
    def load(i: int) -> int:
        return i

    refs = [load.remote(i) for i in range(30)]
    nc.get(refs)
    g = nc.widgets.graph(refs)
    assert len([n for n in g.snapshot["nodes"] if n[1] == "t"]) == 30  # before any view
    assert len(g.snapshot["edges"]) == 30
    log = recorded(shown(g))
    wait_until(lambda: any(kind == "snapshot" for _, kind, _ in log), what="the live picture")
    # Deltas bring the ends the head heard of late; once quiet, the snapshot has them too.
    wait_until(lambda: [n[3] for n in g.snapshot["nodes"] if n[1] == "t"] == [2] * 30,
               what="a settled snapshot")  # fmt: skip
    assert len(g.snapshot["nodes"]) == 60
    # An item out of order (one went missing): the delta is dropped, the whole graph asked for.
    f, did = feed(), g.owner.did
    before = len(log)
    stray = {"mode": "nodes", "nodes": [["x", "t", "lost", 0, None, None, None]], "summary": {}}
    f._on_items([[did, f._seq[did] + 5, False, stray]])
    wait_until(lambda: any(kind == "snapshot" for _, kind, _ in log[before:]), what="a resync")
    assert [k for _, k, _ in log[before:]] == ["snapshot"]
    assert "x" not in {n[0] for n in g.snapshot["nodes"]} and len(g.snapshot["nodes"]) == 60
    # The browser can ask too (its own deltas went missing).
    before = len(log)
    g._handle_custom_msg({"kind": "resync"}, [])
    wait_until(lambda: any(kind == "snapshot" for _, kind, _ in log[before:]), what="a resync")
    g.close()


@pytest.mark.timeout(120)
def test_a_widget_nobody_shows_gets_nothing_until_one_does(cluster: Any) -> None:
    @nc.remote
    def f(i: int) -> int:
        return i

    hidden, watched = nc.widgets.graph(), nc.widgets.graph()
    hidden_log, watched_log = recorded(hidden), recorded(shown(watched))
    start = watched.owner.summary["tasks"]
    nc.get([f.remote(i) for i in range(50)])
    wait_until(lambda: watched.owner.summary["tasks"] >= start + 50, what="the shown graph")
    assert watched_log and hidden_log == []
    shown(hidden)
    wait_until(lambda: hidden_log, what="the picture once shown")
    assert hidden_log[0][1] == "snapshot" and hidden.owner.summary["tasks"] >= start + 50
    hidden._handle_custom_msg({"kind": "view", "on": False}, [])  # its one view went
    assert hidden.owner.views == 0
    hidden.close()
    watched.close()


@pytest.mark.timeout(120)
def test_tasks_report_their_own_progress_as_sub_bars(cluster: Any) -> None:
    from nbcluster.util.progress import progress as steps
    from nbcluster.util.progress import tqdm

    @nc.remote
    def train(epochs: int) -> int:
        total = 0
        for _ in steps(range(epochs), desc="epochs"):
            time.sleep(0.05)
            total += 1
        with tqdm(total=1000, desc="rows", unit="row") as bar:
            bar.update(400)
            bar.update(600)
        return total

    refs = [train.remote(10), train.remote(10)]
    bar = shown(progress(refs, title="training"))
    assert nc.get(refs) == [10, 10]
    view = bar.owner

    def both_bars_done() -> bool:
        got = {(b["desc"], b["n"]) for b in view.state.get("bars", [])}
        return got >= {("epochs", 10), ("rows", 1000)} and len(view.state["bars"]) == 4

    wait_until(both_bars_done, what=f"the tasks' own bars: {view.state.get('bars')}")
    rows = [b for b in view.state["bars"] if b["desc"] == "rows"]
    assert rows[0]["total"] == 1000 and rows[0]["unit"] == "row" and rows[0]["function"] == "train"
    assert "train: epochs" in view.html() and "1000/1000 row" in view.html()
    assert "train: rows 1000/1000 row" in view.text()
    bar.close()
    # Outside a task the wrapper only iterates.
    assert list(steps(range(3), desc="local")) == [0, 1, 2]
    with tqdm(total=2) as local:
        local.update(2)
    assert local.n == 2 and local.closed


@pytest.mark.timeout(60)
def test_init_and_cluster_resources_display_as_the_cluster_widget(cluster: Any) -> None:
    from nbcluster.runtime.api.cluster_info import ClusterInfo, ClusterResources
    from nbcluster.widgets import displays

    info, resources = nc.init(), nc.cluster_resources()
    assert isinstance(resources, ClusterResources) and resources["CPU"] == 2.0
    plain = resources._repr_mimebundle_()  # no renderer: what a console shows
    assert plain == {"text/plain": repr(dict(resources))}
    before = (list(ClusterInfo.renderers), list(ClusterResources.renderers))
    displays.install()
    try:
        shown = info._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in shown
        assert shown["text/plain"] == str(info)
        assert "nbcluster status --address" in shown["text/html"]
        assert "Cluster: 1 node alive" in shown["text/html"]
        as_widget = resources._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in as_widget
        assert as_widget["text/plain"] == repr(dict(resources))
    finally:
        ClusterInfo.renderers[:], ClusterResources.renderers[:] = before

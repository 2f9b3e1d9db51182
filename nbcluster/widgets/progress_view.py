"""Progress of a set of tasks: one bar per function (queued, running, done, failed), rate, ETA,
the first error, and a Cancel button.

``ProgressView`` aggregates from the shared tables; the widget (when ipywidgets is there)
draws it. A ref whose task the tables do not know yet (its submission is still on its way,
or it is a ``put``) is not counted until it appears; the view finishes once every counted
task has ended and the driver says every ref is ready.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets.feed import TICK_S
from nbcluster.widgets.tables import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    STATES,
    TERMINAL,
    Changes,
    Tables,
)

#: Seconds of history the rate (and so the ETA) is measured over.
RATE_WINDOW_S = 5.0


class ProgressView:
    """Progress of the tasks behind ``refs``."""

    def __init__(self, refs: Sequence[Any], title: str = "",
                 on_finish: Callable[[ProgressView], None] | None = None) -> None:  # fmt: skip
        self.refs: list[Any] = list(dict.fromkeys(refs))
        self.task_ids = list(dict.fromkeys(r.task_id().hex() for r in self.refs))
        self._ids = set(self.task_ids)
        self.title = title or f"{len(self.refs)} tasks"
        self.on_finish = on_finish
        self.widget: Any = None
        self.started = time.time()
        self.ended: float | None = None
        self.state: dict[str, Any] = {"rows": [], "done": False}
        self._dirty = True
        self._last_sent = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._finished = False
        self.cancel_requested = False
        #: task ids the driver knows are done though their events are still on their way
        self._ready: set[str] = set()

    @property
    def finished(self) -> bool:
        return self._finished

    # -- feed ----------------------------------------------------------------------------------
    def changed(self, tables: Tables, changes: Changes) -> None:
        if changes.lost or not self._ids.isdisjoint(changes.tasks):
            self._dirty = True

    def tick(self, tables: Tables) -> None:
        now = time.time()
        if not self._dirty and now - self._last_sent < 1.0:
            return  # nothing new: still refresh the rate and ETA once a second
        self._dirty = False
        self._last_sent = now
        self.state = self.compute(tables, now)
        if self.state["all_ended"] and self._refs_ready():
            self.ended = now
            self.state = self.compute(tables, now)
            self.state["done"] = True
            self._finished = True
            self.refs = []  # the results are the notebook's now; don't keep them alive
        if self.widget is not None:
            self.widget.set_snapshot(self.state)
        if self._finished and self.on_finish is not None:
            self.on_finish(self)

    def resync(self, tables: Tables) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def finish_now(self, tables: Tables) -> None:
        """Draw the final state now (the call waiting on the refs returned): tasks whose refs
        the driver holds ready count as finished even if their events are still on the way."""
        import nbcluster as nc

        try:
            ready, _pending = nc.wait(self.refs, num_returns=len(self.refs), timeout=0)
            self._ready = {r.task_id().hex() for r in ready}
        except Exception:
            self._ready = set()
        now = time.time()
        self.ended = now
        self.state = self.compute(tables, now)
        self.state["done"] = True
        self._finished = True
        self.refs = []
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def _refs_ready(self) -> bool:
        import nbcluster as nc

        try:
            _ready, pending = nc.wait(self.refs, num_returns=len(self.refs), timeout=0)
        except Exception:
            return True  # the cluster is gone: nothing more will happen
        return not pending

    # -- aggregation -----------------------------------------------------------------------------
    def compute(self, tables: Tables, now: float) -> dict[str, Any]:
        rows: dict[str, dict[str, Any]] = {}
        error = None
        ended = 0
        counted = 0
        for tid in self.task_ids:
            t = tables.tasks.get(tid)
            if t is None:
                continue
            counted += 1
            state = t.state
            if state not in TERMINAL and tid in self._ready:
                state = FINISHED
            row = rows.get(t.name)
            if row is None:
                row = rows[t.name] = {"name": t.name or "?", "total": 0,
                                      **dict.fromkeys(STATES, 0)}  # fmt: skip
            row["total"] += 1
            row[state] += 1
            if state in TERMINAL:
                ended += 1
            if state == FAILED and error is None and t.error:
                error = f"{t.name}: {t.error.splitlines()[0] if t.error else ''}"[:300]
        done = sum(r[FINISHED] + r[FAILED] + r[CANCELLED] for r in rows.values())
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (done - d0) / (now - t0) if now - t0 > TICK_S else 0.0
        left = counted - ended
        if rate <= 0 and self.ended is None and done and now > self.started:
            rate = done / (now - self.started)
        eta = left / rate if rate > 0 and left else (0.0 if not left else None)
        return {
            "title": self.title,
            "rows": list(rows.values()),
            "total": counted,
            "ended": ended,
            "rate": rate,
            "eta": eta,
            "elapsed": (self.ended or now) - self.started,
            "error": error,
            "done": False,
            "all_ended": (counted > 0 and ended == counted) or not self.task_ids,
            "cancel_requested": self.cancel_requested,
        }

    # -- requests from the front end (any thread) ------------------------------------------------
    def on_request(self, msg: dict[str, Any]) -> None:
        if msg.get("kind") == "cancel":
            self.cancel()

    def cancel(self) -> int:
        """Cancel every task of these refs that has not ended; return how many were asked."""
        import nbcluster as nc

        self.cancel_requested = True
        self._dirty = True
        n = 0
        for ref in list(self.refs):
            try:
                nc.cancel(ref)
                n += 1
            except Exception:  # already gone, or the cluster is: nothing to cancel
                pass
        return n

    # -- static forms ------------------------------------------------------------------------------
    def html(self) -> str:
        s = self.state
        rows = []
        for r in s.get("rows", []):
            total = max(1, r["total"])
            parts = [(st, r[st] / total) for st in (FINISHED, FAILED, CANCELLED, RUNNING, PENDING)]
            ended = r[FINISHED] + r[FAILED] + r[CANCELLED]
            rows.append([r["name"], H.bar(parts), f"{ended}/{r['total']}", r[PENDING],
                         r[RUNNING], r[FINISHED], r[FAILED] + r[CANCELLED]])  # fmt: skip
        inner = H.table(["function", "", "done", "queued", "running", "finished", "failed"], rows)
        foot = f"{s.get('ended', 0)}/{s.get('total', 0)} tasks in {H.fmt_seconds(s.get('elapsed'))}"
        if s.get("error"):
            foot += f" — first error: {s['error']}"
        inner += f"<div style='margin-top:4px'>{escape(foot)}</div>"
        return H.box(f"Progress: {s.get('title', self.title)}", inner, "nbcluster-progress-static")

    def text(self) -> str:
        s = self.state
        rows = [[r["name"], f"{r[FINISHED] + r[FAILED] + r[CANCELLED]}/{r['total']}", r[PENDING],
                 r[RUNNING], r[FINISHED], r[FAILED] + r[CANCELLED]]
                for r in s.get("rows", [])]  # fmt: skip
        head = f"Progress: {s.get('title', self.title)}"
        return head + "\n" + H.text_table(
            ["function", "done", "queued", "running", "finished", "failed"], rows)  # fmt: skip

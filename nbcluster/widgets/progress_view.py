"""Progress of a set of tasks: one bar per function (queued, running, done, failed), rate, ETA,
the first error, and a Cancel button.

The head counts the tasks by function and state (a ``progress`` digest) and pushes the counts
when they change; ``ProgressView`` adds the rate and ETA and hands the state to the widget
(when ipywidgets is there). A ref whose task the head does not know yet (its submission is
still on its way, or it is a ``put``) is not counted until it appears; the view finishes once
every counted task has ended and the driver says every ref is ready.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from html import escape
from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets.feed import FedView, feed

STATES = ("pending", "running", "finished", "failed", "cancelled")
#: What the head says of each sub-bar a task reported (``nbcluster.util.progress``).
BAR_FIELDS = ("function", "desc", "n", "total", "unit", "state")
#: The order of a bar's parts.
ORDER = ("finished", "failed", "cancelled", "running", "pending")
#: Seconds a call's final progress waits for the head to hear of what the driver holds, and
#: after a Cancel for the rest of its tasks to end.
REPORTS_WAIT_S = 1.0
CANCEL_WAIT_S = 3.0
#: Seconds of history the rate (and so the ETA) is measured over.
RATE_WINDOW_S = 5.0


class ProgressView(FedView):
    """Progress of the tasks behind ``refs``."""

    kind = "progress"

    def __init__(self, refs: Sequence[Any], title: str = "") -> None:
        self.refs: list[Any] = list(dict.fromkeys(refs))
        self.task_ids = list(dict.fromkeys(r.task_id() for r in self.refs))
        self.title = title or f"{len(self.refs)} tasks"
        self.started = time.time()
        self.ended: float | None = None
        self.counts: dict[str, Any] = {"rows": [], "total": 0, "ended": 0, "error": None}
        self.state: dict[str, Any] = {"rows": [], "done": False}
        self._dirty = True
        self._last_sent = 0.0
        self._samples: deque[tuple[float, int]] = deque()
        self._finished = False
        self.cancel_requested = False

    @property
    def finished(self) -> bool:  # type: ignore[override]
        return self._finished

    def spec(self) -> dict[str, Any]:
        return {"tasks": b"".join(self.task_ids)}

    # -- feed ----------------------------------------------------------------------------------
    def on_digest(self, payload: Any, full: bool) -> None:
        self.counts = payload
        self._dirty = True

    def tick(self, now: float) -> None:
        if self._finished or (not self._dirty and now - self._last_sent < 1.0):
            return  # nothing new: still refresh the rate and ETA once a second
        self._dirty = False
        self._last_sent = now
        self.state = self.compute(now)
        if self.state["all_ended"] and self._refs_ready():
            self._finish(now)
        elif self.widget is not None:
            self.widget.set_snapshot(self.state)

    def _finish(self, now: float) -> None:
        self.ended = now
        self.state = self.compute(now)
        self.state["done"] = True
        self._finished = True
        self.refs = []  # the results are the notebook's now; don't keep them alive
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def show(self) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    def finish_now(self) -> None:
        """Draw the final state now (the call waiting on the refs returned). The driver holds
        results whose tasks' ends (and last reported progress, which travels with them) may
        still be on their way to the head: wait for those, up to ``REPORTS_WAIT_S``. After a
        Cancel the call returns at the first cancelled task: the others' ends are waited for
        too, up to ``CANCEL_WAIT_S``, so the snapshot left behind shows them cancelled."""
        if self._finished or self.did is None:
            return
        now = time.monotonic()
        deadline = now + (CANCEL_WAIT_S if self.cancel_requested else REPORTS_WAIT_S)
        counts = None
        try:
            while True:
                counts = self._final_counts()
                settled = not counts.get("unheard") and (
                    not self.cancel_requested or counts["ended"] >= counts["total"])
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.05)  # reports are on their way; bounded by the deadline
        except Exception:  # the cluster is gone: draw what we have
            pass
        with feed().lock:  # the feed's thread may be drawing this view
            if counts is not None:
                self.counts = counts
            self._finish(time.time())
        self.close()

    def _final_counts(self) -> Any:
        """The head's counts now, where tasks whose refs the driver holds ready count as
        finished even if their events are still on the way."""
        import nbcluster as nc

        assert self.did is not None
        ready, pending = nc.wait(self.refs, num_returns=len(self.refs), timeout=0)
        if pending:
            return feed().query(self.did, ready=[r.task_id() for r in ready])
        return feed().query(self.did, ready_all=True)

    def _refs_ready(self) -> bool:
        import nbcluster as nc

        try:
            _ready, pending = nc.wait(self.refs, num_returns=len(self.refs), timeout=0)
        except Exception:
            return True  # the cluster is gone: nothing more will happen
        return not pending

    # -- aggregation -----------------------------------------------------------------------------
    def compute(self, now: float) -> dict[str, Any]:
        c = self.counts
        rows = [{"name": r[0] or "?", "total": r[1], **dict(zip(STATES, r[2:7], strict=True))}
                for r in c.get("rows", [])]  # fmt: skip
        counted, ended = int(c.get("total", 0)), int(c.get("ended", 0))
        self._samples.append((now, ended))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        rate = (ended - d0) / (now - t0) if now - t0 > 0.1 else 0.0
        left = counted - ended
        if rate <= 0 and self.ended is None and ended and now > self.started:
            rate = ended / (now - self.started)
        eta = left / rate if rate > 0 and left else (0.0 if not left else None)
        return {
            "title": self.title,
            "rows": rows,
            "total": counted,
            "ended": ended,
            "rate": rate,
            "eta": eta,
            "elapsed": (self.ended or now) - self.started,
            "error": c.get("error"),
            "bars": [dict(zip(BAR_FIELDS, b, strict=False)) for b in c.get("bars") or ()],
            "more_bars": int(c.get("more_bars") or 0),
            "done": False,
            "all_ended": (counted > 0 and ended == counted) or not self.task_ids,
            "cancel_requested": self.cancel_requested,
        }

    # -- requests from the front end (any thread) ------------------------------------------------
    def on_request(self, msg: dict[str, Any]) -> None:
        if msg.get("kind") == "cancel":
            self.cancel()
        elif msg.get("kind") == "resync":
            self.show()

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
            parts = [(st, r[st] / total) for st in ORDER]
            ended = r["finished"] + r["failed"] + r["cancelled"]
            rows.append([r["name"], H.bar(parts), f"{ended}/{r['total']}", r["pending"],
                         r["running"], r["finished"], r["failed"] + r["cancelled"]])  # fmt: skip
        inner = H.table(["function", "", "done", "queued", "running", "finished", "failed"], rows)
        bars = [[f"{b['function']}: {b['desc']}" if b["desc"] else b["function"],
                 H.bar([("finished" if b["state"] == 2 else "running", _fraction(b))]),
                 _amount(b)] for b in s.get("bars", [])]  # fmt: skip
        if bars:
            inner += H.table(["reported by tasks", "", ""], bars, "nbcluster-subbars")
        if s.get("more_bars"):
            inner += f"<div>and {s['more_bars']} more bars</div>"
        foot = f"{s.get('ended', 0)}/{s.get('total', 0)} tasks in {H.fmt_seconds(s.get('elapsed'))}"
        if s.get("error"):
            foot += f" — first error: {s['error']}"
        inner += f"<div style='margin-top:4px'>{escape(foot)}</div>"
        return H.box(f"Progress: {s.get('title', self.title)}", inner, "nbcluster-progress-static")

    def text(self) -> str:
        s = self.state
        rows = [[r["name"], f"{r['finished'] + r['failed'] + r['cancelled']}/{r['total']}",
                 r["pending"], r["running"], r["finished"], r["failed"] + r["cancelled"]]
                for r in s.get("rows", [])]  # fmt: skip
        head = f"Progress: {s.get('title', self.title)}"
        out = head + "\n" + H.text_table(
            ["function", "done", "queued", "running", "finished", "failed"], rows)  # fmt: skip
        for b in s.get("bars", []):
            out += f"\n  {b['function']}: {b['desc'] or 'progress'} {_amount(b)}"
        return out


def _fraction(bar: dict[str, Any]) -> float:
    total = bar.get("total")
    return min(1.0, float(bar["n"]) / float(total)) if total else 0.0


def _amount(bar: dict[str, Any]) -> str:
    n, total, unit = bar["n"], bar.get("total"), bar.get("unit") or ""
    done = f"{n:g}/{total:g}" if total else f"{n:g}"
    return f"{done} {unit}".strip()

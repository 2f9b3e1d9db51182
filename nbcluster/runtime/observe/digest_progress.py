"""The progress view's picture: a set of tasks counted by function and state, the first
error, and the bars the tasks report of their own progress (``digest`` says how digests work).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.observe.digest import CODE, Digest, short, task_ids

if TYPE_CHECKING:
    from nbcluster.runtime.observe.event_log import EventLog
    from nbcluster.runtime.observe.state_tables import TaskRecord


def first_error(rec: TaskRecord) -> str:
    """A failed task's error in one line, as the progress view shows the first one."""
    message = (rec.error_message or "").strip().splitlines()
    return f"{short(rec.name)}: {rec.error_type}: {message[0] if message else ''}"[:300]


class TaskBars:
    """What tasks report of their own progress: per task, its bars by key, as
    [description, done, total, unit, time of the last report]; the tasks that reported most
    recently are kept (``MAX_TASKS``)."""

    MAX_TASKS = 10_000

    def __init__(self) -> None:
        self.tasks: dict[bytes, dict[int, list[Any]]] = {}

    def report(self, tid: bytes, key: int, desc: str, n: float, total: float | None,
               unit: str, ts: float) -> None:  # fmt: skip
        bars = self.tasks.pop(tid, None) or {}
        self.tasks[tid] = bars  # now the most recent
        bars[key] = [desc, n, total, unit, ts]
        if len(self.tasks) > self.MAX_TASKS:
            del self.tasks[next(iter(self.tasks))]


#: Sub-bars a progress digest sends (tasks still running first, then the latest to report).
MAX_BARS = 8


class TaskCounts(Digest):
    """Progress: tasks of a set counted by function and state, the first error, and the
    bars the tasks report of their own progress."""

    def __init__(self, log: EventLog, spec: dict[str, Any], bars: TaskBars | None = None) -> None:
        self.log = log
        self.ids = task_ids(spec.get("tasks"))
        self.bars = bars or TaskBars()
        self.rebuild()

    def rebuild(self) -> None:
        self.seen: dict[bytes, tuple[str, int]] = {}
        self.rows: dict[str, list[int]] = {}
        self.error: str | None = None
        tasks = self.log.tasks
        for tid in self.ids:
            rec = tasks.get(tid)
            if rec is not None:
                self._set(tid, rec)
        #: tasks of the set that reported bars
        self.reporting: set[bytes] = self.ids & self.bars.tasks.keys()
        self.changed = True

    def _set(self, tid: bytes, rec: TaskRecord) -> None:
        name, code = rec.name or "?", CODE.get(rec.state, 0)
        old = self.seen.get(tid)
        if old is not None:
            if old[1] == code and old[0] == name:
                return
            self.rows[old[0]][old[1]] -= 1
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = [0] * 5
        row[code] += 1
        self.seen[tid] = (name, code)
        if code == 3 and self.error is None:
            self.error = first_error(rec)
        self.changed = True

    def absorb(self, tasks: set[bytes], objects: set[bytes], nodes: set[str],
               freed: set[bytes]) -> None:  # fmt: skip
        if not tasks:
            return
        recs, put, bars = self.log.tasks, self._set, self.bars.tasks
        for tid in tasks & self.ids:
            rec = recs.get(tid)
            if rec is not None:
                put(tid, rec)
            if tid in bars:
                self.reporting.add(tid)
                self.changed = True

    def take(self) -> tuple[dict[str, Any], bool] | None:
        if not self.changed:
            return None
        self.changed = False
        return self.full(), True

    def full(self, ready: set[bytes] | None = None, ready_all: bool = False) -> dict[str, Any]:
        """Counts now. ``ready``/``ready_all``: tasks whose results the asking driver holds,
        counted as finished though the head may not have heard of their end yet (``unheard``
        says how many)."""
        rows, unheard = self.rows, 0
        if ready or ready_all:
            rows = {k: list(v) for k, v in rows.items()}
            for tid, (name, code) in self.seen.items():
                if code < 2 and (ready_all or (ready is not None and tid in ready)):
                    rows[name][code] -= 1
                    rows[name][2] += 1
                    unheard += 1
        out = [[name, sum(r), *r] for name, r in sorted(rows.items()) if any(r)]
        ended = sum(r[2] + r[3] + r[4] for r in rows.values())
        bars, more = self._bars()
        return {"rows": out, "total": len(self.seen), "ended": ended, "error": self.error,
                "size": len(self.ids), "bars": bars, "more_bars": more,
                "unheard": unheard}  # fmt: skip

    def _bars(self) -> tuple[list[list[Any]], int]:
        """Up to ``MAX_BARS`` sub-bars: [function, description, done, total, unit, state
        code of its task], those of running tasks first, then the latest reported."""
        found = []
        for tid in self.reporting:
            name, code = self.seen.get(tid, ("?", 0))
            for bar in (self.bars.tasks.get(tid) or {}).values():
                found.append((code != 1, -bar[4], short(name), bar, code))
        shown = heapq.nsmallest(MAX_BARS, found, key=lambda b: b[:2])
        return ([[fn, b[0], b[1], b[2], b[3], code] for _, _, fn, b, code in shown],
                max(0, len(found) - MAX_BARS))  # fmt: skip

"""The live ObjectRef graph: tasks and objects as nodes, dependencies as edges.

Scope: the tasks a cell launched (``graph()`` in a kernel: the calling cell's), or the
lineage of some refs (the tasks that made them and, recursively, those that made their
arguments). Each tick sends the nodes that appeared or changed as a numbered delta: new nodes
with their labels as JSON, state changes as one byte per node in a binary buffer, so a burst
of 10,000 finishing tasks is one small message, not 10,000. The ``snapshot`` trait is
refreshed when the work settles, every ``SNAPSHOT_S`` while it runs and when a view asks.
"""

from __future__ import annotations

import time
from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets import names
from nbcluster.widgets.tables import STATES, Changes, Obj, Tables, Task

#: State codes in the binary state column (index into ``STATES``); objects: 5 live, 6 freed.
CODES = {s: i for i, s in enumerate(STATES)} | {"live": 5, "freed": 6}
#: Seconds between two snapshots while the graph keeps changing.
SNAPSHOT_S = 10.0
#: Producer task id of an object: its id's first 16 bytes.
_TID_HEX = 32


def short(name: str) -> str:
    return name.rpartition(".")[2] or name


class GraphView:
    def __init__(self, cell: str | None = None, refs: list[Any] | None = None,
                 cell_number: int | None = None) -> None:  # fmt: skip
        self.cell = cell
        self.lineage = refs is not None
        #: tasks whose lineage we follow (refs mode) / that are in scope (both modes)
        self.wanted: set[str] = {r.task_id().hex() for r in refs or ()}
        self.root_objects: set[str] = {r.hex() for r in refs or ()}
        self.tasks: set[str] = set()
        self.objects: set[str] = set()
        self.edges: set[tuple[str, str]] = set()
        self.widget: Any = None
        self.state: dict[str, Any] = {}
        self._sent: dict[str, int] = {}  # node id -> state code last sent
        self._labels: dict[str, str] = {}
        self._new_edges: list[tuple[str, str]] = []
        self._dirty: set[str] = set()
        self._last_snapshot = 0.0
        self._snapshot_due = True
        self._names: dict[str, str] = {}
        self._names_at = 0.0
        if cell is not None and cell_number is not None:
            names.CELLS.setdefault(cell, cell_number)

    finished = False

    # -- scope -----------------------------------------------------------------------------------
    def _in_scope(self, t: Task) -> bool:
        if self.lineage:
            return t.task_id in self.wanted
        return self.cell is None or t.cell == self.cell

    def _add_task(self, tables: Tables, t: Task) -> None:
        if t.task_id not in self.tasks:
            self.tasks.add(t.task_id)
        for oid in t.args:
            self._add_edge(oid, t.task_id)
            if self.lineage:
                producer = oid[:_TID_HEX]
                if producer not in self.wanted:
                    self.wanted.add(producer)
                    p = tables.tasks.get(producer)
                    if p is not None:
                        self._add_task(tables, p)
        for oid in t.returns:
            self._add_edge(t.task_id, oid)
        self._dirty.add(t.task_id)

    def _add_edge(self, src: str, dst: str) -> None:
        for node in (src, dst):
            if len(node) > _TID_HEX and node not in self.objects:
                self.objects.add(node)
                self._dirty.add(node)
        if (src, dst) not in self.edges:
            self.edges.add((src, dst))
            self._new_edges.append((src, dst))

    def changed(self, tables: Tables, changes: Changes) -> None:
        if changes.lost:
            self._snapshot_due = True
        for tid in changes.tasks:
            t = tables.tasks.get(tid)
            if t is not None and self._in_scope(t):
                self._add_task(tables, t)
        for oid in changes.objects:
            if oid in self.objects or (self.lineage and oid in self.root_objects):
                self._dirty.add(oid)

    # -- records ---------------------------------------------------------------------------------
    def _task_record(self, t: Task) -> list[Any]:
        cell = names.CELLS.get(t.cell or "")
        return [t.task_id, "t", short(t.name), CODES[t.state], None, None, cell]

    def _object_record(self, o: Obj | None, oid: str) -> list[Any]:
        state = CODES["freed"] if o is not None and o.freed else CODES["live"]
        size = o.size if o is not None else None
        return [oid, "o", self._names.get(oid) or "", state, size, None, None]

    def _record(self, tables: Tables, node: str) -> list[Any]:
        if node in self.tasks:
            t = tables.tasks.get(node) or Task(node)
            return self._task_record(t)
        return self._object_record(tables.objects.get(node), node)

    def _refresh_names(self, now: float) -> None:
        if now - self._names_at < 1.0:
            return
        self._names_at = now
        fresh = names.ref_names()
        changed = {oid for oid in self.objects if fresh.get(oid) != self._names.get(oid)}
        self._names = fresh
        self._dirty |= changed

    def tick(self, tables: Tables) -> None:
        if not self.tasks and not self.lineage and self.cell is None:
            for t in tables.tasks.values():
                self._add_task(tables, t)
        now = time.time()
        self._refresh_names(now)
        if self._dirty or self._new_edges:
            self._send_delta(tables)
        if self._snapshot_due or (now - self._last_snapshot > SNAPSHOT_S and self._sent
                                  and self._changed_since_snapshot):  # fmt: skip
            self._snapshot(tables, now)

    _changed_since_snapshot = False

    def resync(self, tables: Tables) -> None:
        """Send the whole graph now (a new widget, or a view that lost track)."""
        self._snapshot(tables, time.time())

    def _send_delta(self, tables: Tables) -> None:
        new_nodes: list[list[Any]] = []
        state_ids: list[str] = []
        state_codes = bytearray()
        for node in self._dirty:
            rec = self._record(tables, node)
            label = f"{rec[2]}|{rec[4]}|{rec[6]}"
            if node not in self._sent or self._labels.get(node) != label:
                new_nodes.append(rec)
            elif self._sent[node] != rec[3]:
                state_ids.append(node)
                state_codes.append(rec[3])
            self._sent[node] = rec[3]
            self._labels[node] = label
        self._dirty.clear()
        edges = [list(e) for e in self._new_edges]
        self._new_edges.clear()
        if not (new_nodes or state_ids or edges):
            return
        self._changed_since_snapshot = True
        self.state = self._summary(tables)
        if self.widget is not None and not self._snapshot_due:
            delta = {"nodes": new_nodes, "edges": edges, "state_ids": state_ids,
                     "summary": self.state}  # fmt: skip
            self.widget.send_delta(delta, [bytes(state_codes)])

    def _snapshot(self, tables: Tables, now: float) -> None:
        self._snapshot_due = False
        self._changed_since_snapshot = False
        self._last_snapshot = now
        nodes = [self._record(tables, n) for n in (*self.tasks, *self.objects)]
        for rec in nodes:
            self._sent[rec[0]] = rec[3]
            self._labels[rec[0]] = f"{rec[2]}|{rec[4]}|{rec[6]}"
        self.state = self._summary(tables)
        if self.widget is not None:
            self.widget.set_snapshot({"nodes": nodes, "edges": [list(e) for e in self.edges],
                                      "summary": self.state})  # fmt: skip

    def _summary(self, tables: Tables) -> dict[str, Any]:
        counts = dict.fromkeys(STATES, 0)
        for tid in self.tasks:
            counts[(tables.tasks.get(tid) or Task(tid)).state] += 1
        if self.lineage:
            scope = "lineage of the given refs"
        else:
            scope = f"cell In[{names.CELLS.get(self.cell, '?')}]" if self.cell else "all tasks"
        return {"tasks": len(self.tasks), "objects": len(self.objects), "states": counts,
                "scope": scope}  # fmt: skip

    # -- requests from the front end -----------------------------------------------------------
    def on_request(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        if kind == "resync":
            self._snapshot_due = True
        elif kind == "details" and self.widget is not None:
            node = str(msg.get("id", ""))
            self.widget.send({"kind": "details", "id": node, "info": self.details(node)})

    def details(self, node: str) -> dict[str, Any]:
        from nbcluster.widgets.feed import feed

        tables = feed().tables
        if node in self.tasks:
            t = tables.tasks.get(node) or Task(node)
            info: dict[str, Any] = {
                "task": t.task_id, "function": t.name, "state": t.state,
                "cell": names.CELLS.get(t.cell or ""), "attempt": t.attempt,
                "args": [self._names.get(a) or a for a in t.args], "worker": t.worker,
            }  # fmt: skip
            try:
                from nbcluster.util import state

                rec = state.get_task(t.task_id, timeout=5)
            except Exception:
                rec = None
            if rec is not None:
                info.update(node=rec.node_id, worker_pid=rec.worker_pid, call_site=rec.call_site,
                            submitted_ms=rec.creation_time_ms, started_ms=rec.start_time_ms,
                            ended_ms=rec.end_time_ms)  # fmt: skip
                if rec.error_type:
                    info["error"] = f"{rec.error_type}: {rec.error_message}"
            elif t.error:
                info["error"] = t.error
            return info
        o = tables.objects.get(node) or Obj(node)
        return {"object": node, "size": o.size, "variable": self._names.get(node),
                "made_by": o.task_id, "location": o.location, "freed": o.freed,
                "spilled": o.spilled}  # fmt: skip

    # -- static forms ------------------------------------------------------------------------------
    def html(self) -> str:
        s = self.state or {"tasks": 0, "objects": 0, "states": {}, "scope": ""}
        rows = [[st, n] for st, n in s.get("states", {}).items() if n]
        inner = H.table(["state", "tasks"], rows)
        title = f"ObjectRef graph ({s.get('scope')}): {s['tasks']} tasks, {s['objects']} objects"
        return H.box(title, inner, "nbcluster-graph-static")

    def text(self) -> str:
        s = self.state or {"tasks": 0, "objects": 0, "states": {}, "scope": ""}
        states = ", ".join(f"{n} {st}" for st, n in s.get("states", {}).items() if n)
        return (f"ObjectRef graph ({s.get('scope')}): {s['tasks']} tasks, {s['objects']} objects"
                + (f" ({states})" if states else ""))

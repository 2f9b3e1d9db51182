"""The live ObjectRef graph: tasks and objects as nodes, dependencies as edges.

Scope: the tasks a cell launched (``graph()`` in a kernel: the calling cell's), the lineage
of some refs (the tasks that made them and, recursively, those that made their arguments),
or every task. The head keeps the graph (a ``graph`` digest) and pushes, at most ten times a
second, what changed: new nodes as records, state changes as one byte per node in a binary
buffer, new edges; beyond a few thousand nodes, the groups (one per function) instead, so a
burst of 100,000 tasks is a few small messages, not 100,000 records. This view forwards them
to the browser, adding what only the kernel knows: each cell's ``In[n]`` and the notebook
variable that holds an object. Whole pictures (a view opens, or has lost track, or the work
settled) go to the ``snapshot`` trait, which a fresh view renders from and a saved notebook
keeps.
"""

from __future__ import annotations

import time
from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets import names
from nbcluster.widgets.feed import FedView, feed

STATES = ("pending", "running", "finished", "failed", "cancelled")


class GraphView(FedView):
    kind = "graph"

    def __init__(self, cell: str | None = None, refs: list[Any] | None = None,
                 cell_number: int | None = None, group_at: int | None = None) -> None:  # fmt: skip
        self.cell = cell
        if group_at is not None and (not isinstance(group_at, int) or group_at < 1):
            raise ValueError(f"group_at is a number of nodes (1 or more), not {group_at!r}")
        self.group_at = group_at
        self.lineage = refs is not None
        self.roots = list(dict.fromkeys(r.task_id() for r in refs or ()))
        self.summary: dict[str, Any] = {"tasks": 0, "objects": 0, "states": {}}
        self.mode = "nodes"
        #: the last whole picture (what the snapshot trait holds)
        self.picture: dict[str, Any] = {}
        #: objects in the graph (node mode): the ids whose variable names the browser needs
        self._objects: dict[str, int | None] = {}
        self._names_sent: dict[str, str] = {}
        self._names_at = 0.0
        self._cells_sent = -1
        if cell is not None and cell_number is not None:
            names.CELLS.setdefault(cell, cell_number)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"group_at": self.group_at} if self.group_at else {}
        if self.lineage:
            spec["tasks"] = b"".join(self.roots)
        elif self.cell is not None:
            spec["cell"] = self.cell
        return spec

    @property
    def scope(self) -> str:
        if self.lineage:
            return "lineage of the given refs"
        return f"cell In[{names.CELLS.get(self.cell, '?')}]" if self.cell else "all tasks"

    # -- feed ----------------------------------------------------------------------------------
    def on_digest(self, payload: Any, full: bool) -> None:
        self.mode = payload.get("mode", "nodes")
        self.summary = {**payload.get("summary", {}), "scope": self.scope}
        if full:
            self._objects.clear()
            self._names_sent.clear()
            self._cells_sent = -1
        if self.mode == "nodes":
            for rec in payload.get("nodes", ()):
                if rec[1] == "o":
                    self._objects[rec[0]] = rec[4]
        extra = self._extras(time.time(), force=full)
        if full:
            self.picture = {**payload, **extra, "summary": self.summary}
            self.picture.pop("state_codes", None)
            self.show()
        elif self.widget is not None:
            codes = payload.pop("state_codes", b"") or b""
            self.widget.send_delta({**payload, **extra, "summary": self.summary}, [codes])

    def tick(self, now: float) -> None:
        if self.mode == "nodes" and self.views and self.widget is not None:
            extra = self._extras(now)
            if extra:
                self.widget.send_delta(extra, [])

    def _extras(self, now: float, force: bool = False) -> dict[str, Any]:
        """What only the kernel knows and the browser has not got yet: the cells' ``In[n]``
        and (at most once a second, in node mode) the variables holding the objects."""
        out: dict[str, Any] = {}
        if force or len(names.CELLS) != self._cells_sent:
            self._cells_sent = len(names.CELLS)
            out["cells"] = dict(names.CELLS)
        if self.mode == "nodes" and self._objects and (force or now - self._names_at >= 1.0):
            self._names_at = now
            fresh = names.ref_names()
            changed = {oid: fresh.get(oid, "") for oid in self._objects
                       if fresh.get(oid, "") != self._names_sent.get(oid, "")}  # fmt: skip
            if changed:
                self._names_sent.update(changed)
                out["names"] = changed
        return out

    def show(self) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.picture)

    def resync(self) -> None:
        """Ask the head for the whole graph (a view lost track)."""
        if self.did is not None:
            feed().request_full(self.did)

    # -- requests from the front end -----------------------------------------------------------
    def on_request(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        if kind == "resync":
            self.resync()
        elif kind == "details" and self.widget is not None:
            node = str(msg.get("id", ""))
            self.widget.send({"kind": "details", "id": node, "info": self.details(node)})

    def details(self, node: str) -> dict[str, Any]:
        from nbcluster.util import state

        if len(node) > 32:  # an object: its producer's task id and a 4-byte index
            return {"object": node, "size": self._objects.get(node),
                    "variable": self._names_sent.get(node) or names.ref_names().get(node),
                    "made_by": node[:32] if not node.endswith("00000000") else "put"}  # fmt: skip
        try:
            rec = state.get_task(node, timeout=5)
        except Exception as e:
            return {"task": node, "error": f"could not ask the cluster: {e}"}
        if rec is None:
            return {"task": node, "state": "unknown to the cluster (forgotten, or not yet seen)"}
        from nbcluster.runtime.observe.digest import cell_of

        info: dict[str, Any] = {
            "task": rec.task_id, "function": rec.name, "state": rec.state.lower(),
            "cell": names.CELLS.get(cell_of(rec.tag) or ""), "attempt": rec.attempt_number,
            "args": [self._names_sent.get(a) or a for a in rec.args],
            "node": rec.node_id, "worker_pid": rec.worker_pid, "call_site": rec.call_site,
            "submitted_ms": rec.creation_time_ms, "started_ms": rec.start_time_ms,
            "ended_ms": rec.end_time_ms,
        }  # fmt: skip
        if rec.error_type:
            info["error"] = f"{rec.error_type}: {rec.error_message}"
        return info

    # -- static forms ------------------------------------------------------------------------------
    def _title(self) -> str:
        s = self.summary
        return (f"ObjectRef graph ({self.scope}): {s.get('tasks', 0)} tasks, "
                f"{s.get('objects', 0)} objects")  # fmt: skip

    def html(self) -> str:
        rows = [[st, n] for st, n in self.summary.get("states", {}).items() if n]
        return H.box(self._title(), H.table(["state", "tasks"], rows), "nbcluster-graph-static")

    def text(self) -> str:
        states = ", ".join(f"{n} {st}" for st, n in self.summary.get("states", {}).items() if n)
        return self._title() + (f" ({states})" if states else "")

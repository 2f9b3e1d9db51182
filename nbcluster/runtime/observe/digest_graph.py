"""The graph view's picture: the tasks of a scope, the objects they take and return, and the
edges between them, node by node or grouped by function (``digest`` says how digests work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbcluster.runtime.observe.digest import (
    CODE,
    FREED,
    LIVE,
    STATE_NAMES,
    TASK_ID_BYTES,
    Digest,
    cell_of,
    short,
    task_ids,
)

if TYPE_CHECKING:
    from nbcluster.runtime.observe.event_log import EventLog
    from nbcluster.runtime.observe.state_tables import TaskRecord

#: A graph with more nodes than this is sent as groups (one per function), not node by node.
GROUP_AT = 2000
_PUT_SUFFIX = b"\0\0\0\0"
_FIRST = (1).to_bytes(4, "big")


def _returns(rec: TaskRecord) -> list[bytes]:
    """The ids of a task's results (most tasks have one)."""
    return [rec.task_id + _FIRST] if rec.num_returns == 1 else rec.return_ids()


class TaskGraph(Digest):
    """The graph of a scope of tasks: the tasks, the objects they take and return, the edges.

    Scope: one cell's tasks (``{"cell": msg_id}``), the lineage of some tasks (``{"tasks":
    [...]}``: them, the tasks that made their arguments, and so on), or every task (``{}``).
    Up to ``group_at`` nodes a change is the new nodes (as records), the state changes (ids
    and one byte each) and the new edges; beyond, nodes are grouped by function (objects with
    the function that made them) and each change is the (short) list of groups.
    """

    settles = True

    def __init__(self, log: EventLog, spec: dict[str, Any]) -> None:
        self.log = log
        self.cell: str | None = spec.get("cell")
        roots = spec.get("tasks")
        self.lineage = roots is not None
        self.roots = task_ids(roots)
        self.group_at = int(spec.get("group_at") or GROUP_AT)
        self.rebuild()

    def rebuild(self) -> None:
        self.wanted = set(self.roots)
        #: node id -> (group, state code), as counted and (in node mode) sent
        self.tasks: dict[bytes, tuple[str, int]] = {}
        self.objects: dict[bytes, tuple[str, int]] = {}
        self.sizes: dict[bytes, int | None] = {}
        self.linked: set[bytes] = set()
        #: group -> [tasks, objects, bytes, count by state code...]
        self.groups: dict[str, list[int]] = {}
        self.group_edges: dict[tuple[str, str], int] = {}
        self.grouped = False
        # Node mode only (bounded by ``group_at``): every edge, and what is still to send.
        self.edges: list[tuple[bytes, bytes]] = []
        self._new: set[bytes] = set()  # nodes to send as records
        self._moved: set[bytes] = set()  # nodes to send as state changes
        self._new_edges: list[tuple[bytes, bytes]] = []
        self._groups_changed = False
        self._switched = False
        recs = self.log.tasks
        if self.lineage:
            self._add([recs[t] for t in self.roots if t in recs])
        else:
            self._add([r for r in recs.values() if self._in_scope(r)])

    # -- scope -------------------------------------------------------------------------------
    def _in_scope(self, rec: TaskRecord) -> bool:
        if self.lineage:
            return rec.task_id in self.wanted
        return self.cell is None or cell_of(rec.tag) == self.cell

    def absorb(self, tasks: set[bytes], objects: set[bytes], nodes: set[str],
               freed: set[bytes]) -> None:  # fmt: skip
        recs, mine, everything = self.log.tasks, self.tasks, self.cell is None and not self.lineage
        changed = []
        for tid in tasks:
            rec = recs.get(tid)
            if rec is not None and (everything or tid in mine or self._in_scope(rec)):
                changed.append(rec)
        if changed:
            self._add(changed)
        if objects:
            for oid in objects & self.objects.keys():
                self._object(oid, oid in freed)

    # -- bookkeeping (per task: the hot path while a graph is shown) -------------------------
    def _group_row(self, group: str) -> list[int]:
        g = self.groups.get(group)
        if g is None:
            g = self.groups[group] = [0] * 10
        return g

    def _add(self, recs: list[TaskRecord]) -> None:
        """Take in tasks that changed: their nodes first, then the edges of those newly
        submitted, so an object is grouped with its producer whatever order they came in."""
        for rec in recs:
            self._node(rec)
        linked = self.linked
        todo = [r for r in recs if r.creation_time is not None and r.task_id not in linked]
        while todo:
            rec = todo.pop()
            linked.add(rec.task_id)
            more = self._producers(rec) if self.lineage else ()
            for p in more:
                self._node(p)
            self._link(rec)
            todo.extend(p for p in more if p.creation_time is not None)
        self._groups_changed = True

    def _node(self, rec: TaskRecord) -> None:
        tid = rec.task_id
        group, code = rec.name or "?", CODE.get(rec.state, 0)
        old = self.tasks.get(tid)
        if old is not None:
            if old[1] == code and old[0] == group:
                return
            g = self.groups[old[0]]
            g[0] -= 1
            g[3 + old[1]] -= 1
        g = self._group_row(group)
        g[0] += 1
        g[3 + code] += 1
        self.tasks[tid] = (group, code)
        if not self.grouped:
            (self._moved if old is not None and old[0] == group else self._new).add(tid)
        if code == 2 and tid in self.linked:  # finished: the sizes of its results are known
            stored = self.log.objects
            if stored:
                for oid in _returns(rec):
                    if oid in stored:
                        self._object(oid, False)

    def _producers(self, rec: TaskRecord) -> list[TaskRecord]:
        """For a lineage: the tasks that made this one's arguments, new to the scope."""
        more, recs = [], self.log.tasks
        for oid in (*(rec.args or ()), *(rec.nested_args or ())):
            producer = oid[:TASK_ID_BYTES]
            if producer not in self.wanted and not oid.endswith(_PUT_SUFFIX):
                self.wanted.add(producer)
                p = recs.get(producer)
                if p is not None and p.task_id not in self.linked:
                    more.append(p)
        return more

    def _link(self, rec: TaskRecord) -> None:
        """A submitted task's edges: from its arguments, and to what it returns (its results
        are new objects of its group, joined to it within the group)."""
        tid = rec.task_id
        group = self.tasks[tid][0]
        objects, grouped = self.objects, self.grouped
        args = rec.args or ()
        if rec.nested_args:
            args = (*args, *rec.nested_args)
        for oid in args:
            entry = objects.get(oid)
            if entry is None:
                self._object(oid, False)
                entry = objects[oid]
            if entry[0] != group:
                key = (entry[0], group)
                self.group_edges[key] = self.group_edges.get(key, 0) + 1
            if not grouped:
                self._edge(oid, tid)
        stored = self.log.objects
        g = self._group_row(group)
        for oid in _returns(rec):
            if oid in objects or oid in stored:
                self._object(oid, False, group)
            else:  # the common case: a result not made yet
                objects[oid] = (group, LIVE)
                self.sizes[oid] = None
                g[1] += 1
                g[3 + LIVE] += 1
                if not grouped:
                    self._new.add(oid)
            if not grouped:
                self._edge(tid, oid)

    def _group_of_object(self, oid: bytes) -> str:
        producer = self.tasks.get(oid[:TASK_ID_BYTES])
        if producer is not None:
            return producer[0]
        return "put" if oid.endswith(_PUT_SUFFIX) else "other"

    def _object(self, oid: bytes, freed: bool, group: str | None = None) -> None:
        stored = self.log.objects.get(oid)
        size = stored.object_size if stored is not None else self.sizes.get(oid)
        old = self.objects.get(oid)
        code = FREED if freed or (old is not None and old[1] == FREED) else LIVE
        if old is not None:
            if old[1] == code and self.sizes.get(oid) == size:
                return
            group = old[0]
            g = self.groups[group]
            g[1] -= 1
            g[2] -= self.sizes.get(oid) or 0
            g[3 + old[1]] -= 1
            if not self.grouped:
                (self._new if self.sizes.get(oid) != size else self._moved).add(oid)
        else:
            group = group or self._group_of_object(oid)
            if not self.grouped:
                self._new.add(oid)
        self.objects[oid] = (group, code)
        self.sizes[oid] = size
        g = self._group_row(group)
        g[1] += 1
        g[2] += size or 0
        g[3 + code] += 1
        self._groups_changed = True

    def _edge(self, src: bytes, dst: bytes) -> None:
        self.edges.append((src, dst))
        self._new_edges.append((src, dst))

    # -- payloads -----------------------------------------------------------------------------
    def _record(self, node: bytes) -> list[Any]:
        task = self.tasks.get(node)
        if task is not None:
            rec = self.log.tasks.get(node)
            cell = cell_of(rec.tag) if rec is not None else None
            return [node.hex(), "t", short(task[0]), task[1], None, None, cell]
        code = self.objects[node][1]
        return [node.hex(), "o", "", code, self.sizes.get(node), None, None]

    def summary(self) -> dict[str, Any]:
        states = [0] * 5
        for g in self.groups.values():
            for i in range(5):
                states[i] += g[3 + i]
        return {"tasks": len(self.tasks), "objects": len(self.objects),
                "states": dict(zip(STATE_NAMES[:5], states, strict=True))}  # fmt: skip

    def _grouped(self) -> dict[str, Any]:
        groups = [[key, "put objects" if key == "put" else short(key), g[0], g[1], g[2], g[3:]]
                  for key, g in self.groups.items() if g[0] or g[1]]  # fmt: skip
        edges = [[a, b, w] for (a, b), w in self.group_edges.items()]
        return {"mode": "grouped", "groups": groups, "group_edges": edges,
                "summary": self.summary()}  # fmt: skip

    def _outgrow(self) -> None:
        """Past ``group_at`` nodes the graph is grouped from then on (the next ``take`` is the
        whole grouped picture), and keeps no node-by-node state."""
        if not self.grouped and len(self.tasks) + len(self.objects) > self.group_at:
            self.grouped = self._switched = True
            self.edges = []
            self.pushed_full_nodes()

    def pushed_full_nodes(self) -> None:
        self._new.clear()
        self._moved.clear()
        self._new_edges.clear()

    def pushed_full(self) -> None:
        self.pushed_full_nodes()
        self._groups_changed = self._switched = False

    def take(self) -> tuple[dict[str, Any], bool] | None:
        self._outgrow()
        if self._switched:
            whole = self.full()
            self.pushed_full()
            return whole, True
        if self.grouped:
            if not self._groups_changed:
                return None
            self._groups_changed = False
            return self._grouped(), False
        if not (self._new or self._moved or self._new_edges):
            return None
        nodes = [self._record(n) for n in self._new]
        moved = [n for n in self._moved if n not in self._new]
        codes = bytes(self._code(n) for n in moved)
        edges = [[a.hex(), b.hex()] for a, b in self._new_edges]
        self._new.clear()
        self._moved.clear()
        self._new_edges.clear()
        self._groups_changed = False
        return {"mode": "nodes", "nodes": nodes, "edges": edges,
                "state_ids": [n.hex() for n in moved], "state_codes": codes,
                "summary": self.summary()}, False  # fmt: skip

    def _code(self, node: bytes) -> int:
        entry = self.tasks.get(node) or self.objects.get(node)
        return entry[1] if entry is not None else 0

    def full(self) -> dict[str, Any]:
        self._outgrow()
        if self.grouped:
            return self._grouped()
        return {"mode": "nodes", "nodes": [self._record(n) for n in (*self.tasks, *self.objects)],
                "edges": [[a.hex(), b.hex()] for a, b in self.edges],
                "summary": self.summary()}  # fmt: skip

"""Snapshot queries over the head's state tables: the server side of ``nbcluster.util.state``.

Kept apart from ``event_log`` (which keeps the tables current) because the two change for
different reasons: the log for the wire and the hot path, the queries for what users ask.
Answers are plain dicts with the public field names; filtering happens here, so a query for
the few running tasks among 100,000 sends only those.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.observe.state_tables import (
    NodeRecord,
    ObjectRecord,
    TaskRecord,
    WorkerRecord,
    check_filters,
    matches,
)
from nbcluster.runtime.wire.transport import parse_address

if TYPE_CHECKING:
    from nbcluster.runtime.wire.transport import Connection, Endpoint, RpcHandler

log = logging.getLogger("nbcluster.events")

KINDS = ("tasks", "actors", "objects", "nodes", "workers")
#: Record attributes whose public field has the same name and value (filtered before the
#: records become dicts).
_QUICK = ("state", "name")
#: How long ``state_memory`` waits for each process's reference table.
REFS_TIMEOUT_S = 3.0


class StateQueries:
    endpoint: Endpoint

    def __init__(self) -> None:
        self.tasks: dict[bytes, TaskRecord] = {}
        self.objects: dict[bytes, ObjectRecord] = {}
        self.actors: dict[bytes, dict[str, Any]] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.workers: dict[bytes, WorkerRecord] = {}
        self.worker_by_addr: dict[str, WorkerRecord] = {}
        self.node_by_addr: dict[str, str] = {}
        self._ref_conns: dict[str, Connection] = {}

    def available_of(self, node_id: str) -> dict[str, float] | None:
        raise NotImplementedError

    def catch_up(self) -> None:
        """Bring the tables up to date (the log applies some events only when asked)."""

    def install_queries(self, rpc: dict[str, RpcHandler]) -> None:
        rpc["state_list"] = self.state_list
        rpc["state_get"] = self.state_get
        rpc["state_summary"] = self.state_summary
        rpc["state_timeline"] = self.state_timeline
        rpc["state_memory"] = self.state_memory

    # -- lists ----------------------------------------------------------------------------------
    def _rss(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for n in self.nodes.values():
            for pid, rss in (n.stats.get("workers") or {}).items():
                out[int(pid)] = rss
        return out

    def _records(self, kind: str) -> list[Any]:
        if kind == "tasks":
            return list(self.tasks.values())
        if kind == "objects":
            return list(self.objects.values())
        if kind == "actors":
            return list(self.actors.values())
        if kind == "nodes":
            return list(self.nodes.values())
        if kind == "workers":
            return list(self.workers.values())
        raise ValueError(f"unknown state kind {kind!r}; expected one of {', '.join(KINDS)}")

    def _public(self, kind: str, rec: Any, rss: dict[int, int]) -> dict[str, Any]:
        if kind == "actors":
            return dict(rec)
        if kind == "nodes":
            return rec.public(self.available_of(rec.node_id) if rec.state == "ALIVE" else {})  # type: ignore[no-any-return]
        if kind == "workers":
            return rec.public(rss)  # type: ignore[no-any-return]
        return rec.public()  # type: ignore[no-any-return]

    def state_list(
        self, conn: Connection | None, kind: str, filters: Any = None, limit: int | None = 100
    ) -> dict[str, Any]:
        """The newest ``limit`` records of ``kind`` matching every filter, oldest first, and
        how many matched in all (so a client can say it shows 100 of 10,000)."""
        self.catch_up()
        flt = check_filters(filters)
        records = self._records(kind)
        rss = self._rss() if kind == "workers" else {}
        cap = len(records) if limit is None or limit < 0 else int(limit)
        if not flt:  # the common page view: the newest few of many, counted without a walk
            newest = records[len(records) - cap :] if cap else []
            return {"items": [self._public(kind, r, rss) for r in newest], "total": len(records)}
        # States and names narrow the records before any is turned into a dict (a page asking
        # for the failed few among 100,000 tasks); one pass per filter, no call per record.
        for k, v in [(k, str(v).lower()) for k, op, v in flt if op == "=" and k in _QUICK]:
            records = [r for r in records if isinstance(r, dict)
                       or str(getattr(r, k, "")).lower() == v]  # fmt: skip
        out: list[dict[str, Any]] = []
        total = 0
        for rec in reversed(records):
            item = self._public(kind, rec, rss)
            if not matches(item, flt):
                continue
            total += 1
            if len(out) < cap:
                out.append(item)
        out.reverse()
        return {"items": out, "total": total}

    def state_get(self, conn: Connection | None, kind: str, id_hex: str) -> Any:
        self.catch_up()
        key = id_hex if kind == "nodes" else bytes.fromhex(id_hex)
        tables: dict[str, dict[Any, Any]] = {
            "tasks": self.tasks, "actors": self.actors, "objects": self.objects,
            "nodes": self.nodes, "workers": self.workers,
        }  # fmt: skip
        table = tables[kind]
        rec = table.get(key)
        return None if rec is None else self._public(kind, rec, self._rss())

    def state_summary(self, conn: Connection | None) -> dict[str, Any]:
        """Task counts by function name and state, as Ray's ``summarize_tasks``."""
        self.catch_up()
        summary: dict[str, dict[str, Any]] = {}
        for rec in self.tasks.values():
            entry = summary.get(rec.name)
            if entry is None:
                entry = summary[rec.name] = {
                    "func_or_class_name": rec.name, "type": rec.type, "state_counts": {},
                }  # fmt: skip
            counts = entry["state_counts"]
            counts[rec.state] = counts.get(rec.state, 0) + 1
        return {"cluster": {"summary": summary, "total_tasks": len(self.tasks)}}

    def state_timeline(self, conn: Connection | None) -> list[Any]:
        """[name, task id, node id, worker pid, start, end, state, type] of every task that ran."""
        self.catch_up()
        out = []
        for r in self.tasks.values():
            if r.start_time is not None:
                end = r.end_time or r.finish_time
                out.append([r.name, r.task_id.hex(), r.node_id, r.worker_pid, r.start_time, end,
                            r.state, r.type])  # fmt: skip
        return out

    # -- memory: ask every process why its objects live ------------------------------------
    async def state_memory(self, conn: Connection | None) -> dict[str, Any]:
        """Every object some process references, with who references it and how, plus each
        node's store totals. Processes that do not answer in time are listed as such."""
        self.catch_up()
        live = [w for w in self.workers.values() if w.state == "ALIVE"]
        answers = await asyncio.gather(*(self._refs_of(w) for w in live), return_exceptions=True)
        objects: dict[bytes, dict[str, Any]] = {}
        unreachable = []
        for w, ans in zip(live, answers, strict=True):
            if isinstance(ans, BaseException) or ans is None:
                unreachable.append({"pid": w.pid, "address": w.address, "error": str(ans)})
                continue
            for oid, ref_kind, owned, owner, size, _local, borrowers, where in ans["refs"]:
                item = objects.get(oid)
                if item is None:
                    item = objects[oid] = self._object_item(oid, ref_kind, owner, size, where)
                    item["references"] = []
                if owned:  # the owner knows best what and where the value is
                    item["object_size"] = size or item["object_size"]
                    if oid not in self.objects and ref_kind != "ACTOR_HANDLE":
                        item["state"] = where
                item["references"].append(
                    {"pid": ans["pid"], "process": ans["kind"], "address": ans["address"],
                     "reference_type": ref_kind, "owned": owned, "borrowers": borrowers}
                )  # fmt: skip
        nodes = [self._public("nodes", n, {}) for n in self.nodes.values()]
        return {"objects": list(objects.values()), "nodes": nodes, "unreachable": unreachable}

    def _object_item(self, oid: bytes, ref_kind: str, owner: str, size: int, where: str
                     ) -> dict[str, Any]:  # fmt: skip
        """What the tables know of an object a process references (small task results are
        not tracked as objects: their task says where they came from)."""
        rec = self.objects.get(oid)
        if rec is not None:
            return rec.public()
        task = self.tasks.get(oid[:16]) if not oid.endswith(b"\0\0\0\0") else None
        return {
            "object_id": oid.hex(), "object_size": size, "owner": owner,
            "owner_pid": task.owner_pid if task else None,
            "state": "ACTOR" if ref_kind == "ACTOR_HANDLE" else where,
            "spilled": False, "call_site": task.call_site if task else "",
            "node_id": None, "task_id": task.task_id.hex() if task else None,
        }  # fmt: skip

    async def _refs_of(self, w: WorkerRecord) -> Any:
        conn = self._ref_conns.get(w.address)
        if conn is None or conn.closed:
            host, port = parse_address(w.address)
            conn = await self.endpoint.connect(host, port, timeout=REFS_TIMEOUT_S)
            self._ref_conns[w.address] = conn
        for addr in [a for a, c in self._ref_conns.items() if c.closed]:
            del self._ref_conns[addr]
        return await asyncio.wait_for(conn.call("debug_refs"), REFS_TIMEOUT_S)

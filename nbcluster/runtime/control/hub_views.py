"""What each user of a JupyterHub service sees: their own tasks, actors and objects.

The head's state API (``nbcluster.util.state``, ``nbcluster list``) and the dashboard's
views answer a user's connection with the user's own work only; nodes and workers (other
than other users' drivers) are everyone's. Admins and the cluster's own processes see
everything. A task is a user's when their driver submitted it, or when a task of theirs
did (``task_users``). The live event stream, which is not filtered, is for admins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcluster.runtime.control.actor_manager import ActorManager
    from nbcluster.runtime.control.hub_service import Users
    from nbcluster.runtime.wire.transport import Connection, Endpoint


def task_users(tasks: Iterable[dict[str, Any]], workers: Iterable[dict[str, Any]],
               by_addr: dict[str, str]) -> dict[str, str]:  # fmt: skip
    """task id -> user, for tasks a user's driver submitted, or a task of theirs did (its
    owner is a worker that was running one of the user's tasks when it was submitted)."""
    worker_at = {w["address"]: w["worker_id"] for w in workers}
    runs: dict[str, list[tuple[float, float, str]]] = {}
    out: dict[str, str] = {}
    for t in sorted(tasks, key=lambda t: t["creation_time_ms"] or 0):
        user = by_addr.get(t["owner"])
        if user is None:
            made = t["creation_time_ms"] or 0
            for start, end, who in runs.get(worker_at.get(t["owner"], ""), ()):
                if start <= made <= end:
                    user = who
                    break
        if user is None:
            continue
        out[t["task_id"]] = user
        if t["worker_id"] and t["start_time_ms"] is not None:
            end = t["end_time_ms"] if t["end_time_ms"] is not None else float("inf")
            runs.setdefault(t["worker_id"], []).append((t["start_time_ms"], end, user))
    return out


def install(endpoint: Endpoint, users: Users, actors: ActorManager) -> None:
    """The head's state API, filtered for users; the dashboard's views too."""
    rpc = endpoint.rpc
    orig = {name: rpc[name] for name in (
        "state_list", "state_get", "state_summary", "state_timeline", "state_memory",
        "subscribe_events",
    )}  # fmt: skip

    def everything(kind: str) -> list[dict[str, Any]]:
        return list(orig["state_list"](None, kind, None, None)["items"])

    def visible(user: str, kind: str) -> Callable[[dict[str, Any]], bool]:
        if kind == "nodes":
            return lambda item: True
        if kind == "workers":
            return lambda w: w["worker_type"] != "DRIVER" or users.by_addr.get(w["address"]) == user
        if kind == "actors":
            mine = {a.actor_id.hex() for a in actors.actors.values()
                    if users.by_addr.get(a.owner) == user}  # fmt: skip
            return lambda a: a["actor_id"] in mine
        owners = task_users(everything("tasks"), everything("workers"), users.by_addr)
        if kind == "tasks":
            return lambda t: owners.get(t["task_id"]) == user
        return lambda o: users.by_addr.get(o["owner"]) == user or (
            o.get("task_id") is not None and owners.get(o["task_id"]) == user
        )  # objects

    def state_list(conn: Connection | None, kind: str, filters: Any = None,
                   limit: int | None = 100) -> Any:  # fmt: skip
        user = users.restricted(conn)
        if user is None:
            return orig["state_list"](conn, kind, filters, limit)
        keep = visible(user, kind)
        items = [i for i in orig["state_list"](conn, kind, filters, None)["items"] if keep(i)]
        total = len(items)
        if limit is not None and limit >= 0:
            items = items[len(items) - min(limit, len(items)) :]
        return {"items": items, "total": total}

    def state_get(conn: Connection | None, kind: str, id_hex: str) -> Any:
        item = orig["state_get"](conn, kind, id_hex)
        user = users.restricted(conn)
        if user is None or item is None:
            return item
        return item if visible(user, kind)(item) else None

    def state_summary(conn: Connection | None) -> Any:
        user = users.restricted(conn)
        if user is None:
            return orig["state_summary"](conn)
        summary: dict[str, dict[str, Any]] = {}
        tasks = state_list(conn, "tasks", None, None)["items"]
        for t in tasks:
            entry = summary.setdefault(t["name"], {
                "func_or_class_name": t["name"], "type": t["type"], "state_counts": {},
            })  # fmt: skip
            counts = entry["state_counts"]
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        return {"cluster": {"summary": summary, "total_tasks": len(tasks)}}

    def state_timeline(conn: Connection | None) -> Any:
        user = users.restricted(conn)
        rows = orig["state_timeline"](conn)
        if user is None:
            return rows
        mine = {t["task_id"] for t in state_list(conn, "tasks", None, None)["items"]}
        return [r for r in rows if r[1] in mine]

    async def state_memory(conn: Connection | None) -> Any:
        answer = await orig["state_memory"](conn)
        user = users.restricted(conn)
        if user is not None:
            keep = visible(user, "objects")
            answer["objects"] = [o for o in answer["objects"] if keep(o)]
        return answer

    def subscribe_events(conn: Connection | None, *args: Any) -> Any:
        if users.restricted(conn) is not None:
            raise PermissionError(
                "the live event stream of a shared cluster is for its admins; "
                "use the state API (nbcluster.util.state), which shows your own work"
            )
        return orig["subscribe_events"](conn, *args)

    rpc.update(state_list=state_list, state_get=state_get, state_summary=state_summary,
               state_timeline=state_timeline, state_memory=state_memory,
               subscribe_events=subscribe_events)  # fmt: skip
    if "dash_overview" in rpc:
        _dashboard_views(rpc, users, state_list)


def _dashboard_views(rpc: dict[str, Any], users: Users, state_list: Callable[..., Any]) -> None:
    """The dashboard's views of a user: their own tasks, actors and objects in the counts,
    the timeline, the cells and the actor calls; nodes and resources are everyone's."""
    orig = {name: rpc[name] for name in (
        "dash_overview", "dash_cells", "dash_timeline", "dash_actor_calls",
    )}  # fmt: skip

    def mine(conn: Connection, kind: str) -> list[dict[str, Any]]:
        return list(state_list(conn, kind, None, None)["items"])

    def dash_overview(conn: Connection | None, since: float | None = None) -> Any:
        out = orig["dash_overview"](conn, since)
        if users.restricted(conn) is None:
            return out
        assert conn is not None
        tasks, actors, objects = (mine(conn, k) for k in ("tasks", "actors", "objects"))
        out = dict(out)
        out["tasks"] = {"total": len(tasks), "by_state": _count(t["state"] for t in tasks)}
        out["actors"] = {"total": len(actors), "by_state": _count(a.get("state") for a in actors)}
        out["objects"] = {
            "total": len(objects), "bytes": sum(o["object_size"] or 0 for o in objects),
            "spilled": sum(1 for o in objects if o["spilled"]),
        }  # fmt: skip
        ids = {t["task_id"] for t in tasks}
        out["recent_errors"] = [e for e in out.get("recent_errors", [])
                                if e.get("task_id") in ids]  # fmt: skip
        return out

    def dash_cells(conn: Connection | None) -> Any:
        out = orig["dash_cells"](conn)
        if users.restricted(conn) is None:
            return out
        assert conn is not None
        tags = {_tag_key(t["tag"]) for t in mine(conn, "tasks") if t["tag"] is not None}
        return {"cells": [c for c in out["cells"] if _tag_key(c["tag"]) in tags]}

    def dash_timeline(conn: Connection | None, *args: Any) -> Any:
        out = orig["dash_timeline"](conn, *args)
        if users.restricted(conn) is None:
            return out
        assert conn is not None
        ids = {t["task_id"] for t in mine(conn, "tasks")}
        rows = [r for r in out["rows"] if r[1] in ids]
        return dict(out, rows=rows, total=len(rows))

    def dash_actor_calls(conn: Connection | None) -> Any:
        out = orig["dash_actor_calls"](conn)
        if users.restricted(conn) is None:
            return out
        assert conn is not None
        ids = {a["actor_id"] for a in mine(conn, "actors")}
        return {k: v for k, v in out.items() if k in ids}

    rpc.update(dash_overview=dash_overview, dash_cells=dash_cells, dash_timeline=dash_timeline,
               dash_actor_calls=dash_actor_calls)  # fmt: skip


def _count(values: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def _tag_key(tag: Any) -> str:
    return str(tag.get("msg_id", "")) if isinstance(tag, dict) else str(tag)

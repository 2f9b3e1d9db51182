"""``nbcluster.timeline()``: where and when every task ran, as a Chrome trace.

One row (thread) per worker process, grouped by node (process), one slice per task from the
moment the worker started running it to the moment it stopped — the worker's own clock, so
pipelined tasks queued on a worker do not look like they ran. Open the file in Perfetto
(ui.perfetto.dev) or chrome://tracing. As Ray's ``ray.timeline``.
"""

from __future__ import annotations

import json
import time
from typing import Any, overload


def chrome_trace(rows: list[list[Any]]) -> list[dict[str, Any]]:
    """Trace events ("ph": "X" complete events plus the names of nodes and workers)."""
    nodes: dict[str | None, int] = {}
    threads: set[tuple[int, int]] = set()
    out: list[dict[str, Any]] = []
    now = time.time()
    for name, task_id, node_id, pid, start, end, state, kind in rows:
        node_idx = nodes.get(node_id)
        if node_idx is None:
            node_idx = nodes[node_id] = len(nodes) + 1
            out.append({"ph": "M", "name": "process_name", "pid": node_idx,
                        "args": {"name": f"node {(node_id or '?')[:12]}"}})  # fmt: skip
        tid = int(pid or 0)
        if (node_idx, tid) not in threads:
            threads.add((node_idx, tid))
            out.append({"ph": "M", "name": "thread_name", "pid": node_idx, "tid": tid,
                        "args": {"name": f"worker {tid}"}})  # fmt: skip
        finish = end if end is not None else now
        out.append({
            "name": name, "cat": str(kind).lower(), "ph": "X", "pid": node_idx, "tid": tid,
            "ts": start * 1e6, "dur": max(0.0, finish - start) * 1e6,
            "args": {"task_id": task_id, "state": state, "node_id": node_id},
        })  # fmt: skip
    return out


@overload
def timeline(filename: None = None, *, address: str | None = None) -> list[dict[str, Any]]: ...
@overload
def timeline(filename: str, *, address: str | None = None) -> None: ...


def timeline(
    filename: str | None = None, *, address: str | None = None
) -> list[dict[str, Any]] | None:
    """The cluster's task timeline as Chrome trace events, or, given ``filename``, written
    there and nothing returned (as Ray: a notebook cell ending in ``nc.timeline("t.json")``
    must not print thousands of events)."""
    from nbcluster.runtime.api.event_stream import ask_head

    trace = chrome_trace(list(ask_head("state_timeline", address=address)))
    if filename is None:
        return trace
    with open(filename, "w") as f:
        json.dump(trace, f)
    return None

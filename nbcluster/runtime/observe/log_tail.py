"""A node's own output (its log file), read in pieces for the dashboard's log view.

A node process writes its output, and that of its workers outside any task, to a log file
(the session's ``node.log``, or the file ``nbcluster start`` chose); what a task prints goes
to its owner instead. Whatever file the process's stdout is, is its log: so the reader
follows ``/proc/self/fd/1`` rather than trusting a path from its configuration, and a node
whose output goes to a terminal says so.

RPCs (any authenticated connection): ``dash_log(offset, max_bytes)`` on every node; on the
head also ``dash_node_log(node_id, offset, max_bytes)``, which asks that node over its own
connection to the head, so a page reaches every node's log through the head alone.
"""

from __future__ import annotations

import asyncio
import os
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcluster.runtime.control.node_directory import NodeDirectory
    from nbcluster.runtime.wire.transport import Connection, Endpoint

#: The most one answer carries; a page asking for more gets the newest part.
MAX_BYTES = 256 * 1024
#: How long the head waits for another node's log (seconds).
NODE_TIMEOUT_S = 10.0


def log_path() -> str | None:
    """The file this process's stdout goes to, if a regular file."""
    try:
        path = os.readlink("/proc/self/fd/1")
        return path if stat.S_ISREG(os.stat(path).st_mode) else None
    except OSError:
        return None


def read_log(offset: int | None, max_bytes: int | None = None) -> dict[str, Any]:
    """``{"path", "size", "offset", "text"}``: the log from ``offset`` (None or negative: its
    last ``max_bytes``), at most ``max_bytes``; ``offset`` in the answer is where the text
    starts, so ``offset + len(bytes)`` is where to ask next."""
    limit = max(1, min(int(max_bytes or MAX_BYTES), MAX_BYTES))
    path = log_path()
    if path is None:
        return {"path": None, "size": 0, "offset": 0, "text": "",
                "note": "this node's output goes to a terminal, not to a file"}  # fmt: skip
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = size - limit if offset is None or offset < 0 else min(int(offset), size)
        start = max(0, start)
        f.seek(start)
        data = f.read(limit)
    return {"path": path, "size": size, "offset": start, "next": start + len(data),
            "text": data.decode("utf-8", "replace")}  # fmt: skip


def install(endpoint: Endpoint, directory: NodeDirectory | None = None) -> None:
    """Serve this node's log; on the head (with its node ``directory``) every node's."""

    def dash_log(conn: Connection | None, offset: int | None = None, max_bytes: int | None = None
                 ) -> dict[str, Any]:  # fmt: skip
        return read_log(offset, max_bytes)

    endpoint.rpc["dash_log"] = dash_log
    if directory is None:
        return

    async def dash_node_log(conn: Connection | None, node_id: str, offset: int | None = None,
                            max_bytes: int | None = None) -> dict[str, Any]:  # fmt: skip
        rec = directory.nodes.get(str(node_id))
        if rec is None:
            raise LookupError(f"no node {node_id!r} in this cluster")
        if rec.conn is None:  # the head's own node
            return read_log(offset, max_bytes)
        if not rec.alive or rec.conn.closed:
            raise LookupError(f"node {node_id} is gone: {rec.death or 'not connected'}")
        answer = await asyncio.wait_for(rec.conn.call("dash_log", offset, max_bytes),
                                        NODE_TIMEOUT_S)  # fmt: skip
        return dict(answer)

    endpoint.rpc["dash_node_log"] = dash_node_log

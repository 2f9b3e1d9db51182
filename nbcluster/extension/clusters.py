"""Which clusters a Jupyter server shows: every live cluster of its user on this machine.

Clusters are found through their session records (``runtime.sessions``: one per live
cluster, in a directory only this user can read, written by the head of ``nbcluster start``,
of a script's or a kernel's ``init()``, and by kernels that attached to a cluster elsewhere).
A kernel's record names its kernel id, which this server's kernel manager and session
manager turn into the kernel's state and its notebook's path.

A cluster's id is its head's own (``dash_info``), the same id the head's own dashboard and
``nc.dashboard_url()`` use, so links agree wherever they are made. A cluster whose record
disappears stays listed as ``gone`` for a while (a page open on it says so instead of
failing), and its client is closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from nbcluster.dashboard import api
from nbcluster.dashboard.client import ClusterClient
from nbcluster.exceptions import NbclusterError

log = logging.getLogger("nbcluster.extension")

#: Gone clusters kept in the list (the oldest go first).
KEEP_GONE = 20
#: How long a look at the session records is reused (seconds).
REFRESH_S = 1.0
#: ``started_by`` in a session record -> ``kind`` in the API.
KINDS = {"kernel": "kernel", "cli": "standalone", "script": "script"}


def _live_records() -> list[Any]:
    from nbcluster.runtime.node import sessions

    return list(sessions.live_clusters())


class JupyterClusters:
    """The extension's ``api.ClusterSource``."""

    def __init__(self, kernel_manager: Any, session_manager: Any) -> None:
        self.kernel_manager = kernel_manager
        self.session_manager = session_manager
        #: cluster id -> entry, in the order first seen
        self.known: collections.OrderedDict[str, api.ClusterEntry] = collections.OrderedDict()
        self._ids: dict[tuple[str, int], str] = {}  # (address, record pid) -> cluster id
        self._clients: dict[str, ClusterClient] = {}
        self._lock = asyncio.Lock()
        self._refreshed = -REFRESH_S

    # -- api.ClusterSource -----------------------------------------------------------------------
    async def entries(self, fresh: bool = False) -> list[api.ClusterEntry]:
        """Every cluster, as found at most ``REFRESH_S`` ago (``fresh``: now). A page asks
        several times a second; reading the records each time would cost the server more
        than answering."""
        async with self._lock:  # one refresh at a time: concurrent pages share its result
            if fresh or time.monotonic() - self._refreshed >= REFRESH_S:
                await self._refresh()
                self._refreshed = time.monotonic()
        return list(self.known.values())

    def client(self, entry: api.ClusterEntry) -> ClusterClient:
        client = self._clients.get(entry.id)
        if client is None or client.closed:
            client = self._clients[entry.id] = ClusterClient(entry.address, entry.token)
        return client

    async def stop(self, entry: api.ClusterEntry) -> dict[str, Any]:
        if entry.kind == "kernel":
            if entry.kernel_id is None or entry.kernel_id not in self.kernel_manager:
                raise api.ApiError(
                    409, "this cluster belongs to a kernel of another Jupyter server: "
                    "restart that kernel there"
                )  # fmt: skip
            await self.kernel_manager.restart_kernel(entry.kernel_id)
            return {"id": entry.id, "stopped": True, "restarted_kernel": entry.kernel_id}
        await api.ask(self, entry, "dash_stop")
        return {"id": entry.id, "stopped": True}

    # -- refreshing ------------------------------------------------------------------------------
    async def _refresh(self) -> None:
        loop = asyncio.get_running_loop()
        try:  # reading records checks files and processes: not on the server's loop
            records = await loop.run_in_executor(None, _live_records)
        except (OSError, NbclusterError) as e:
            log.warning("nbcluster: cannot read the session records: %s", e)
            records = []
        paths = await self._notebook_paths()
        seen: set[str] = set()
        new: list[api.ClusterEntry] = []
        for record in records:
            entry = self._entry(record, paths)
            if entry is None:
                continue
            key = (record.address, record.pid)
            cid = self._ids.get(key)
            if cid is not None and cid in self.known:
                old = self.known[cid]
                entry.id, entry.info, entry.state = cid, old.info, old.state
                if entry.state == api.GONE:
                    entry.state = api.RUNNING
                self.known[cid] = entry
                seen.add(cid)
            else:
                new.append(entry)
        # New records: their heads say their ids (one round trip each, in parallel).
        await asyncio.gather(*(self._identify(e) for e in new))
        for entry in new:
            self._ids[(entry.address, entry.pid or 0)] = entry.id
            self.known[entry.id] = entry
            seen.add(entry.id)
        for cid, entry in self.known.items():
            if cid not in seen and entry.state != api.GONE:
                entry.state, entry.error, entry.kernel_state = api.GONE, None, None
                client = self._clients.pop(cid, None)
                if client is not None:
                    client.close()
        gone = [cid for cid, e in self.known.items() if e.state == api.GONE]
        for cid in gone[: max(0, len(gone) - KEEP_GONE)]:
            del self.known[cid]

    def _entry(self, record: Any, paths: dict[str, str]) -> api.ClusterEntry | None:
        try:
            token = record.read_token()
        except (OSError, NbclusterError) as e:
            log.warning("nbcluster: skipping the cluster at %s: %s", record.address, e)
            return None
        kernel_id = record.kernel_id
        kernel_state = None
        if kernel_id is not None and kernel_id in self.kernel_manager:
            kernel_state = getattr(self.kernel_manager.get_kernel(kernel_id),
                                   "execution_state", None)  # fmt: skip
        protocol = getattr(record, "protocol", None)
        return api.ClusterEntry(
            id=f"pending-{record.pid}",
            kind=KINDS.get(record.started_by, record.started_by) if record.role == "head"
            else "kernel",
            address=record.address,
            token=token,
            kernel_id=kernel_id,
            notebook_path=paths.get(kernel_id or "") or record.notebook,
            kernel_state=kernel_state,
            protocol=protocol,
            version=record.version or None,
            pid=record.pid,
            started=record.start_time or None,
        )  # fmt: skip

    async def _identify(self, entry: api.ClusterEntry) -> None:
        """Learn a new cluster's id from its head (and check it speaks our protocol)."""
        await api.probe(self, entry)
        cid = entry.info.get("cluster_id")
        old_client = self._clients.pop(entry.id, None)
        if cid:
            entry.id = str(cid)
            if old_client is not None:
                self._clients[entry.id] = old_client
        elif old_client is not None:
            old_client.close()
        if not cid:  # unreachable or incompatible: listed under a name of its own record's
            entry.id = f"pid-{entry.pid}"

    async def _notebook_paths(self) -> dict[str, str]:
        """kernel id -> its notebook's path (as the server knows it now, after renames)."""
        try:
            sessions = await self.session_manager.list_sessions()
        except Exception:  # the server's sessions are a nicety here, never a failure
            return {}
        out: dict[str, str] = {}
        for s in sessions:
            kernel = s.get("kernel") or {}
            if kernel.get("id") and s.get("path"):
                out[kernel["id"]] = s["path"]
        return out

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

"""The client end of digest subscriptions (``digest_service``): ``state.subscribe_digests``.

A ``DigestStream`` is its own connection to the head, like an event subscription, carrying
any number of digests. The head pushes ``(id, seq, full, payload)`` items, at most one per
digest per interval; the callback gets each message's items on the process's I/O thread, so
it must only hand them over (to a widget thread, say).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from nbcluster.runtime.api.event_stream import ask_head, connect_to_head, connected_core
from nbcluster.runtime.wire.transport import Connection

Items = list[list[Any]]
_STREAMS: dict[Connection, DigestStream] = {}
_ids = itertools.count(1)


class DigestStream:
    def __init__(self, core: Any, callback: Callable[[Items], None]) -> None:
        self._core = core
        self._callback = callback
        self._conn: Connection | None = None
        self.closed = False
        core.run_sync(self._open, 30)

    async def _open(self) -> None:
        def lost(conn: Connection) -> None:
            _STREAMS.pop(conn, None)
            self.closed = True

        conn = self._conn = await connect_to_head(self._core, lost)
        rpc = self._core.endpoint.rpc
        if "digest" not in rpc:
            rpc["digest"] = lambda c, items: _STREAMS[c]._callback(items) if c in _STREAMS else None
        _STREAMS[conn] = self

    def open(self, kind: str, spec: dict[str, Any], live: bool = True,
             timeout: float = 30) -> tuple[str, Any]:  # fmt: skip
        """Open a digest (``progress``, ``graph`` or ``nodes``, see ``observe/digest``); returns
        its id and whole picture. Pushes follow while it is live."""
        did = f"{os.getpid()}-{next(_ids)}"
        conn = self._conn
        assert conn is not None
        from nbcluster.runtime.core import event_shipping

        async def go() -> Any:
            event_shipping.flush(self._core)  # the head then knows what this process submitted
            return await conn.call("digest_open", did, kind, spec, live)

        return did, self._core.run_sync(go, timeout)

    def _notify(self, method: str, *args: Any) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            conn.notify(method, *args)

    def set_live(self, did: str, live: bool) -> None:
        """Pause (nobody looks) or resume pushes; resuming pushes the whole picture first."""
        self._notify("digest_live", did, bool(live))

    def request_full(self, did: str) -> None:
        """Push the whole picture (a view lost track)."""
        self._notify("digest_full", did)

    def close_digest(self, did: str) -> None:
        self._notify("digest_close", did)

    def query(self, did: str, *, ready_all: bool = False, ready: list[bytes] | None = None,
              timeout: float = 10) -> Any:  # fmt: skip
        """The digest's picture now, after this process's own events reached the head."""
        return ask_head("digest_query", did, ready_all, b"".join(ready or ()), timeout=timeout)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        conn = self._conn

        def stop() -> None:
            if conn is not None:
                _STREAMS.pop(conn, None)
                conn.close()

        if not self._core.closed:
            self._core.call_soon(stop)


def subscribe_digests(callback: Callable[[Items], None],
                      address: str | None = None) -> DigestStream:  # fmt: skip
    """Open a digest connection to the head; ``callback(items)`` runs on the I/O thread."""
    return DigestStream(connected_core(address), callback)

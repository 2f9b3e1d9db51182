"""Client mode: a driver on a machine with no node reads and writes a node's store remotely.

A driver normally maps its node's shared-memory arena and copies bytes in and out itself. A
driver on a laptop or in a JupyterHub pod has no node and so no arena to map; it attaches to
the cluster through a node (the head's, the one it was given the address of) and moves the
bytes of large objects over its connection to that node's agent, in chunks. Everything else
— submitting, ObjectRefs, actors, ``wait`` — is unchanged: the same API, as Ray Client gives.

``RemoteStore`` stands in for ``StoreMapping`` in such a driver: writes are staged locally and
uploaded when the object is complete (``commit``), reads download the object once per open.
``StoreProxy`` is the node's side: two requests on the agent's endpoint.
"""

from __future__ import annotations

import ctypes
from typing import Any

from nbcluster.runtime.objects.store_client import StoreMapping
from nbcluster.runtime.wire.transport import Connection, Endpoint

#: Bytes per request: well under the frame limit, large enough to keep the link busy.
CHUNK = 8 << 20


class RemoteStore(StoreMapping):
    """A node's arena, as seen from a driver on another machine."""

    def __init__(self, core: Any, capacity: int) -> None:  # no mapping: nothing to map
        self.core = core
        self.capacity = capacity
        self.path = ""
        self._staged: dict[int, bytearray] = {}
        self._open = True

    def writable(self, offset: int, size: int) -> memoryview:
        self._check(offset, size)
        buf = self._staged[offset] = bytearray(size)
        return memoryview(buf)

    def prefault(self, offset: int, size: int) -> None:
        return None

    def commit(self, offset: int) -> None:
        buf = self._staged.pop(offset, None)
        if buf is None:
            return
        view = memoryview(buf)
        for start in range(0, len(buf), CHUNK):
            chunk = bytes(view[start : start + CHUNK])
            self.core.agent_call("store_write_range", offset + start, chunk)

    def _download(self, offset: int, size: int) -> bytearray:
        data = bytearray(size)
        for start in range(0, size, CHUNK):
            n = min(CHUNK, size - start)
            data[start : start + n] = self.core.agent_call("store_read_range", offset + start, n)
        return data

    def readonly(self, offset: int, size: int) -> memoryview:
        self._check(offset, size)
        return memoryview(self._download(offset, size)).toreadonly()

    def exported(self, offset: int, size: int) -> tuple[memoryview, object]:
        self._check(offset, size)
        data = self._download(offset, size)
        exporter = (ctypes.c_char * size).from_buffer(data) if size else b""
        return memoryview(exporter).cast("B").toreadonly(), exporter

    def close(self) -> None:
        self._staged.clear()
        self._open = False

    @property
    def closed(self) -> bool:
        return not self._open


class StoreProxy:
    """The node's side: raw reads and writes of its arena for drivers in client mode."""

    def __init__(self, endpoint: Endpoint, arena: StoreMapping) -> None:
        self.arena = arena
        endpoint.rpc["store_write_range"] = self.store_write_range
        endpoint.rpc["store_read_range"] = self.store_read_range

    def store_write_range(self, conn: Connection | None, offset: int, data: bytes) -> None:
        self.arena.writable(offset, len(data))[:] = data

    def store_read_range(self, conn: Connection | None, offset: int, size: int) -> bytes:
        return bytes(self.arena.readonly(offset, min(size, CHUNK)))

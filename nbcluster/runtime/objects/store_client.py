"""Client side of the node's shared-memory object store: map the arena, write, read zero-copy.

Every process on a node (driver, workers) maps the same arena, a memfd owned by the node
agent, through the path ``/proc/<agent pid>/fd/<fd>``. A writer asks the agent for
an offset (``ObjectStore.create``), copies its bytes straight into the mapping here, and seals;
a reader asks for ``(offset, size)`` (``ObjectStore.open``) and gets a read-only memoryview of
the shared pages, so a NumPy array is rebuilt on top of shared memory without a copy.

Why the pieces look the way they do:

* One copy per buffer. ``write_buffers`` moves each pickle-5 out-of-band buffer with a single
  memoryview slice assignment (one ``memcpy`` in C), never through an intermediate ``bytes``.
* 64-byte alignment. ``layout`` places every buffer at a 64-byte aligned offset relative to the
  object's start, and the store aligns every object's start to 64 bytes, so arrays rebuilt on the
  shared pages are aligned for SIMD exactly as freshly allocated ones would be.
* Views outlive the mapping object. A user may keep an array from ``get`` long after the runtime
  stops caring; ``StoreMapping.close`` therefore never raises ``BufferError`` and leaves the mmap
  to the garbage collector while views into it are alive. The pages stay valid meanwhile: a
  mapping keeps the memfd alive even after the agent closes its descriptor.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

#: Alignment, in bytes, of every object in the arena and of every buffer within an object.
ALIGNMENT = 64
#: Writes at least this large fault their pages in first with one madvise call.
PREFAULT_THRESHOLD = 1 << 20
#: Granularity at which a mapping remembers which parts of the arena it has faulted in.
_CHUNK = 2 << 20
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux 5.14; Python 3.13


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    """Round ``n`` up to a multiple of ``alignment`` (a power of two)."""
    return (n + alignment - 1) & ~(alignment - 1)


def layout(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Return each buffer's offset relative to the object's start, and the object's total size.

    Buffer ``i`` starts at the first 64-byte aligned position after the end of buffer ``i - 1``;
    the total is the end of the last buffer (no trailing padding), so a serializer allocates
    once with the total and writes with ``write_buffers``.
    """
    offsets: list[int] = []
    pos = 0
    end = 0
    for size in sizes:
        if size < 0:
            raise ValueError(f"buffer size must be >= 0, got {size}")
        pos = align_up(end)
        offsets.append(pos)
        end = pos + size
    return offsets, end


def _as_bytes_view(buf: Buffer) -> memoryview:
    """A flat unsigned-byte view of ``buf`` without copying (C-contiguous buffers only)."""
    view = memoryview(buf)
    if view.format == "B" and view.ndim == 1:
        return view
    if not view.c_contiguous:
        raise BufferError("write_buffers needs C-contiguous buffers (PickleBuffer.raw() gives one)")
    return view.cast("B")


class StoreMapping:
    """A process's shared read-write mapping of the node's arena."""

    def __init__(self, path: str, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be > 0, got {capacity}")
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self._mmap: mmap.mmap | None = mmap.mmap(
                fd, capacity, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        finally:
            os.close(fd)  # the mapping holds its own reference to the memfd
        self._view: memoryview | None = memoryview(self._mmap)
        self._touched = bytearray(-(-capacity // _CHUNK))  # chunks this mapping faulted in
        self.path = path
        self.capacity = capacity

    def _slice(self, offset: int, size: int) -> memoryview:
        if self._view is None:
            raise ValueError("StoreMapping is closed")
        self._check(offset, size)
        return self._view[offset : offset + size]

    def _check(self, offset: int, size: int) -> None:
        if offset < 0 or size < 0 or offset + size > self.capacity:
            raise ValueError(
                f"range [{offset}, {offset + size}) is outside the arena of {self.capacity} bytes"
            )

    def writable(self, offset: int, size: int) -> memoryview:
        """A writable view of ``size`` bytes at ``offset`` (only while the object is unsealed)."""
        return self._slice(offset, size)

    def prefault(self, offset: int, size: int) -> None:
        """Fault in, in one system call, the pages of a range about to be written.

        After ``MADV_POPULATE_WRITE``, copying 100 MB into pages another process already
        wrote runs 10-15% faster than taking one minor fault per page (fresh pages gain only a
        few %: allocating and zeroing them dominates). On pages already mapped here the madvise
        walk costs more than it saves (measured: 40% slower), so each mapping remembers, per
        2 MiB chunk, what it has faulted in. A no-op on kernels before 5.14.
        """
        self._check(offset, size)
        if self._mmap is None or size == 0:
            return
        end = offset + size
        i, last = offset // _CHUNK, (end - 1) // _CHUNK + 1
        while (i := self._touched.find(0, i, last)) != -1:
            j = self._touched.find(1, i, last)
            j = last if j == -1 else j
            self._touched[i:j] = b"\1" * (j - i)
            lo = max(offset, i * _CHUNK) & ~(mmap.PAGESIZE - 1)
            hi = min(align_up(min(end, j * _CHUNK), mmap.PAGESIZE), self.capacity)
            with contextlib.suppress(OSError, ValueError):
                self._mmap.madvise(_MADV_POPULATE_WRITE, lo, hi - lo)
            i = j

    def commit(self, offset: int) -> None:
        """The object written at ``offset`` is complete (nothing to do: it is shared memory;
        a driver in client mode uploads it here, see ``remote_store``)."""
        return None

    def readonly(self, offset: int, size: int) -> memoryview:
        """A read-only, zero-copy view of ``size`` bytes at ``offset``."""
        return self._slice(offset, size).toreadonly()

    def exported(self, offset: int, size: int) -> tuple[memoryview, object]:
        """A read-only view whose lifetime can be watched, and the object to watch.

        Views made from a view (NumPy makes its own) keep the underlying buffer's *exporter*
        alive, not the view they came from. A ctypes array over the range is a fresh exporter
        per read: anything still reading the range keeps it alive, so a weakref on it says
        exactly when the last reader is gone (which is when the object may be unpinned).
        """
        self._check(offset, size)
        if self._mmap is None:
            raise ValueError("StoreMapping is closed")
        exporter = (ctypes.c_char * size).from_buffer(self._mmap, offset) if size else b""
        return memoryview(exporter).cast("B").toreadonly(), exporter

    def close(self) -> None:
        """Drop the mapping; if views into it are still alive, leave it to the garbage collector."""
        view, mm = self._view, self._mmap
        self._view = self._mmap = None
        if view is not None:
            view.release()  # slices taken from it keep their own export of the mmap
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views still alive: the mmap is unmapped when the last one is collected

    @property
    def closed(self) -> bool:
        return self._view is None

    def __enter__(self) -> StoreMapping:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_buffers(mapping: StoreMapping, offset: int, buffers: Sequence[Buffer]) -> None:
    """Copy ``buffers`` back to back from ``offset``, each 64-byte aligned (see ``layout``)."""
    views = [_as_bytes_view(b) for b in buffers]
    rel_offsets, total = layout([v.nbytes for v in views])
    with mapping.writable(offset, total) as target:
        if total >= PREFAULT_THRESHOLD:
            mapping.prefault(offset, total)
        for rel, view in zip(rel_offsets, views, strict=True):
            target[rel : rel + view.nbytes] = view

"""The store's memory: one shared arena, mapped by the node, and first-fit allocation in it.

* The arena is one ``memfd``, opened by clients as ``/proc/<agent pid>/fd/<fd>``. It has no
  name in /dev/shm, so nothing is left behind even on SIGKILL; seals forbid resizing it (a
  truncated arena would SIGBUS every reader).
* Allocation is first fit over a sorted free list, coalescing neighbours, 64-byte aligned, so
  the lowest, already page-faulted memory is reused first: writing into fresh shared pages is
  several times slower (page faults and zeroing dominate).

What lives where in the arena is the store's business (``object_store``); this module only
hands out and takes back blocks.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os

from nbcluster.runtime.objects.store_client import align_up


class FreeList:
    """Free blocks of the arena as two sorted parallel lists; first fit, coalescing on free."""

    def __init__(self, capacity: int) -> None:
        self.offsets = [0]
        self.sizes = [capacity]
        self.free_bytes = capacity

    def alloc(self, size: int) -> tuple[int, int] | None:
        """Take the lowest block that fits; return (offset, bytes taken) or None."""
        want = align_up(size)
        for i, block in enumerate(self.sizes):
            if block >= size:
                offset = self.offsets[i]
                taken = min(want, block)  # the arena's last block may be shorter than aligned
                if taken == block:
                    del self.offsets[i], self.sizes[i]
                else:
                    self.offsets[i] = offset + taken
                    self.sizes[i] = block - taken
                self.free_bytes -= taken
                return offset, taken
        return None

    def free(self, offset: int, size: int) -> int:
        """Return a block, merging it with free neighbours; return the merged block's size."""
        self.free_bytes += size
        i = bisect.bisect_left(self.offsets, offset)
        if i > 0 and self.offsets[i - 1] + self.sizes[i - 1] == offset:
            i -= 1
            self.sizes[i] += size
        else:
            self.offsets.insert(i, offset)
            self.sizes.insert(i, size)
        nxt = i + 1
        if nxt < len(self.offsets) and self.offsets[i] + self.sizes[i] == self.offsets[nxt]:
            self.sizes[i] += self.sizes[nxt]
            del self.offsets[nxt], self.sizes[nxt]
        return self.sizes[i]


class Arena:
    """One sealed memfd of ``capacity`` bytes, mapped here, with the free list over it.

    ``path`` is what clients map (``store_client.StoreMapping``); ``view`` is this process's
    own window on it, through which objects are copied to and from spill files.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.fd = os.memfd_create("nbcluster-object-store", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, seals)
            self._mmap = mmap.mmap(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self._mmap)
        self.path = f"/proc/{os.getpid()}/fd/{self.fd}"
        self.free = FreeList(capacity)

    def close(self) -> None:
        """Unmap the arena and close its descriptor (clients' mappings keep their pages)."""
        self.view.release()
        with contextlib.suppress(BufferError):
            self._mmap.close()
        os.close(self.fd)

"""Spill files: where the store keeps objects its arena has no room for, until read again.

The store decides what to spill and when (``object_store``); this module keeps the files.
Objects are spilled in batches of at least ``ObjectStore.min_spill`` bytes, one file per
batch: creating a file costs 0.5-1 ms on ext4 (15-25x writing 100 KiB into an open one), and a
descriptor per object would exhaust RLIMIT_NOFILE. Files are unlinked at birth
(``O_TMPFILE``), so none outlives the agent; an object leaving one (restored with ``preadv``
straight into the arena, or deleted) punches a hole in it, and the file is closed with its last
object.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import resource
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nbcluster.runtime.objects.store_client import align_up

if TYPE_CHECKING:
    from nbcluster.runtime.objects.arena import Arena

_FALLOC_FL_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01
_fallocate = getattr(ctypes.CDLL(None, use_errno=True), "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the disk blocks of a range of a spill file (best effort: else they wait for close)."""
    if _fallocate is not None and length > 0:
        _fallocate(fd, _FALLOC_FL_PUNCH_HOLE_KEEP_SIZE, offset, length)


@dataclass(eq=False)
class SpillFile:
    """One batch of spilled objects on disk."""

    fd: int
    end: int = 0  # where the next object goes (page aligned, so holes free whole blocks)
    live: int = 0  # spilled objects still in it


class SpillFiles:
    """The spill directory's anonymous files, and what they hold (``num_spilled`` objects of
    ``spilled_bytes`` in all)."""

    def __init__(self, arena: Arena, spill_dir: str) -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):  # every spill file holds an fd
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # ... but never all of them: the agent still needs descriptors for its connections.
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_files = max(16, nofile - max(1024, nofile // 8))
        self.spill_dir = spill_dir
        self._view = arena.view
        #: Spill files open now.
        self.open_files = 0
        self.num_spilled = 0
        self.spilled_bytes = 0
        self._made_spill_dir = False
        self._tmpfile_ok = True

    def new(self) -> SpillFile:
        """An anonymous file in the spill directory: it has no name, so nothing outlives us."""
        if self.open_files >= self.max_files:
            raise OSError(errno.EMFILE, f"{self.open_files} spill files open, the most allowed")
        if not os.path.isdir(self.spill_dir):
            os.makedirs(self.spill_dir, exist_ok=True)
            self._made_spill_dir = True
        fd = -1
        if self._tmpfile_ok:
            try:
                fd = os.open(self.spill_dir, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as err:
                if err.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._tmpfile_ok = False  # filesystem without O_TMPFILE: create, then unlink
        if fd < 0:
            fd, path = tempfile.mkstemp(prefix="nbcluster-spill-", dir=self.spill_dir)
            os.unlink(path)
        self.open_files += 1
        return SpillFile(fd)

    def close_file(self, spill_file: SpillFile) -> None:
        os.close(spill_file.fd)
        self.open_files -= 1

    def write(self, batch: SpillFile, offset: int, size: int) -> int:
        """Append ``size`` bytes of the arena at ``offset`` to ``batch``; return where they are."""
        pos = batch.end
        self._transfer(True, batch.fd, pos, offset, size)
        batch.end = align_up(pos + size, mmap.PAGESIZE)
        batch.live += 1
        self.num_spilled += 1
        self.spilled_bytes += size
        return pos

    def read(self, spill_file: SpillFile, pos: int, offset: int, size: int) -> None:
        """Copy an object spilled at ``pos`` back into the arena at ``offset``."""
        self._transfer(False, spill_file.fd, pos, offset, size)

    def leave(self, spill_file: SpillFile, pos: int, size: int) -> None:
        """A spilled copy is no longer needed: free its disk space, maybe its file."""
        spill_file.live -= 1
        if spill_file.live == 0:
            self.close_file(spill_file)
        else:
            _punch_hole(spill_file.fd, pos, size)
        self.num_spilled -= 1
        self.spilled_bytes -= size

    def close(self, files: set[SpillFile]) -> None:
        """Close the files still open (which frees them) and the directory if it was made here."""
        for spill_file in files:
            os.close(spill_file.fd)
        if self._made_spill_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.spill_dir)

    def _transfer(self, write: bool, fd: int, pos: int, offset: int, size: int) -> None:
        """Copy ``size`` bytes between the arena at ``offset`` and file ``fd`` at ``pos``."""
        with self._view[offset : offset + size] as data:
            done = 0
            while done < size:
                part = data[done:]
                n = os.pwrite(fd, part, pos + done) if write else os.preadv(fd, [part], pos + done)
                if n == 0:
                    raise OSError(errno.EIO, f"spill file {fd} ends before {pos + size}")
                done += n

"""The node's shared-memory object store, as the node agent keeps it.

Large objects never pass through the agent: a client asks for room (``create``), writes its
bytes straight into one shared arena (``store_client.write_buffers``) and seals it; readers
``open`` it and map it read-only in place. This class is only the bookkeeping, a synchronous
single-threaded API that the agent's event loop calls for its clients.

* The arena and its allocation are ``arena``'s; spill files are ``spilling``'s.
* Pins make zero-copy reads safe: the creator pins an object until it is sealed, each reader
  while it holds a view (counted; all dropped at once when a reader dies). Pinned objects are
  never spilled or freed; ``delete`` of one waits for its last pin.
* Under pressure, sealed unpinned objects are spilled least recently used first (the LRU holds
  exactly those; dropping the last pin puts an object at its young end), in batches of at
  least ``min_spill`` bytes, one file per batch (see ``spilling`` for why).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from nbcluster.exceptions import ObjectStoreFullError
from nbcluster.runtime.objects.arena import Arena
from nbcluster.runtime.objects.spilling import SpillFile, SpillFiles

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True)
class StoreStats:
    capacity: int
    #: Arena bytes held in memory, alignment padding and deleted-but-still-read objects included.
    used: int
    num_objects: int
    num_in_memory: int
    num_spilled: int
    spilled_bytes: int
    #: Arena bytes that cannot be spilled now: unsealed, read-pinned or pending-free objects.
    pinned_bytes: int


@dataclass(frozen=True)
class ObjectInfo:
    oid: bytes
    size: int
    owner: object
    sealed: bool
    pins: int
    spilled: bool


@dataclass(eq=False)
class _Entry:
    oid: bytes
    size: int
    owner: object
    creator: object  # the client writing it, whose death aborts it (None: unknown)
    offset: int  # -1 while spilled
    alloc: int  # arena bytes held (size rounded up to ALIGNMENT); 0 while spilled or empty
    sealed: bool = False
    pins: dict[object, int] = field(default_factory=dict)
    npins: int = 0
    spill: SpillFile | None = None  # where it is while spilled
    spill_pos: int = 0
    deleted: bool = False  # deleted while pinned: freed when the last pin goes

    @property
    def pinned(self) -> bool:
        return not self.sealed or self.npins > 0


def _discard(index: dict[_K, set[_V]], key: _K, value: _V) -> None:
    """Remove ``value`` from the set at ``index[key]``, and the set once empty."""
    values = index[key]
    values.discard(value)
    if not values:
        del index[key]


class ObjectStore:
    """Allocation, pinning and spilling for one node's shared-memory arena."""

    def __init__(self, capacity: int, spill_dir: str) -> None:
        if capacity <= 0:
            raise ValueError(f"object store capacity must be > 0, got {capacity}")
        #: Bytes spilled at least each time room is made, so files are created rarely.
        self.min_spill = min(8 << 20, capacity // 16)
        self.capacity = capacity
        self.spill_dir = spill_dir
        self._arena = Arena(capacity)
        #: The arena's descriptor, and the path clients map it by.
        self.fd, self.path = self._arena.fd, self._arena.path
        self._free = self._arena.free
        self._spills = SpillFiles(self._arena, spill_dir)
        self._objects: dict[bytes, _Entry] = {}
        self._deferred: dict[bytes, set[_Entry]] = {}  # deleted, waiting for their last pin
        self._lru: OrderedDict[_Entry, None] = OrderedDict()  # sealed, unpinned, in memory
        self._lru_bytes = 0
        self._owned: dict[object, set[bytes]] = {}
        self._readers: dict[object, set[_Entry]] = {}
        self._creating: dict[object, set[_Entry]] = {}  # unsealed objects, by creator
        self._closed = False
        #: Told ("spilled" | "restored", oid, size) as objects move to disk and back (events).
        self.on_event: Callable[[str, bytes, int], None] | None = None

    # -- the API the agent calls ------------------------------------------------------------

    def create(self, oid: bytes, size: int, owner: object, creator: object = None) -> int:
        """Allocate ``size`` bytes for ``oid``, pinned by its creator until seal/abort.

        Spills LRU sealed, unpinned objects to make room; raises ``ObjectStoreFullError`` if
        that cannot, ``ValueError`` if ``oid`` exists. ``creator`` identifies the client
        writing it, as ``open`` identifies readers (the owner may be another process, as for a
        task's return value): ``release_reader(creator)`` aborts it while still unsealed.
        """
        if self._closed:
            raise ValueError("ObjectStore is closed")
        if size < 0:
            raise ValueError(f"object size must be >= 0, got {size}")
        if oid in self._objects:
            raise ValueError(f"object {oid.hex()} already exists")
        offset, alloc = self._allocate(size)
        entry = _Entry(oid, size, owner, creator, offset, alloc)
        self._objects[oid] = entry
        self._owned.setdefault(owner, set()).add(oid)
        if creator is not None:
            self._creating.setdefault(creator, set()).add(entry)
        return offset

    def seal(self, oid: bytes) -> None:
        """The creator finished writing: the object becomes readable and its creator pin goes."""
        entry = self._unsealed(oid)
        if entry is None:
            raise ValueError(f"object {oid.hex()} is not being created")
        entry.sealed = True
        self._stop_creating(entry)
        self._maybe_unpinned(entry)

    def abort(self, oid: bytes) -> None:
        """The creator failed while writing: free the object. Unknown ``oid`` is a no-op."""
        entry = self._unsealed(oid)
        if entry is None:
            if oid in self._objects:
                raise ValueError(f"object {oid.hex()} is sealed; delete it instead")
            return
        self._abort(entry)

    def open(self, oid: bytes, reader: object) -> tuple[int, int] | None:
        """Pin ``oid`` for ``reader`` and return ``(offset, size)``; None if unknown or unsealed.

        A spilled object is restored first, which may spill others (and raises
        ``ObjectStoreFullError`` if no room can be made for it).
        """
        entry = self._objects.get(oid)
        if entry is None or not entry.sealed:
            return None
        if entry.spill is not None:
            self._restore(entry)
        if entry.npins == 0:
            self._lru_remove(entry)
        entry.pins[reader] = entry.pins.get(reader, 0) + 1
        entry.npins += 1
        self._readers.setdefault(reader, set()).add(entry)
        return entry.offset, entry.size

    def release(self, oid: bytes, reader: object) -> None:
        """Drop one pin of ``reader`` on ``oid``; a no-op if it holds none."""
        # An oid deleted while pinned and created again: pins on the deleted copy, held the
        # longest, are released first.
        for entry in [*self._deferred.get(oid, ()), self._objects.get(oid)]:
            if entry is not None and reader in entry.pins:
                self._unpin(entry, reader, 1)
                return

    def release_reader(self, reader: object) -> None:
        """The reader's process died: drop every pin it held, abort what it was creating."""
        for entry in list(self._readers.get(reader, ())):
            self._unpin(entry, reader, entry.pins[reader])
        for entry in list(self._creating.get(reader, ())):
            self._abort(entry)

    def delete(self, oid: bytes) -> None:
        """Free ``oid`` now, or when its last pin goes if pinned. Unknown ``oid`` is a no-op."""
        entry = self._objects.get(oid)
        if entry is None:
            return
        self._forget(entry)
        if entry.pinned:
            entry.deleted = True
            self._deferred.setdefault(oid, set()).add(entry)
        else:
            self._release_memory(entry)

    def delete_owned_by(self, owner: object) -> list[bytes]:
        """The owner process died: delete every object it owns; return their oids.

        An unsealed one is freed only once sealed or aborted (maybe by its creator's death,
        see ``create``): another process may still be writing into its memory.
        """
        oids = list(self._owned.get(owner, ()))
        for oid in oids:
            self.delete(oid)
        return oids

    def contains(self, oid: bytes) -> bool:
        """Whether ``oid`` exists here: being written or sealed, in memory or spilled."""
        return oid in self._objects

    def stats(self) -> StoreStats:
        used = self.capacity - self._free.free_bytes
        return StoreStats(
            capacity=self.capacity,
            used=used,
            num_objects=len(self._objects),
            num_in_memory=len(self._objects) - self._spills.num_spilled,
            num_spilled=self._spills.num_spilled,
            spilled_bytes=self._spills.spilled_bytes,
            pinned_bytes=used - self._lru_bytes,
        )

    def object_info(self) -> list[ObjectInfo]:
        """One record per live object (deleted objects waiting for their last pin excluded)."""
        return [
            ObjectInfo(e.oid, e.size, e.owner, e.sealed, e.npins, e.spill is not None)
            for e in self._objects.values()
        ]

    def close(self) -> None:
        """Unmap the arena and close every descriptor (which frees every spill file)."""
        if self._closed:
            return
        self._closed = True
        # Deferred deletes are pinned, so never spilled.
        spilled = {e.spill for e in self._objects.values() if e.spill is not None}
        tables = (self._objects, self._deferred, self._lru, self._owned, self._readers)
        for table in (*tables, self._creating):
            table.clear()
        self._arena.close()
        self._spills.close(spilled)

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pins and bookkeeping ---------------------------------------------------------------

    def _unsealed(self, oid: bytes) -> _Entry | None:
        entry = self._objects.get(oid)
        if entry is not None and not entry.sealed:
            return entry
        return next((e for e in self._deferred.get(oid, ()) if not e.sealed), None)

    def _abort(self, entry: _Entry) -> None:
        self._stop_creating(entry)
        if not entry.deleted:
            self._forget(entry)
        self._release_memory(entry)

    def _stop_creating(self, entry: _Entry) -> None:
        if entry.creator is not None:
            _discard(self._creating, entry.creator, entry)

    def _unpin(self, entry: _Entry, reader: object, count: int) -> None:
        left = entry.pins[reader] - count
        if left > 0:
            entry.pins[reader] = left
        else:
            del entry.pins[reader]
            _discard(self._readers, reader, entry)
        entry.npins -= count
        self._maybe_unpinned(entry)

    def _maybe_unpinned(self, entry: _Entry) -> None:
        """Called when a pin went: free a deferred delete, or make the object spillable."""
        if entry.pinned:
            return
        if entry.deleted:
            self._release_memory(entry)
        elif entry.alloc:
            self._lru[entry] = None
            self._lru_bytes += entry.alloc

    def _lru_remove(self, entry: _Entry) -> None:
        if entry in self._lru:
            del self._lru[entry]
            self._lru_bytes -= entry.alloc

    def _forget(self, entry: _Entry) -> None:
        """Remove a live entry from the indexes by oid and owner (its memory is not touched)."""
        del self._objects[entry.oid]
        _discard(self._owned, entry.owner, entry.oid)

    def _release_memory(self, entry: _Entry) -> None:
        """Give back the entry's arena block or spill file; it must be unpinned or aborted."""
        self._lru_remove(entry)
        if entry.spill is not None:
            self._leave_spill_file(entry)
        elif entry.alloc:
            self._free.free(entry.offset, entry.alloc)
        entry.alloc = 0
        if entry.deleted:
            _discard(self._deferred, entry.oid, entry)

    # -- allocation and spilling -------------------------------------------------------------

    def _allocate(self, size: int) -> tuple[int, int]:
        """Return (offset, bytes taken) for ``size`` bytes, spilling LRU objects if needed."""
        if size == 0:
            return 0, 0
        got = self._free.alloc(size)
        if got is not None:
            return got
        if size > self._free.free_bytes + self._lru_bytes:
            raise self._full(size)
        batch: SpillFile | None = None
        fits, freed, checked = False, 0, False
        try:
            while self._lru and not (fits and freed >= self.min_spill):
                victim = next(iter(self._lru))
                batch = self._spills.new() if batch is None else batch
                freed += victim.alloc
                fits = self._spill(victim, batch) >= size or fits
                if not fits and not checked and freed >= size:
                    checked = True  # fragmentation: check once that spilling can ever help
                    if not self._could_fit(size):
                        raise self._full(size)
        except OSError as err:
            if not fits:
                raise self._full(size, f"; spilling to {self.spill_dir} failed: {err}") from err
        finally:
            if batch is not None and batch.live == 0:
                self._spills.close_file(batch)
        got = self._free.alloc(size) if fits else None
        if got is None:
            raise self._full(size)
        return got

    def _could_fit(self, size: int) -> bool:
        """Whether spilling every spillable object would leave a contiguous run of ``size``."""
        blocks = [(e.offset, e.alloc) for e in self._lru]
        blocks = sorted([*zip(self._free.offsets, self._free.sizes, strict=True), *blocks])
        start = end = -1
        for offset, length in blocks:
            if offset != end:
                start = offset
            end = offset + length
            if end - start >= size:
                return True
        return False

    def _full(self, size: int, detail: str = "") -> ObjectStoreFullError:
        st = self.stats()
        return ObjectStoreFullError(
            f"object store cannot hold an object of {size} bytes: capacity {st.capacity}, used "
            f"{st.used}, pinned {st.pinned_bytes} (unsealed or being read), {st.num_objects} "
            f"objects of which {st.num_spilled} spilled{detail}"
        )

    def _leave_spill_file(self, entry: _Entry) -> None:
        """The entry's spilled copy is no longer needed: free its disk space, maybe its file."""
        spill_file, entry.spill = entry.spill, None
        assert spill_file is not None
        self._spills.leave(spill_file, entry.spill_pos, entry.size)

    def _spill(self, entry: _Entry, batch: SpillFile) -> int:
        """Append a sealed, unpinned object to ``batch`` and free its block; return merged size."""
        pos = self._spills.write(batch, entry.offset, entry.size)
        self._lru_remove(entry)
        merged = self._free.free(entry.offset, entry.alloc)
        entry.offset, entry.alloc, entry.spill, entry.spill_pos = -1, 0, batch, pos
        if self.on_event is not None:
            self.on_event("spilled", entry.oid, entry.size)
        return merged

    def _restore(self, entry: _Entry) -> None:
        """Read a spilled object back into the arena (which may spill others)."""
        assert entry.spill is not None
        offset, alloc = self._allocate(entry.size)
        try:
            self._spills.read(entry.spill, entry.spill_pos, offset, entry.size)
        except BaseException:
            self._free.free(offset, alloc)
            raise
        self._leave_spill_file(entry)
        entry.offset, entry.alloc = offset, alloc
        if self.on_event is not None:
            self.on_event("restored", entry.oid, entry.size)

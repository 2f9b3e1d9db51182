"""The node's shared-memory object store, with real shared memory and real processes."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbcluster.exceptions import ObjectStoreFullError
from nbcluster.runtime.objects.object_store import ObjectStore
from nbcluster.runtime.objects.store_client import StoreMapping, layout, write_buffers

REPO = Path(__file__).resolve().parents[1]
KB = 1024
MB = 1024 * KB


def payload(oid: bytes, size: int) -> bytes:
    """Deterministic content for an object, so anything read back can be checked."""
    return random.Random(oid).randbytes(size)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ObjectStore]:
    s = ObjectStore(capacity=1 * MB, spill_dir=str(tmp_path / "spill"))
    yield s
    s.close()


@pytest.fixture
def mapping(store: ObjectStore) -> Iterator[StoreMapping]:
    m = StoreMapping(store.path, store.capacity)
    yield m
    m.close()


def put(
    store: ObjectStore, mapping: StoreMapping, oid: bytes, size: int, owner: object = "w"
) -> int:
    offset = store.create(oid, size, owner)
    write_buffers(mapping, offset, [payload(oid, size)])
    store.seal(oid)
    return offset


def read(store: ObjectStore, mapping: StoreMapping, oid: bytes, reader: object = "r") -> bytes:
    loc = store.open(oid, reader)
    assert loc is not None, oid
    data = bytes(mapping.readonly(*loc))
    store.release(oid, reader)
    return data


def check_invariants(store: ObjectStore) -> None:
    """Free blocks and in-memory objects tile the arena exactly, without overlap."""
    blocks = list(zip(store._free.offsets, store._free.sizes, strict=True))
    entries = [*store._objects.values(), *(e for es in store._deferred.values() for e in es)]
    blocks += [(e.offset, e.alloc) for e in entries if e.alloc]
    pos = 0
    for offset, size in sorted(blocks):
        assert offset == pos and offset % 64 == 0, (offset, pos)
        pos += size
    assert pos == store.capacity
    files: dict[int, list[Any]] = {}
    for e in entries:
        assert (e.spill is not None) == (e.offset == -1 and e.size > 0)
        if e.spill is not None or e.size == 0:
            assert e.alloc == 0
        if e.spill is not None:
            files.setdefault(id(e.spill), [e.spill]).append(e)
        assert e.npins == sum(e.pins.values())
        assert not (e.pinned and e in store._lru)
    assert all(f[0].live == len(f) - 1 for f in files.values())
    assert store._spills.open_files == len(files)


def test_another_process_reads_and_writes_the_arena(
    store: ObjectStore, mapping: StoreMapping
) -> None:
    a = put(store, mapping, b"A", 300 * KB)
    b = store.create(b"B", 200 * KB, "child")
    child = textwrap.dedent(
        """
        import hashlib, sys
        from nbcluster.runtime.objects.store_client import StoreMapping, write_buffers
        path, cap, a, b = sys.argv[1], *map(int, sys.argv[2:])
        m = StoreMapping(path, cap)
        print(hashlib.sha256(m.readonly(a, 300 * 1024)).hexdigest())
        write_buffers(m, b, [bytes(range(256)) * 800])
        m.close()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", child, store.path, str(store.capacity), str(a), str(b)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert out.stdout.strip() == hashlib.sha256(payload(b"A", 300 * KB)).hexdigest()
    store.seal(b"B")
    loc = store.open(b"B", "parent")
    assert loc == (b, 200 * KB)
    assert mapping.readonly(*loc) == bytes(range(256)) * 800


def test_fill_far_beyond_capacity_spills_and_restores_everything(
    store: ObjectStore, mapping: StoreMapping
) -> None:
    rng = random.Random(1)
    sizes = {f"obj{i}".encode(): rng.randrange(1, 120 * KB) for i in range(80)}
    for oid, size in sizes.items():
        put(store, mapping, oid, size)
        assert store.stats().used <= store.capacity
    st = store.stats()
    assert st.num_objects == 80 and st.num_spilled > 40
    assert st.num_in_memory + st.num_spilled == 80
    assert st.spilled_bytes == sum(i.size for i in store.object_info() if i.spilled)
    for oid in rng.sample(list(sizes), len(sizes)):  # restores spill others in turn
        assert read(store, mapping, oid) == payload(oid, sizes[oid])
        check_invariants(store)
    assert all(store.contains(oid) for oid in sizes)
    assert os.listdir(store.spill_dir) == []  # spill files have no name


def test_spills_share_files_and_free_disk_as_objects_leave(
    store: ObjectStore, mapping: StoreMapping
) -> None:
    oids = [i.to_bytes(2, "big") for i in range(1000)]
    for oid in oids:
        put(store, mapping, oid, 4 * KB)
    st = store.stats()
    assert st.num_spilled > 700 and store._spills.open_files <= st.num_spilled // 10
    first = next(e.spill for e in store._objects.values() if e.spill is not None)
    blocks = os.fstat(first.fd).st_blocks
    members = [e.oid for e in store._objects.values() if e.spill is first]
    for oid in members[:-1]:
        assert read(store, mapping, oid) == payload(oid, 4 * KB)  # restored: a hole punched
    assert first.live == 1 and os.fstat(first.fd).st_blocks < blocks
    store.delete(members[-1])  # the file's last object: the file goes
    with pytest.raises(OSError):
        os.fstat(first.fd)
    check_invariants(store)
    for oid in oids:
        store.delete(oid)
    assert store._spills.open_files == 0
    assert store.stats().used == store.stats().spilled_bytes == 0


def test_least_recently_used_is_spilled_first(store: ObjectStore, mapping: StoreMapping) -> None:
    for oid in (b"a", b"b", b"c", b"d"):
        put(store, mapping, oid, 256 * KB)
    read(store, mapping, b"a")  # a becomes the most recently used
    put(store, mapping, b"e", 256 * KB)
    spilled = {i.oid for i in store.object_info() if i.spilled}
    assert spilled == {b"b"}


def test_pinned_objects_are_never_spilled(store: ObjectStore, mapping: StoreMapping) -> None:
    for oid in (b"a", b"b", b"c"):
        put(store, mapping, oid, 256 * KB)
        assert store.open(oid, "reader") is not None
    store.create(b"writing", 256 * KB, "w")  # unsealed: pinned by its creator
    with pytest.raises(
        ObjectStoreFullError, match=r"65536 bytes: capacity 1048576.*pinned 1048576"
    ):
        store.create(b"x", 64 * KB, "w")
    with pytest.raises(ObjectStoreFullError, match="capacity"):
        store.create(b"huge", 2 * MB, "w")
    assert store.stats().num_spilled == 0
    assert not store.contains(b"x") and not store.contains(b"huge")

    store.release(b"b", "reader")
    store.create(b"x", 64 * KB, "w")  # room is made by spilling the only unpinned object
    assert {i.oid for i in store.object_info() if i.spilled} == {b"b"}
    # Restoring b needs room too, and everything else is pinned (x is unsealed).
    with pytest.raises(ObjectStoreFullError):
        store.open(b"b", "reader")
    store.seal(b"x")
    assert read(store, mapping, b"b") == payload(b"b", 256 * KB)
    for oid in (b"a", b"c"):
        loc = store.open(oid, "other")
        assert loc is not None and mapping.readonly(*loc) == payload(oid, 256 * KB)
    check_invariants(store)


def test_delete_of_a_pinned_object_waits_for_the_last_pin(
    store: ObjectStore, mapping: StoreMapping
) -> None:
    offset = put(store, mapping, b"a", 100 * KB)
    store.open(b"a", "r1")
    store.open(b"a", "r1")
    store.open(b"a", "r2")
    used = store.stats().used
    store.delete(b"a")
    assert not store.contains(b"a") and store.open(b"a", "r3") is None
    assert store.stats().used == used and store.stats().num_objects == 0
    assert mapping.readonly(offset, 100 * KB) == payload(b"a", 100 * KB)  # still intact
    # The oid can be created again while the old copy is still being read.
    assert put(store, mapping, b"a", 10 * KB) != offset
    store.release(b"a", "r1")
    store.release(b"a", "r2")
    assert store.stats().used > used
    store.release(b"a", "r1")  # last pin of the deleted copy
    assert store.stats().used == 10 * KB
    assert read(store, mapping, b"a") == payload(b"a", 10 * KB)
    store.delete(b"a")
    store.delete(b"unknown")
    assert store.stats().used == 0
    check_invariants(store)


def test_delete_while_being_written_waits_for_seal_or_abort(store: ObjectStore) -> None:
    store.create(b"a", 1000, "w")
    store.create(b"b", 1000, "w")
    store.delete(b"a")
    store.delete(b"b")
    assert store.stats().used == 2048 and store.stats().pinned_bytes == 2048
    store.seal(b"a")
    store.abort(b"b")
    assert store.stats().used == 0
    store.abort(b"never-created")
    check_invariants(store)


def test_release_reader_drops_all_its_pins(store: ObjectStore, mapping: StoreMapping) -> None:
    put(store, mapping, b"a", 64 * KB)
    put(store, mapping, b"b", 64 * KB)
    for _ in range(3):
        store.open(b"a", "dead")
    store.open(b"b", "dead")
    store.open(b"b", "alive")
    assert {i.oid: i.pins for i in store.object_info()} == {b"a": 3, b"b": 2}
    store.release(b"a", "nobody")  # holding no pin: no-op
    store.release_reader("dead")
    assert {i.oid: i.pins for i in store.object_info()} == {b"a": 0, b"b": 1}
    assert store.stats().pinned_bytes == 64 * KB
    store.release_reader("dead")
    check_invariants(store)


def test_delete_owned_by(store: ObjectStore, mapping: StoreMapping) -> None:
    put(store, mapping, b"a", 10 * KB, owner="w1")
    store.create(b"b", 10 * KB, "w1")  # w1 died while writing it itself
    store.create(b"d", 10 * KB, "w1", creator="worker")  # a live worker writes w1's result
    put(store, mapping, b"c", 10 * KB, owner="w2")
    store.open(b"a", "reader")
    assert sorted(store.delete_owned_by("w1")) == [b"a", b"b", b"d"]
    assert [i.oid for i in store.object_info()] == [b"c"]
    assert store.stats().used == 40 * KB  # nothing freed under a reader or a writer
    store.release_reader("reader")
    store.abort(b"b")  # the agent aborts what the dead process was writing
    assert store.stats().used == 20 * KB
    assert not store.contains(b"d")
    store.seal(b"d")  # the worker finishes the deleted object: freed now
    assert store.stats().used == 10 * KB
    assert store.create(b"d", 10 * KB, "w3") == 0  # the oid is free again; lowest block reused
    assert store.delete_owned_by("w1") == []
    check_invariants(store)


def test_creator_death_aborts_what_it_was_writing(store: ObjectStore) -> None:
    store.create(b"a", 10 * KB, "owner", creator="worker")
    store.create(b"b", 10 * KB, "owner", creator="worker")
    store.seal(b"b")
    assert store.contains(b"a") and store.open(b"a", "r") is None  # exists, not readable yet
    store.release_reader("worker")
    assert not store.contains(b"a") and store.contains(b"b")
    assert store.stats().used == 10 * KB
    check_invariants(store)


def test_alignment_layout_and_write_buffers(store: ObjectStore, mapping: StoreMapping) -> None:
    assert layout([]) == ([], 0)
    assert layout([3, 0, 100, 64]) == ([0, 64, 64, 192], 256)
    sizes = (1, 63, 64, 65, 1000, 0, 7)
    offsets = [store.create(str(n).encode(), n, "w") for n in sizes]
    assert all(o % 64 == 0 for o in offsets)
    assert offsets == [0, 64, 128, 192, 320, 0, 1344]  # packed, each rounded up to 64
    array = memoryview(bytes(range(240))).cast("d", (5, 6))  # 2-D float64, not bytes
    parts: list[Any] = [b"xyz", array, b"", memoryview(b"tail")]
    rel, total = layout([memoryview(p).nbytes for p in parts])
    base = store.create(b"multi", total, "w")
    write_buffers(mapping, base, parts)
    view = mapping.readonly(base, total)
    assert bytes(view[0:3]) == b"xyz" and bytes(view[64:304]) == bytes(range(240))
    assert rel[3] == 320 and bytes(view[320:324]) == b"tail"
    with pytest.raises(TypeError):
        view[0] = 1
    write_buffers(mapping, base, [memoryview(b"abcdef")[::2]])  # strided bytes are fine
    assert bytes(view[0:3]) == b"ace"
    with pytest.raises(BufferError):  # strided wider items cannot be flattened without a copy
        write_buffers(mapping, base, [memoryview(bytes(80)).cast("d")[::2]])
    with pytest.raises(ValueError):
        mapping.writable(store.capacity - 10, 11)


def test_large_writes_prefault_each_chunk_once(tmp_path: Path) -> None:
    with ObjectStore(8 * MB, str(tmp_path)) as s, StoreMapping(s.path, s.capacity) as m:
        s.create(b"pad", 1000, "w")
        data = payload(b"big", 5 * MB + 3)
        offset = put(s, m, b"big", len(data))  # crosses 2 MiB chunk boundaries, unaligned end
        assert m._touched == bytearray([1, 1, 1, 0])
        assert read(s, m, b"big") == data
        m.prefault(7 * MB, 1 * MB)
        assert m._touched == bytearray([1, 1, 1, 1])
        write_buffers(m, offset, [data[::-1]])  # every chunk known: no madvise at all
        assert bytes(m.readonly(offset, len(data))) == data[::-1]
        with pytest.raises(ValueError):
            m.prefault(7 * MB, 2 * MB)


def test_zero_size_and_duplicate_objects(store: ObjectStore, mapping: StoreMapping) -> None:
    store.create(b"empty", 0, "w")
    with pytest.raises(ValueError):
        store.create(b"empty", 10, "w")
    assert store.open(b"empty", "r") is None  # not sealed yet
    store.seal(b"empty")
    with pytest.raises(ValueError):
        store.seal(b"empty")
    loc = store.open(b"empty", "r")
    assert loc is not None and bytes(mapping.readonly(*loc)) == b""
    assert store.stats().used == 0 and store.stats().num_objects == 1


def test_freed_memory_is_reused_lowest_first_and_coalesced(store: ObjectStore) -> None:
    a, b, c = (store.create(o, 100 * KB, "w") for o in (b"a", b"b", b"c"))
    assert (a, b, c) == (0, 100 * KB, 200 * KB)
    store.abort(b"b")
    assert store.create(b"small", 10, "w") == b  # first fit: lowest free block
    store.abort(b"small")
    store.abort(b"a")
    assert store.create(b"big", 200 * KB, "w") == 0  # a and b coalesced
    check_invariants(store)


def test_unwritable_spill_dir_is_a_full_store_not_a_lost_object(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with ObjectStore(256 * KB, str(blocker / "spill")) as s, StoreMapping(s.path, s.capacity) as m:
        put(s, m, b"a", 200 * KB)
        with pytest.raises(ObjectStoreFullError, match="spilling"):
            s.create(b"b", 200 * KB, "w")
        assert read(s, m, b"a") == payload(b"a", 200 * KB)


def test_random_operations_keep_every_object_intact(tmp_path: Path) -> None:
    rng = random.Random(7)
    with (
        ObjectStore(300 * KB + 17, str(tmp_path / "s")) as s,
        StoreMapping(s.path, s.capacity) as m,
    ):
        live: dict[bytes, int] = {}
        writing: dict[bytes, tuple[int, str, bool]] = {}  # size, creator, deleted meanwhile
        pins: list[tuple[bytes, str]] = []
        for step in range(2000):
            op = rng.random()
            if op < 0.4:
                oid, size = f"o{step}".encode(), rng.choice([0, 1, 64, rng.randrange(40 * KB)])
                creator = rng.choice("abc")
                try:
                    offset = s.create(oid, size, rng.choice("xyz"), creator)
                except ObjectStoreFullError:
                    assert not s._could_fit(size)  # refused only when spilling cannot help
                    continue
                write_buffers(m, offset, [payload(oid, size)])
                writing[oid] = (size, creator, False)
            elif op < 0.5 and writing:
                oid = rng.choice(list(writing))
                size, _, deleted = writing.pop(oid)
                if rng.random() < 0.8:
                    s.seal(oid)
                    if not deleted:
                        live[oid] = size
                else:
                    s.abort(oid)
            elif op < 0.6 and (live or writing):
                oid = rng.choice([*live, *writing])
                s.delete(oid)
                if oid in live:
                    del live[oid]
                else:
                    writing[oid] = (*writing[oid][:2], True)
            elif op < 0.8 and live:
                oid, reader = rng.choice(list(live)), rng.choice("abc")
                try:
                    loc = s.open(oid, reader)
                except ObjectStoreFullError:
                    continue
                assert loc is not None and m.readonly(*loc) == payload(oid, live[oid])
                pins.append((oid, reader))
            elif op < 0.95 and pins:
                s.release(*pins.pop(rng.randrange(len(pins))))
            else:
                dead = rng.choice("abc")
                s.release_reader(dead)
                pins = [p for p in pins if p[1] != dead]
                writing = {k: v for k, v in writing.items() if v[1] != dead}
            check_invariants(s)
            assert {i.oid for i in s.object_info()} == {
                *live,
                *(k for k, v in writing.items() if not v[2]),
            }
        for client in "abc":
            s.release_reader(client)
        assert s.stats().pinned_bytes == 0
        for oid, size in live.items():
            assert read(s, m, oid, "final") == payload(oid, size)


def test_mapping_close_with_live_views(store: ObjectStore, mapping: StoreMapping) -> None:
    put(store, mapping, b"a", 1000)
    loc = store.open(b"a", "r")
    assert loc is not None
    m2 = StoreMapping(store.path, store.capacity)
    view = m2.readonly(*loc)
    m2.close()  # no BufferError: the mapping lives on with the view
    assert m2.closed and view == payload(b"a", 1000)
    with pytest.raises(ValueError):
        m2.readonly(*loc)


def _shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


def test_close_leaves_no_file_behind(tmp_path: Path) -> None:
    before = _shm_names()
    spill = tmp_path / "spill"
    s = ObjectStore(128 * KB, str(spill))
    with StoreMapping(s.path, s.capacity) as m:
        for i in range(10):
            put(s, m, bytes([i]), 30 * KB)
    assert s.stats().num_spilled > 0 and os.listdir(spill) == []
    fd = s.fd
    s.close()
    s.close()
    assert not spill.exists()  # the store made it, so it removes it
    assert _shm_names() == before
    with pytest.raises(OSError):
        os.fstat(fd)


def test_sigkilled_agent_leaves_no_file_behind(tmp_path: Path) -> None:
    before = _shm_names()
    spill = tmp_path / "spill"
    agent = textwrap.dedent(
        """
        import sys, time
        from nbcluster.runtime.objects.object_store import ObjectStore
        s = ObjectStore(128 * 1024, sys.argv[1])
        for i in range(10):
            s.create(bytes([i]), 30 * 1024, "w")
            s.seal(bytes([i]))
        assert s.stats().num_spilled > 0
        print(s.path, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", agent, str(spill)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        with StoreMapping(path, 128 * KB) as m:  # another process maps it by /proc path
            assert bytes(m.readonly(0, 4)) == b"\0\0\0\0"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert spill.is_dir() and os.listdir(spill) == []
    assert _shm_names() == before

"""The head's digests (what live widgets show), driven by a real event log fed packed events
as processes send them: progress counts, graph deltas and groups, scopes, pausing, and a
subscriber that lags. The subscriber's connection is a recorder of what would be pushed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from nbcluster.runtime import events as E
from nbcluster.runtime.observe.digest_service import DigestService
from nbcluster.runtime.observe.event_log import EventLog
from nbcluster.runtime.wire.transport import Endpoint

DRIVER = ["driver", 1, "n1", b"d", "127.0.0.1:1"]
WORKER = ["worker", 2, "n1", b"w", "127.0.0.1:2"]
CELL_TAG = "CellTag(msg_id='{}', plain=False)"


def tid(i: int) -> bytes:
    return i.to_bytes(16, "big")


def oid(task: int, index: int = 1) -> bytes:
    return tid(task) + index.to_bytes(4, "big")


class Subscriber:
    """Stands for a subscriber's connection: records the items the head pushes."""

    closed = False

    def __init__(self, unsent: int = 0) -> None:
        self.items: list[list[Any]] = []
        self.unsent = unsent
        self.transport = self

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def notify(self, method: str, items: list[list[Any]]) -> None:
        assert method == "digest"
        self.items.extend(items)

    def take(self) -> list[list[Any]]:
        items, self.items = self.items, []
        return items


class Head:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        endpoint = Endpoint(self.loop, "token")
        self.log = EventLog(endpoint)
        self.digests = DigestService(endpoint, self.log)

    def send(self, header: list[Any], *events: tuple[Any, ...]) -> None:
        """Events as a process ships them: task events packed apart, applied when needed."""
        tasks = [e for e in events if e[0] < 20]
        other = [e for e in events if e[0] >= 20]
        n = sum(E.weight(e) for e in tasks)
        self.log.ingest(header, msgpack.packb(other) if other else None,
                        msgpack.packb(tasks) if tasks else None, n)  # fmt: skip

    def submit(self, i: int, name: str = "f", args: list[bytes] | None = None,
               cell: str = "c1") -> None:  # fmt: skip
        self.send(DRIVER, (E.TASK_SUBMITTED, 1.0, tid(i), name, 0, args, None, 1,
                           CELL_TAG.format(cell), "cell.py:1", None))  # fmt: skip

    def ran(self, i: int, name: str = "f", size: int = 8) -> None:
        self.send(WORKER, (E.TASK_RAN, 2.0, tid(i), name, 1.5, None, size))

    def tick(self) -> None:
        self.digests._tick()


@pytest.fixture
def head() -> Iterator[Head]:
    h = Head()
    yield h
    h.loop.close()


def test_progress_counts_tasks_by_function_and_state_with_the_first_error(head: Head) -> None:
    for i in range(4):
        head.submit(i, "mod.f" if i < 3 else "mod.g")
    sub = Subscriber()
    first = head.digests.open(sub, "p", "progress", {"tasks": [tid(i) for i in range(5)]})
    assert first["rows"] == [["mod.f", 3, 3, 0, 0, 0, 0], ["mod.g", 1, 1, 0, 0, 0, 0]]
    assert (first["total"], first["ended"], first["size"]) == (4, 0, 5)  # 4 is not known yet
    head.ran(0, "mod.f")
    head.send(WORKER, (E.TASK_RUNNING, 2.0, tid(1), "mod.f"))
    head.send(DRIVER, (E.TASK_FAILED, 3.0, tid(3), 0, "ValueError", "bad input\nmore"))
    head.tick()
    [(did, seq, full, counts)] = sub.take()
    assert (did, seq, full) == ("p", 1, True)
    assert counts["rows"] == [["mod.f", 3, 1, 1, 1, 0, 0], ["mod.g", 1, 0, 0, 0, 1, 0]]
    assert counts["error"] == "g: ValueError: bad input" and counts["ended"] == 2
    head.tick()
    assert sub.take() == []  # nothing changed: nothing pushed
    # The driver holds task 1's result, whose end the head has not heard of yet.
    final = head.digests.query(None, "p", False, [tid(1)])
    assert final["rows"][0] == ["mod.f", 3, 1, 0, 2, 0, 0]
    assert head.digests.query(None, "p", True)["ended"] == 4


def test_graph_deltas_carry_only_what_changed(head: Head) -> None:
    sub = Subscriber()
    assert head.digests.open(sub, "g", "graph", {})["nodes"] == []
    head.submit(1)
    head.submit(2, args=[oid(1)])
    head.tick()
    [(_, seq, full, d)] = sub.take()
    assert (seq, full, d["mode"]) == (1, False, "nodes")
    records = {r[0]: r for r in d["nodes"]}
    assert records[tid(1).hex()] == [tid(1).hex(), "t", "f", 0, None, None, "c1"]
    assert records[oid(1).hex()][1:4] == ["o", "", 5]
    assert sorted(map(tuple, d["edges"])) == sorted([
        (tid(1).hex(), oid(1).hex()), (oid(1).hex(), tid(2).hex()), (tid(2).hex(), oid(2).hex()),
    ])  # fmt: skip
    assert d["summary"]["tasks"] == 2 and d["summary"]["objects"] == 2
    head.ran(1)
    head.tick()
    [(_, seq, full, d)] = sub.take()
    assert (seq, full, d["nodes"], d["edges"]) == (2, False, [], [])
    assert d["state_ids"] == [tid(1).hex()] and d["state_codes"] == bytes([2])
    assert d["summary"]["states"]["finished"] == 1
    head.tick()
    assert sub.take() == []
    whole = head.digests.query(None, "g")
    assert len(whole["nodes"]) == 4 and len(whole["edges"]) == 3


def test_a_graph_that_outgrows_the_limit_is_sent_as_groups(head: Head) -> None:
    sub = Subscriber()
    head.digests.open(sub, "g", "graph", {"group_at": 10})
    head.submit(1, "mod.load")
    head.tick()
    assert sub.take()[0][2] is False
    for i in range(2, 9):
        head.submit(i, "mod.load")
    head.submit(9, "mod.merge", args=[oid(1), oid(2)])
    head.tick()
    [(_, _, full, d)] = sub.take()
    assert full and d["mode"] == "grouped"  # the switch is a whole picture
    groups = {g[0]: g for g in d["groups"]}
    assert groups["mod.load"][1:5] == ["load", 8, 8, 0] and groups["mod.merge"][2] == 1
    assert d["group_edges"] == [["mod.load", "mod.merge", 2]]
    for i in range(1, 9):
        head.ran(i, "mod.load")
    head.tick()
    [(_, _, full, d)] = sub.take()
    assert not full and {g[0]: g for g in d["groups"]}["mod.load"][5][2] == 8  # 8 finished
    assert "nodes" not in d


def test_a_graph_of_refs_follows_their_lineage_only(head: Head) -> None:
    head.submit(1)
    head.submit(2, args=[oid(1)])
    head.submit(3, args=[oid(2)])
    head.submit(4)  # not in the lineage of 3
    sub = Subscriber()
    whole = head.digests.open(sub, "g", "graph", {"tasks": [tid(3)]})
    tasks = sorted(r[0] for r in whole["nodes"] if r[1] == "t")
    assert tasks == [tid(1).hex(), tid(2).hex(), tid(3).hex()]


def test_a_graph_of_a_cell_keeps_to_that_cells_tasks(head: Head) -> None:
    sub = Subscriber()
    head.digests.open(sub, "g", "graph", {"cell": "c2"})
    head.submit(1, cell="c1")
    head.submit(2, cell="c2")
    head.tick()
    [(_, _, _, d)] = sub.take()
    assert [r[0] for r in d["nodes"] if r[1] == "t"] == [tid(2).hex()]


def test_a_paused_digest_costs_nothing_and_resumes_whole(head: Head) -> None:
    sub = Subscriber()
    head.digests.open(sub, "g", "graph", {}, False)
    head.submit(1)
    head.tick()
    assert sub.take() == [] and not head.digests._tasks  # nothing even collected
    head.digests.set_live(sub, "g", True)
    [(_, seq, full, d)] = sub.take()
    assert (seq, full) == (1, True) and len(d["nodes"]) == 2
    head.ran(1)
    head.tick()
    [(_, seq, full, d)] = sub.take()
    assert (seq, full, d["state_ids"]) == (2, False, [tid(1).hex()])
    head.digests.on_close(sub)  # the connection closed: its digests go
    assert not head.digests.entries and not head.digests._live


def test_a_lagging_subscriber_later_gets_one_coalesced_change(head: Head) -> None:
    sub = Subscriber(unsent=64 << 20)
    head.digests.open(sub, "g", "graph", {})
    for i in range(1, 6):
        head.submit(i)
        head.tick()
    assert sub.take() == []
    sub.unsent = 0
    head.tick()
    [(_, seq, _, d)] = sub.take()
    assert seq == 1 and len([r for r in d["nodes"] if r[1] == "t"]) == 5


def test_a_quiet_graph_is_pushed_whole_once(head: Head, monkeypatch: Any) -> None:
    from nbcluster.runtime.observe import digest_service

    monkeypatch.setattr(digest_service, "SETTLE_S", 0.0)
    sub = Subscriber()
    head.digests.open(sub, "g", "graph", {})
    head.submit(1)
    head.tick()
    assert [i[2] for i in sub.take()] == [False]
    head.tick()
    assert [i[2] for i in sub.take()] == [True]  # settled: the whole picture
    head.tick()
    assert sub.take() == []


def test_bad_digest_requests_are_refused_with_the_reason(head: Head) -> None:
    with pytest.raises(ValueError, match="unknown digest kind 'pie'"):
        head.digests.open(Subscriber(), "x", "pie", {})
    with pytest.raises(TypeError, match="spec is a dict"):
        head.digests.open(Subscriber(), "x", "graph", [1])
    with pytest.raises(LookupError, match="no open digest"):
        head.digests.query(None, "nope")


def test_progress_carries_the_bars_tasks_report_running_ones_first(head: Head) -> None:
    from nbcluster.runtime.observe.digest_progress import MAX_BARS

    for i in range(10):
        head.submit(i, "mod.train")
    head.ran(0, "mod.train")  # finished: its bar goes after those of running tasks
    for i in range(1, 10):
        head.send(WORKER, (E.TASK_RUNNING, 2.0, tid(i), "mod.train"))
    sub = Subscriber()
    head.digests.open(sub, "p", "progress", {"tasks": [tid(i) for i in range(10)]})
    for i in range(10):
        head.send(WORKER, (E.TASK_PROGRESS, 3.0 + i, tid(i), 1, "epochs", i, 10, "it"))
    head.tick()
    [(_, _, _, counts)] = sub.take()
    bars = counts["bars"]
    assert len(bars) == MAX_BARS and counts["more_bars"] == 10 - MAX_BARS
    assert bars[0] == ["train", "epochs", 9, 10, "it", 1]  # running, latest report first
    assert all(b[5] == 1 for b in bars)  # the finished task's bar is among those left out


def test_asking_a_paused_digest_answers_from_the_tables_now(head: Head) -> None:
    head.submit(1)
    head.digests.open(Subscriber(), "p", "progress", {"tasks": tid(1) + tid(2)}, False)
    head.ran(1)
    head.submit(2)
    counts = head.digests.query(None, "p")
    assert (counts["total"], counts["ended"]) == (2, 1)
    with pytest.raises(ValueError, match="multiple of 16"):
        head.digests.open(Subscriber(), "q", "progress", {"tasks": b"abc"})

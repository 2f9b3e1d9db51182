"""Actor calls as Ray defines them: cancelling them (queued, running, threaded, async) and
what they print, each line under the call that printed it."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until

import nbcluster as nc
from nbcluster import exceptions as exc
from nbcluster.runtime.core import output

T = 30


class _Worker:
    def __init__(self):
        self.calls = []

    def hold(self, started, gate):
        """Runs until the gate opens or the call is cancelled."""
        Path(started).touch()
        deadline = time.monotonic() + T
        while not Path(gate).exists() and time.monotonic() < deadline:
            if nc.get_runtime_context().is_canceled():
                self.calls.append("hold saw the cancel")
                return "stopped early"
            time.sleep(0.01)
        self.calls.append("hold finished")
        return "finished"

    def record(self, what):
        self.calls.append(what)
        return what

    def log(self):
        return list(self.calls)


Worker = nc.remote(_Worker)
Threaded = nc.remote(max_concurrency=2)(_Worker)


@nc.remote
class Async:
    def __init__(self):
        self.calls = []

    async def hold(self, started, gate):
        Path(started).touch()
        try:
            while not Path(gate).exists():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.calls.append("hold was cancelled")
            raise
        return "finished"

    async def log(self):
        return list(self.calls)


def test_force_cancel_of_an_actor_call_is_refused(cluster, tmp_path):
    a = Worker.remote()
    ref = a.hold.remote(str(tmp_path / "started"), str(tmp_path / "gate"))
    with pytest.raises(ValueError, match="force=True is not supported for actor tasks"):
        nc.cancel(ref, force=True)
    (tmp_path / "gate").touch()
    assert nc.get(ref, timeout=T) == "finished"
    assert nc.get(a.record.remote("alive"), timeout=T) == "alive"


@pytest.mark.parametrize("cls", [Worker, Threaded], ids=["sync", "threaded"])
def test_a_running_call_is_told_and_a_queued_one_never_runs(cluster, tmp_path, cls):
    a = cls.options(max_concurrency=1).remote() if cls is Threaded else cls.remote()
    started, gate = tmp_path / "started", tmp_path / "gate"
    running = a.hold.remote(str(started), str(gate))
    queued = a.record.remote("queued call ran")
    wait_until(started.exists, T)
    nc.cancel(queued)
    nc.cancel(running)  # not interrupted: it can see it was cancelled, as in Ray
    with pytest.raises(exc.TaskCancelledError):
        nc.get(queued, timeout=T)
    with pytest.raises(exc.TaskCancelledError):
        nc.get(running, timeout=T)
    assert nc.get(a.log.remote(), timeout=T) == ["hold saw the cancel"]


def test_cancelling_a_running_threaded_call_leaves_the_others_running(cluster, tmp_path):
    a = Threaded.remote()
    s1, s2, gate = tmp_path / "s1", tmp_path / "s2", tmp_path / "gate"
    first = a.hold.remote(str(s1), str(gate))
    second = a.hold.remote(str(s2), str(gate))
    wait_until(lambda: s1.exists() and s2.exists(), T)
    nc.cancel(first)
    with pytest.raises(exc.TaskCancelledError):
        nc.get(first, timeout=T)
    gate.touch()
    assert nc.get(second, timeout=T) == "finished"


def test_cancelling_an_async_call_cancels_its_asyncio_task(cluster, tmp_path):
    a = Async.remote()
    started, gate = tmp_path / "started", tmp_path / "gate"
    ref = a.hold.remote(str(started), str(gate))
    wait_until(started.exists, T)
    nc.cancel(ref)
    with pytest.raises(exc.TaskCancelledError):
        nc.get(ref, timeout=T)
    assert nc.get(a.log.remote(), timeout=T) == ["hold was cancelled"]
    other = a.hold.remote(str(tmp_path / "started2"), str(gate))
    gate.touch()
    assert nc.get(other, timeout=T) == "finished"


def test_is_canceled_outside_an_actor_call_is_false_or_refused(cluster):
    assert nc.get(nc.remote(lambda: nc.get_runtime_context().is_canceled()).remote()) is False
    with pytest.raises(RuntimeError):
        nc.get_runtime_context().is_canceled()  # the driver runs no task


# ----------------------------------------------------------- output of threaded actors


@nc.remote(max_concurrency=2)
class Printer:
    def __init__(self):
        self.barrier = threading.Barrier(2)

    def say(self, who):
        print(f"{who} starts,", end=" ")
        self.barrier.wait(T)  # both calls hold a half line
        print(f"{who} ends")
        self.barrier.wait(T)
        return who


def test_threaded_actor_output_keeps_each_line_with_its_call(cluster):
    got: list[tuple[str, str]] = []
    tag = ["?"]
    output.set_tag_provider(lambda: tag[0])
    output.set_sink(lambda t, stream, text, where: got.append((t, text)))
    try:
        p = Printer.remote()
        refs = []
        for who in ("A", "B"):
            tag[0] = f"cell-{who}"
            refs.append(p.say.remote(who))
        assert nc.get(refs, timeout=T) == ["A", "B"]
        wait_until(lambda: "".join(text for _, text in got).count("\n") >= 2, T)
    finally:
        output.set_sink(None)
        output.set_tag_provider(None)
    lines = {}
    for t, text in got:
        lines[t] = lines.get(t, "") + text
    assert lines == {"cell-A": "A starts, A ends\n", "cell-B": "B starts, B ends\n"}, got

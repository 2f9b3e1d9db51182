"""Objects live exactly as long as a reference to them lives anywhere, however the reference
travelled: passed on by a borrower to a third process, returned inside a value, read out of
another object; and their owners live as long as that."""

from __future__ import annotations

import gc
import os

import psutil
from conftest import descendants, wait_for_file, wait_until

import nbcluster as nc

#: Bound on every ``get`` here: a call that never answers fails the test, not the run.
T = 30
#: Each race is run this many times: once would pass by luck too often.
ROUNDS = 6


@nc.remote
class Keeper:
    """A third process that keeps what it is given."""

    def keep(self, box):
        self.box = box
        return True

    def read(self):
        return nc.get(self.box[0], timeout=T)


@nc.remote
def middle(box, keeper):
    """Borrows ``box[0]``, passes it on to ``keeper`` and returns at once."""
    return nc.get(keeper.keep.remote(box), timeout=T)


def test_a_ref_a_borrower_passes_on_outlives_the_borrower(cluster):
    for i in range(ROUNDS):
        keeper = Keeper.remote()  # a fresh process, with no connection to us yet
        ref = nc.put(f"value {i}")
        assert nc.get(middle.remote([ref], keeper), timeout=T) is True
        del ref  # ours is gone; the keeper's is the last
        gc.collect()
        assert nc.get(keeper.read.remote(), timeout=T) == f"value {i}"


@nc.remote
class Maker:
    def make(self, i):
        return [nc.put(f"made {i}")]  # this actor owns it, and keeps no reference itself


@nc.remote
def relay(maker, i):
    """Returns a ref owned by a third process (the maker) inside its result."""
    return nc.get(maker.make.remote(i), timeout=T)


def test_a_ref_returned_inside_a_result_outlives_the_task_that_returned_it(cluster):
    for i in range(ROUNDS):
        maker = Maker.remote()  # we never call it: no connection from us to it yet
        box = nc.get(relay.remote(maker, i), timeout=T)
        gc.collect()
        assert nc.get(box[0], timeout=T) == f"made {i}"


@nc.remote
class Boxer:
    """Owns an object holding a ref that a third process owns."""

    def box(self, maker, i):
        inner = nc.get(maker.make.remote(i), timeout=T)
        return [nc.put(inner)]


def test_a_ref_read_out_of_an_object_outlives_that_object(cluster):
    for i in range(ROUNDS):
        maker, boxer = Maker.remote(), Boxer.remote()
        [outer] = nc.get(boxer.box.remote(maker, i), timeout=T)
        inner = nc.get(outer, timeout=T)
        del outer  # the object that held the ref goes at once
        gc.collect()
        assert nc.get(inner[0], timeout=T) == f"made {i}"


# --------------------------------------------------------------- owners are not reaped


@nc.remote
def own_one(i, gate):
    """Hold a worker until ``gate`` opens; return a ref this worker owns, and its pid."""
    wait_for_file(gate, T)
    return [nc.put(f"owned {i}")], os.getpid()


@nc.remote
def fan_out(n, gate):
    """Its children need no CPU: each runs on an extra worker, all at once."""
    children = [own_one.options(num_cpus=0).remote(i, gate) for i in range(n)]
    return nc.get(children, timeout=T), os.getpid()


def test_idle_extra_workers_that_own_objects_are_not_stopped(
    no_cluster, make_cluster, monkeypatch, tmp_path
):
    monkeypatch.setenv("NBCLUSTER_IDLE_WORKER_TIMEOUT_S", "0.2")
    make_cluster(num_cpus=1)
    gate = tmp_path / "gate"
    ref = fan_out.remote(3, str(gate))
    # head, fork server, the parent's worker and one extra worker per child
    wait_until(lambda: len(descendants()) >= 2 + 1 + 3, T, message="the pool did not grow")
    gate.touch()
    results, parent = nc.get(ref, timeout=T)
    owners = {pid for _, pid in results}
    assert parent not in owners and len(owners) == 3
    # The pool shrinks back to one worker per CPU: the parent's worker, idle and owning
    # nothing, is stopped; the workers whose objects we hold are not.
    wait_until(lambda: not psutil.pid_exists(parent), T, message="idle workers are kept")
    assert nc.get([box[0] for box, _ in results], timeout=T) == [f"owned {i}" for i in range(3)]
    assert all(psutil.pid_exists(pid) for pid in owners)
    del results
    gc.collect()

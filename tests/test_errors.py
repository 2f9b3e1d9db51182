"""What the user sees when things go wrong: remote exceptions, crashed workers, retries,
timeouts, values that cannot be pickled and objects whose owner died."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import is_gone, wait_for_file, wait_until

import nbcluster as nc
from nbcluster import exceptions as exc


class QuotaExceeded(Exception):
    """A user's own exception class."""


@nc.remote
def add(a, b=0):
    return a + b


@nc.remote
def fail_with_value_error(x):
    raise ValueError(f"bad value {x}")


@nc.remote
def fail_with_own_error():
    raise QuotaExceeded("over quota")


@nc.remote
def get_failing_child():
    return nc.get(fail_with_value_error.remote(3))


@nc.remote(max_retries=0)
def crash(pid_file=None):
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    os._exit(1)


def record_attempt(directory: str) -> int:
    """Count this attempt in ``directory``; returns how many came before it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    before = len(list(d.iterdir()))
    (d / f"attempt-{uuid.uuid4().hex}").touch()
    return before


@nc.remote
def crash_the_first_times(directory, crashes):
    if record_attempt(directory) < crashes:
        os._exit(1)
    return os.getpid()


@nc.remote
def raise_the_first_times(directory, failures):
    attempt = record_attempt(directory)
    if attempt < failures:
        raise ValueError(f"attempt {attempt} failed")
    return attempt


@nc.remote
def blocked(gate):
    return wait_for_file(gate, 60)


@nc.remote
def make_lock():
    return threading.Lock()


@nc.remote
def owned_by_worker(value):
    return [nc.put(value)], os.getpid()


def attempts(directory: Path) -> int:
    return len(list(directory.iterdir())) if directory.exists() else 0


def assert_cluster_works() -> None:
    assert nc.get([add.remote(i, 1) for i in range(4)], timeout=30) == [1, 2, 3, 4]


# ------------------------------------------------------------------------- remote errors


def test_exception_names_and_ray_aliases():
    assert nc.exceptions is exc
    assert exc.RayTaskError is exc.TaskError
    assert issubclass(exc.GetTimeoutError, TimeoutError)
    assert issubclass(exc.OwnerDiedError, exc.ObjectLostError)
    for name in (
        "TaskError",
        "GetTimeoutError",
        "TaskCancelledError",
        "WorkerCrashedError",
        "ObjectLostError",
        "OwnerDiedError",
        "ObjectStoreFullError",
        "RayError",
    ):
        assert issubclass(getattr(exc, name), Exception), name


def test_task_exception_is_a_task_error_and_the_users_class(cluster):
    with pytest.raises(ValueError) as info:
        nc.get(fail_with_value_error.remote(7))
    err = info.value
    assert isinstance(err, exc.TaskError)
    assert isinstance(err, exc.RayTaskError)
    assert isinstance(err.cause, ValueError)

    text = str(err)
    assert "fail_with_value_error" in text
    assert 'raise ValueError(f"bad value {x}")' in text, "the remote traceback shows the line"
    assert "bad value 7" in text
    assert_cluster_works()


def test_users_own_exception_class_can_be_caught(cluster):
    with pytest.raises(QuotaExceeded) as info:
        nc.get(fail_with_own_error.remote())
    assert isinstance(info.value, exc.TaskError)
    assert "over quota" in str(info.value)


def test_error_flows_through_dependent_and_nested_tasks(cluster):
    with pytest.raises(ValueError, match="bad value 1"):
        nc.get(add.remote(fail_with_value_error.remote(1), 1))
    with pytest.raises(ValueError, match="bad value 3") as info:
        nc.get(get_failing_child.remote())
    assert isinstance(info.value, exc.TaskError)


def test_get_of_a_list_raises_the_first_error(cluster):
    refs = [add.remote(1), fail_with_value_error.remote(2), add.remote(3)]
    with pytest.raises(exc.TaskError):
        nc.get(refs)
    assert nc.get(refs[0]) == 1


# --------------------------------------------------------------------------------- timeouts


def test_get_timeout_raises_get_timeout_error(cluster, tmp_path, gate):
    ref = blocked.remote(str(gate))
    t0 = time.monotonic()
    with pytest.raises(exc.GetTimeoutError) as info:
        nc.get(ref, timeout=0.1)
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, TimeoutError)

    gate.touch()  # the task was not harmed by the caller giving up
    assert nc.get(ref, timeout=30) is True


# ------------------------------------------------------------------------- worker crashes


def test_worker_crash_without_retries_names_the_dead_process(cluster, tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(exc.WorkerCrashedError) as info:
        nc.get(crash.remote(str(pid_file)), timeout=30)
    assert f"(pid {pid_file.read_text()}, node " in str(info.value)
    assert_cluster_works()


def test_worker_crash_is_retried(cluster, tmp_path):
    attempts_dir = tmp_path / "attempts"
    task = crash_the_first_times.options(max_retries=2)
    assert nc.get(task.remote(str(attempts_dir), 1), timeout=30) != os.getpid()
    assert attempts(attempts_dir) == 2


def test_worker_crashes_are_retried_three_times_by_default(cluster, tmp_path):
    attempts_dir = tmp_path / "attempts"
    nc.get(crash_the_first_times.remote(str(attempts_dir), 3), timeout=60)
    assert attempts(attempts_dir) == 4


def test_worker_crashes_beyond_max_retries(cluster, tmp_path):
    attempts_dir = tmp_path / "attempts"
    task = crash_the_first_times.options(max_retries=2)
    with pytest.raises(exc.WorkerCrashedError):
        nc.get(task.remote(str(attempts_dir), 100), timeout=60)
    assert attempts(attempts_dir) == 3
    assert_cluster_works()


def test_application_errors_are_not_retried_by_default(cluster, tmp_path):
    attempts_dir = tmp_path / "attempts"
    task = raise_the_first_times.options(max_retries=3)
    with pytest.raises(ValueError, match="attempt 0 failed"):
        nc.get(task.remote(str(attempts_dir), 2), timeout=30)
    assert attempts(attempts_dir) == 1


def test_application_errors_are_retried_with_retry_exceptions(cluster, tmp_path):
    attempts_dir = tmp_path / "attempts"
    task = raise_the_first_times.options(max_retries=3, retry_exceptions=True)
    assert nc.get(task.remote(str(attempts_dir), 2), timeout=30) == 2
    assert attempts(attempts_dir) == 3

    exhausted = raise_the_first_times.options(max_retries=1, retry_exceptions=True)
    with pytest.raises(ValueError, match="attempt 1 failed"):
        nc.get(exhausted.remote(str(tmp_path / "more"), 5), timeout=30)
    assert attempts(tmp_path / "more") == 2


# ---------------------------------------------------------------- values that cannot travel


@pytest.mark.parametrize(
    ("make_value", "type_name"),
    [
        (threading.Lock, "lock"),
        (lambda: (i for i in range(3)), "generator"),
    ],
    ids=["lock", "generator"],
)
def test_unpicklable_argument_fails_at_the_call(cluster, make_value, type_name):
    with pytest.raises(TypeError) as info:
        add.remote(make_value())
    assert type_name in str(info.value).lower()

    with pytest.raises(TypeError) as info:
        add.remote(1, b={"inside": [make_value()]})
    assert type_name in str(info.value).lower()

    with pytest.raises(TypeError) as info:
        nc.put(make_value())
    assert type_name in str(info.value).lower()
    assert_cluster_works()


def test_unpicklable_return_value_fails_at_get(cluster):
    with pytest.raises(TypeError) as info:
        nc.get(make_lock.remote(), timeout=30)
    assert "lock" in str(info.value).lower()
    assert_cluster_works()


# ------------------------------------------------------------------------------ ownership


def test_objects_of_a_dead_owner_raise_owner_died(cluster):
    (ref,), owner = nc.get(owned_by_worker.remote("owned by a worker"))
    os.kill(owner, signal.SIGKILL)
    wait_until(lambda: is_gone(owner), 10)
    with pytest.raises(exc.OwnerDiedError):
        nc.get(ref, timeout=30)
    assert_cluster_works()


# --------------------------------------------------- a handler's bug is not a bad message


def _peer_session(address: str, token: str, steps: Any) -> Any:
    """Connect to ``address`` as an authenticated peer and run ``steps(conn)``."""
    import asyncio

    from nbcluster.runtime.wire.transport import Endpoint, install_rpc, parse_address

    async def main() -> Any:
        endpoint = Endpoint(asyncio.get_running_loop(), token)
        install_rpc(endpoint)
        conn = await endpoint.connect(*parse_address(address))
        try:
            return await steps(conn)
        finally:
            conn.close()

    return asyncio.run(main())


def test_a_handler_that_raises_keeps_the_link_and_logs_its_traceback(cluster, caplog):
    """A message that decodes but makes its handler raise is the receiver's bug (or the
    sender's), not garbage on the wire: the link stays up and the traceback is logged."""
    import asyncio

    from nbcluster.runtime.ownership.object_ref import get_core
    from nbcluster.runtime.wire import protocol as P

    core = get_core()

    async def steps(conn: Any) -> Any:
        # Fits its record, but its results are not a list: its handler raises.
        conn.post(P.TaskDone(b"no such task", P.DONE_OK, 5, [], []))
        conn.send([P.REQUEST, 7])  # a request too short to unpack: answered with an error
        bad = conn._pending[7] = asyncio.get_running_loop().create_future()
        answer = await asyncio.wait_for(conn.call("get_object", b"\0" * 20), 10)
        [refused] = await asyncio.wait_for(asyncio.gather(bad, return_exceptions=True), 10)
        return answer, refused

    with caplog.at_level(logging.ERROR, logger="nbcluster"):
        answer, bad = None, None
        try:
            answer, bad = _peer_session(core.address, core.token, steps)
        except Exception as e:  # pragma: no cover - the failure being tested
            pytest.fail(f"the link was dropped: {e!r}")
    assert answer[0] == 2  # FAILED: the object is unknown, said over the same link
    assert isinstance(bad, Exception), bad
    assert "Traceback" in caplog.text and "TASK_DONE" in caplog.text
    assert nc.get(add.remote(1, 2), timeout=30) == 3


@pytest.mark.parametrize(
    "frame",
    [b"\xc1", msgpack.packb([5, b"too short"]), msgpack.packb([99, 1])],
    ids=["not msgpack", "fields that do not fit the record", "an unknown message type"],
)
def test_undecodable_bytes_from_an_authenticated_peer_drop_the_link(cluster, frame):
    import asyncio

    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()

    async def steps(conn: Any) -> bool:
        conn.transport.write(frame)
        for _ in range(500):
            if conn.closed:
                return True
            await asyncio.sleep(0.01)
        return False

    assert _peer_session(core.address, core.token, steps)
    assert nc.get(add.remote(1, 2), timeout=30) == 3

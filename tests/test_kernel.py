"""The nbcluster kernel as a notebook user meets it, driven over the Jupyter protocol.

One kernel serves the module's stories, each in its own cells; every assertion is about the
IOPub messages a cell received (what a frontend would show under it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import KernelSession, kernelspec, start_kernel  # noqa: F401

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def kernel(kernelspec: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelSession]:  # noqa: F811
    session = start_kernel(tmp_path_factory.mktemp("kernel"))
    try:
        yield session
    finally:
        session.shutdown()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A file a task waits for: the test opens the gate by creating it."""
    return tmp_path / "gate"


WAIT_FOR_FILE = """
import os, time
import nbcluster as nc

def wait_for_file(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
"""


def test_first_cell_finds_the_cluster_ready(kernel: KernelSession) -> None:
    cell = kernel.ok(
        "import nbcluster as nc\n"
        "assert nc.is_initialized()\n"
        "before = nc.init()['address']\n"
        "assert nc.init()['address'] == before  # an explicit init is harmless\n"
        "nc.cluster_resources()['CPU']"
    )
    assert cell.result == "2.0"
    assert len(kernel.processes()) >= 2  # the head and its workers are the kernel's children


def test_task_output_appears_under_its_cell_even_after_it_finished(
    kernel: KernelSession, gate: Path
) -> None:
    kernel.ok(WAIT_FOR_FILE)
    first = kernel.ok(
        "@nc.remote\n"
        "def talk(gate):\n"
        "    print('early')\n"
        "    wait_for_file(gate)\n"
        "    print('late')\n"
        "    return 'done'\n"
        f"talking = talk.remote({str(gate)!r})\n"
    )
    kernel.wait_for(
        lambda: "early" in kernel.cell_of(first.msg_id).text(), what="early output, cell 1"
    )
    second = kernel.submit(
        f"open({str(gate)!r}, 'w').close()\nresult = nc.get(talking)\nprint('second cell')"
    )
    second_cell = kernel.finish(second)
    assert second_cell.reply["status"] == "ok"
    late = kernel.wait_for(
        lambda: "late" in kernel.cell_of(first.msg_id).text(), what="late output in cell 1"
    )
    assert late
    first_text = kernel.cell_of(first.msg_id).text()
    assert "(talk pid=" in first_text  # prefixed with where it ran
    assert second_cell.text() == "second cell\n"  # nothing of the task leaked into cell 2


def test_stderr_of_a_task_goes_home_as_stderr(kernel: KernelSession) -> None:
    cell = kernel.ok(
        "import sys\nimport nbcluster as nc\n"
        "@nc.remote\n"
        "def warn():\n"
        "    print('careful', file=sys.stderr)\n"
        "nc.get(warn.remote())"
    )
    assert "careful" in cell.text("stderr")
    assert "careful" not in cell.text("stdout")


def test_remote_cell_round_trips_names(kernel: KernelSession) -> None:
    kernel.ok("import nbcluster as nc\na = 20\ndata = [1, 2, 3]\nimport os\nhere = os.getpid()")
    cell = kernel.ok(
        "%%remote\n"
        "import math\n"
        "b = a + sum(data)\n"
        "root = math.sqrt(b - 10)\n"
        "there = os.getpid()\n"
        "print('computed', b)\n"
        "b * 2"
    )
    assert cell.result == "52"
    assert cell.text() == "computed 26\n"  # reads like local output: no prefix
    check = kernel.ok("(b, root, there != here, math.pi > 3)")
    assert check.result == "(26, 4.0, True, True)"


def test_remote_cell_options_and_out(kernel: KernelSession) -> None:
    kernel.ok("import nbcluster as nc")
    cell = kernel.ok(
        "%%remote --num-cpus 2 --name wide --out kept\n"
        "kept = nc.get_runtime_context().get_assigned_resources()['CPU']\n"
        "dropped = 1"
    )
    assert cell.result is None
    check = kernel.ok("(kept, 'dropped' in globals())")
    assert check.result == "(2.0, False)"


def test_remote_cells_are_named_for_their_own_cell(kernel: KernelSession) -> None:
    """``nbcluster list tasks`` shows a %%remote task as the cell it ran in, not the next."""
    kernel.ok("import nbcluster as nc\nfrom nbcluster.util import state")
    cell = kernel.ok("%%remote\nnc.get_runtime_context().get_task_id()")
    number = cell.reply["execution_count"]
    check = kernel.ok(
        "[t['name'] for t in state.list_tasks() if t['task_id'] == " + str(cell.result) + "]"
    )
    assert check.result == f"['In[{number}]']"


def test_remote_async_binds_object_refs(kernel: KernelSession) -> None:
    kernel.ok("import nbcluster as nc")
    cell = kernel.ok("%%remote --async\nx = 6\ny = x * 7\nx + y")
    assert cell.result is not None and cell.result.startswith("ObjectRef(")
    check = kernel.ok("(type(x).__name__, nc.get([x, y]), nc.get(_))")
    assert check.result == "('ObjectRef', [6, 42], 48)"


def test_remote_cell_syntax_error_is_reported_locally(kernel: KernelSession) -> None:
    cell = kernel.run("%%remote\nx = (")
    assert cell.reply["status"] == "ok" or cell.error is not None
    assert "SyntaxError" in "".join(m["content"].get("text", "") for m in cell.messages) + str(
        cell.error
    )


def test_remote_errors_show_remote_frames_with_cell_source(kernel: KernelSession) -> None:
    defining = kernel.ok(
        "import nbcluster as nc\n\n"
        "def inner(x):\n    scaled = x * 2\n    return 1 / (scaled - scaled)\n"
    )
    number = defining.reply["execution_count"]
    cell = kernel.run("nc.get(nc.remote(inner).remote(3))")
    assert cell.reply["status"] == "error"
    text = cell.traceback_text
    assert f"Cell In[{number}], line 5, in inner" in text
    assert "return 1 / (scaled - scaled)" in text
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "TaskError" in cell.reply["ename"] and "ZeroDivisionError" in cell.reply["ename"]

    remote_cell = kernel.run("%%remote\nq = 1\nraise KeyError(q)")
    number = remote_cell.reply["execution_count"]
    text = remote_cell.traceback_text
    assert f"Cell In[{number}], line 3, in <module>" in text
    assert "raise KeyError(q)" in text
    assert "run_cell_magic" not in text and "cell_task.py" not in text


def test_interrupt_cancels_exactly_the_interrupted_cells_tasks(
    kernel: KernelSession, gate: Path, tmp_path: Path
) -> None:
    kernel.ok(
        # SPREAD: one task per worker, so both run at once rather than queue on one worker.
        WAIT_FOR_FILE + "\n@nc.remote(scheduling_strategy='SPREAD')\n"
        "def mark_after(gate, started, done):\n"
        "    open(started, 'w').close()\n"
        "    wait_for_file(gate)\n"
        "    open(done, 'w').close()\n"
        "    return done\n"
    )
    paths = {k: str(tmp_path / k) for k in ("a_started", "a_done", "b_started", "b_done")}
    kernel.ok(
        f"earlier = mark_after.remote({str(gate)!r}, {paths['a_started']!r}, {paths['a_done']!r})"
    )
    blocked = kernel.submit(
        f"later = mark_after.remote({str(gate)!r}, {paths['b_started']!r}, {paths['b_done']!r})\n"
        "nc.get(later)"
    )
    kernel.wait_for(
        lambda: Path(paths["a_started"]).exists() and Path(paths["b_started"]).exists(),
        what="both tasks running",
    )
    interrupted_at = time.monotonic()
    kernel.km.interrupt_kernel()
    kernel.wait_for(
        lambda: any(m["msg_type"] == "error" for m in kernel.of(blocked)),
        what="the interrupted cell's KeyboardInterrupt",
    )
    assert time.monotonic() - interrupted_at < 1.0
    cell = kernel.finish(blocked)
    assert cell.reply["status"] == "error" and cell.reply["ename"] == "KeyboardInterrupt"
    assert "cancelled 1 task" in cell.text("stderr")
    # Cancelling is asynchronous, as in Ray: the cell asked the worker to stop the task. The
    # worker's answer (the task interrupted) is what makes get raise; only then may the gate
    # open, or a busy worker could still see it first and finish the task.
    cancelled = kernel.run("nc.get(later)")
    assert "TaskCancelledError" in cancelled.reply["ename"]

    gate.touch()  # the earlier cell's task may finish now; the cancelled one no longer can
    assert kernel.ok("nc.get(earlier)").result == repr(paths["a_done"])
    # Both workers meet at a barrier: the worker that ran the cancelled task is free again,
    # so that task is over; its file was never written.
    kernel.ok(
        "@nc.remote(scheduling_strategy='SPREAD')\n"
        "def meet(d):\n"
        "    import os, time, uuid\n"
        "    os.makedirs(d, exist_ok=True)\n"
        "    open(os.path.join(d, uuid.uuid4().hex), 'w').close()\n"
        "    deadline = time.monotonic() + 30\n"
        "    while len(os.listdir(d)) < 2 and time.monotonic() < deadline:\n"
        "        time.sleep(0.005)\n"
        "    return len(os.listdir(d))\n"
        f"assert nc.get([meet.remote({str(tmp_path / 'meet')!r}) for _ in range(2)]) == [2, 2]"
    )
    assert not Path(paths["b_done"]).exists()


def test_actor_cells_keep_their_state_on_the_remote_side(kernel: KernelSession) -> None:
    kernel.ok("import nbcluster as nc\nimport os\nstart = 5")
    first = kernel.ok(
        "%%remote --actor repl\nimport os\ncount = start\nworker = os.getpid()\ncount"
    )
    assert first.result == "5"
    second = kernel.ok("%%remote --actor repl\ncount += 1\nprint('count is', count)\ncount")
    assert second.result == "6"
    assert second.text() == "count is 6\n"  # the actor's output, under the cell that ran it
    # What the actor binds stays there, unless --out brings it back.
    assert kernel.ok("'count' in globals()").result == "False"
    kernel.ok("%%remote --actor repl --out count,worker\ncount += 1")
    assert kernel.ok("(count, worker != os.getpid())").result == "(7, True)"

    assert kernel.ok("%remote_actors").text() == "repl\n"
    assert "killed actor 'repl'" in kernel.ok("%remote_actors --kill repl").text()
    assert kernel.ok("%remote_actors").text() == "no %%remote actors\n"
    fresh = kernel.ok("%%remote --actor repl\n'count' in globals()")
    assert fresh.result == "False"  # a new actor: a new, empty namespace
    kernel.ok("%remote_actors --kill repl")

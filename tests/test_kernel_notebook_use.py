"""A notebook user's first cells: ``nc.init(...)`` with resources takes effect in the kernel
that already started a cluster, and errors read as the user's own (their frames, one clear
nbcluster line), over the Jupyter protocol against a real nbcluster kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kernel_helpers import KernelSession, kernelspec, new_kernel  # noqa: F401

pytestmark = pytest.mark.timeout(120)

NewKernel = Callable[..., KernelSession]


def test_init_with_resources_restarts_the_kernels_cluster_and_says_so(
    new_kernel: NewKernel,  # noqa: F811
) -> None:
    kernel = new_kernel()
    kernel.ok("import nbcluster as nc, os")
    first = kernel.ok("print(nc.init()['address'])").text().strip()
    cell = kernel.ok("info = nc.init(num_cpus=1, resources={'bigmem': 1})")
    assert "restarting this process's cluster with num_cpus=1" in cell.text("stderr")
    got = kernel.ok("print(info['address'], sorted(nc.cluster_resources().items()))").text()
    address, resources = got.split(" ", 1)
    assert address != first
    assert "('CPU', 1.0)" in resources and "('bigmem', 1.0)" in resources, resources
    # Work runs on the new cluster, and its output comes home to the cell.
    cell = kernel.ok(
        "@nc.remote(resources={'bigmem': 1})\n"
        "def where():\n"
        "    print('ran with bigmem')\n"
        "    return os.getpid()\n"
        "nc.get(where.remote())"
    )
    kernel.wait_for(lambda: "ran with bigmem" in kernel.cell_of(cell.msg_id).text(), 20)
    # The same call again (a re-run cell) changes nothing; different options say what to do.
    again = kernel.ok("nc.init(num_cpus=1, resources={'bigmem': 1})['address']")
    assert again.result == repr(address) and not again.text("stderr")
    other = kernel.run("nc.init(num_cpus=2)")
    assert other.error is not None and other.error["ename"] == "ValueError"
    assert "call nbcluster.shutdown() first" in other.error["evalue"]


def test_init_in_a_kernel_attached_elsewhere_says_where_resources_come_from(
    new_kernel: NewKernel,  # noqa: F811
    make_cluster: Any,
) -> None:
    nc = make_cluster(num_cpus=2)
    info = nc.init()
    token = Path(info["token_file"]).read_text()
    kernel = new_kernel(NBCLUSTER_ADDRESS=info["address"], NBCLUSTER_TOKEN=token)
    cell = kernel.run("import nbcluster as nc\nnc.init(num_cpus=1)")
    assert cell.error is not None and cell.error["ename"] == "ValueError"
    assert f"attached to the cluster at {info['address']}" in cell.error["evalue"]
    assert "nbcluster start --num-cpus" in cell.error["evalue"]


# ------------------------------------------------------------------------------ errors


@pytest.fixture(scope="module")
def small_store_kernel(
    kernelspec: str,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    from kernel_helpers import start_kernel

    where = tmp_path_factory.mktemp("errors")
    kernel = start_kernel(where, NBCLUSTER_OBJECT_STORE_FRACTION="0.001")  # a 25 MB store
    kernel.ok("import nbcluster as nc, numpy as np, threading")
    yield kernel
    kernel.shutdown()


def short_and_clear(cell: Any, line: str) -> list[str]:
    """The error's traceback: the user's cell, then ``line``, once, and no nbcluster frame."""
    assert cell.reply["status"] == "error"
    text = cell.traceback_text
    lines = text.splitlines()
    assert len(lines) <= 12, text
    assert sum(line in ln for ln in lines) == 1, text
    assert "Cell In[" in text
    assert "nbcluster/" not in text and "concurrent/futures" not in text, text
    return lines


def test_an_unpicklable_argument_is_one_error_at_the_users_line(small_store_kernel: Any) -> None:
    cell = small_store_kernel.run(
        "@nc.remote\ndef f(x):\n    return 1\nnc.get(f.remote(threading.Lock()))"
    )
    lines = short_and_clear(cell, "SerializationError: Could not serialize argument 0 of f()")
    assert any("nc.get(f.remote(threading.Lock()))" in ln for ln in lines)


def test_a_full_store_is_one_error_at_the_users_line(small_store_kernel: Any) -> None:
    cell = small_store_kernel.run("big = np.zeros(64 * 2**20, dtype=np.uint8)\nnc.put(big)")
    short_and_clear(cell, "ObjectStoreFullError: object store cannot hold an object")


def test_a_remote_actor_cell_error_names_the_cell(small_store_kernel: Any) -> None:
    cell = small_store_kernel.run("%%remote --actor repl\nz = 1\nw = z / 0")
    text = cell.traceback_text
    assert "Remote traceback from In[" in text and "CellNamespace" not in text, text
    assert "w = z / 0" in text and "ZeroDivisionError: division by zero" in text


def test_a_cell_ending_in_timeline_to_a_file_prints_nothing(small_store_kernel: Any) -> None:
    kernel = small_store_kernel
    kernel.ok("nc.get([nc.remote(lambda i: i).remote(i) for i in range(5)])")
    cell = kernel.ok("nc.timeline('trace.json')")
    assert cell.result is None and not cell.text()
    assert "'ph': 'X'" in kernel.ok("nc.timeline()[-1]").result  # type: ignore[operator]


def test_the_internals_are_there_when_asked_for(new_kernel: NewKernel) -> None:  # noqa: F811
    kernel = new_kernel(NBCLUSTER_TRACEBACK_INTERNALS="1")
    cell = kernel.run(
        "import nbcluster as nc, threading\n"
        "@nc.remote\ndef f(x):\n    return 1\nnc.get(f.remote(threading.Lock()))"
    )
    assert "nbcluster/runtime/objects/serialization.py" in cell.traceback_text

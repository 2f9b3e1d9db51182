"""In a notebook, the cluster's address and how to attach to it are one cell away:
``nc.init()`` displays them, and ``%cluster status`` adds the nodes and their use.

Driven over the Jupyter protocol against a real nbcluster kernel, as a frontend does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kernel_helpers import KernelSession, kernelspec, start_kernel  # noqa: F401

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def kernel(kernelspec: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelSession]:  # noqa: F811
    session = start_kernel(tmp_path_factory.mktemp("magic"))
    try:
        session.ok("import nbcluster as nc")
        yield session
    finally:
        session.shutdown()


def displayed(cell: Any, mime: str) -> list[str]:
    """Every ``mime`` representation the cell displayed or returned, in order."""
    return [
        m["content"]["data"][mime]
        for m in cell.messages
        if m["msg_type"] in ("display_data", "execute_result") and mime in m["content"]["data"]
    ]


def test_init_displays_the_address_and_how_to_attach(kernel: KernelSession) -> None:
    address = kernel.ok("print(nc.init()['address'])").text().strip()
    cell = kernel.ok("nc.init()")
    (text,) = displayed(cell, "text/plain")
    assert text.startswith(f"nbcluster cluster at {address} (started by this process"), text
    assert f"nbcluster status --address {address}" in text
    assert f"nbcluster.init(address='{address}')" in text
    token_file = kernel.ok("print(nc.init()['token_file'])").text().strip()
    assert "Token file:" in text and token_file in text and Path(token_file).exists()
    (html,) = displayed(cell, "text/html")
    assert f"<code>nbcluster status --address {address}</code>" in html


def test_cluster_status_shows_address_nodes_and_use(kernel: KernelSession) -> None:
    address = kernel.ok("print(nc.init()['address'])").text().strip()
    cell = kernel.ok("%cluster status")
    (info,) = displayed(cell, "text/plain")
    assert f"nbcluster status --address {address}" in info
    out = cell.text()
    assert "Nodes: 1 alive, 0 dead" in out and address in out, out
    assert "Resources (used/total):" in out and "Object store" in out


def test_cluster_help_and_unknown_subcommands(kernel: KernelSession) -> None:
    assert "status" in kernel.ok("%cluster help").text()
    cell = kernel.run("%cluster frobnicate")
    assert cell.reply["status"] == "error"
    # IPython shows a usage error as one line (and the usage), not as a traceback.
    said = cell.text("stderr") + cell.traceback_text
    assert "UsageError: unknown %cluster subcommand 'frobnicate'" in said, said
    assert "Traceback" not in said


def test_other_parts_register_subcommands(kernel: KernelSession) -> None:
    kernel.ok(
        "from nbcluster.kernel.cluster_magic import register\n"
        "@register('shout', 'say it louder')\n"
        "def _shout(argv):\n"
        "    return ' '.join(argv).upper()\n"
    )
    assert kernel.ok("%cluster shout hello there").result == "'HELLO THERE'"
    assert "say it louder" in kernel.ok("%cluster help").text()

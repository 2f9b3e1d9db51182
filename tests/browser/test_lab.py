"""The browser fixtures themselves: a notebook on the nbcluster kernel runs remote work and
shows its output under the cell, as a user sees it in JupyterLab."""

from __future__ import annotations

from browser.lab import Notebook, expect


def test_a_cell_runs_remote_work_and_shows_its_output(notebook: Notebook) -> None:
    index = notebook.start(
        "import nbcluster as nc\n"
        "@nc.remote\n"
        "def square(x):\n"
        "    print('squaring', x)\n"
        "    return x * x\n"
        "sum(nc.get([square.remote(i) for i in range(5)]))"
    )
    notebook.wait_done(index)
    expect(notebook.result(index)).to_have_text("30")
    expect(notebook.outputs(index).first).to_contain_text("squaring")
    second = notebook.run("nc.cluster_resources()['CPU'] > 0")
    expect(notebook.result(second)).to_have_text("True")
    assert notebook.errors == []

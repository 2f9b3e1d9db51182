"""The cluster and object-store widgets in JupyterLab: the node with its resources (also as
what ``nc.init()`` and ``nc.cluster_resources()`` show), and a 100 MB ``put`` listed with
its variable's name, which the Free button then frees."""

from __future__ import annotations

from browser.lab import Notebook, expect


def test_cluster_view_shows_the_node(notebook: Notebook) -> None:
    index = notebook.run("import nbcluster as nc\nnc.widgets.cluster()")
    view = notebook.cell(index).locator(".nbc-cluster")
    expect(view).to_have_attribute("data-nodes", "1", timeout=20_000)
    row = view.locator(".nbc-node-row[data-alive='true']")
    expect(row).to_have_count(1)
    expect(row.locator(".nbc-cpu")).to_contain_text("/2")  # the kernel's two-CPU node
    expect(row.locator(".nbc-mem")).to_contain_text("GB")
    expect(row.locator("polyline.nbc-spark")).to_have_count(1)
    assert notebook.errors == []


def test_init_and_cluster_resources_show_the_cluster_widget(notebook: Notebook) -> None:
    index = notebook.run("import nbcluster as nc\nnc.init()")
    view = notebook.cell(index).locator(".nbc-cluster")
    expect(view).to_have_attribute("data-nodes", "1", timeout=20_000)
    expect(view.locator(".nbc-info-title")).to_contain_text("nbcluster cluster at")
    expect(view.locator(".nbc-info")).to_contain_text("nbcluster status --address")
    expect(view.locator(".nbc-node-row[data-alive='true']")).to_have_count(1)
    resources = notebook.run("nc.cluster_resources()")
    view = notebook.cell(resources).locator(".nbc-cluster")
    expect(view).to_have_attribute("data-nodes", "1", timeout=20_000)
    expect(view.locator(".nbc-info-title")).to_have_count(0)
    still_a_dict = notebook.run("nc.cluster_resources()['CPU'], type(nc.cluster_resources())")
    expect(notebook.result(still_a_dict)).to_contain_text("2.0")
    assert notebook.errors == []


def test_store_lists_a_100_mb_put_by_its_variable_and_frees_it(notebook: Notebook) -> None:
    notebook.run("import numpy as np\nimport nbcluster as nc\nbig = nc.put(np.zeros(12_500_000))")
    index = notebook.run("nc.widgets.store()")
    view = notebook.cell(index).locator(".nbc-store")
    row = view.locator(".nbc-object-row[data-variable='big']")
    expect(row).to_have_count(1, timeout=20_000)
    expect(row.locator(".nbc-size")).to_have_text("100.0 MB")
    expect(row).to_contain_text("local reference")
    row.locator("button.nbc-free").click()
    expect(view.locator(".nbc-message")).to_contain_text("freed big", timeout=20_000)
    expect(view.locator(".nbc-object-row[data-variable='big']")).to_have_count(0, timeout=20_000)
    gone = notebook.run("'big' in globals()")
    expect(notebook.result(gone)).to_have_text("False")
    assert notebook.errors == []

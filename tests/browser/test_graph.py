"""The live ObjectRef graph in JupyterLab: the right task and object nodes, the failed task
drawn in the theme's error colour, labels that neither overlap nor run off, its details (with
the remote error) a click away, and a 10,000-node graph grouped by function on screen."""

from __future__ import annotations

import os
from pathlib import Path

from browser.lab import Notebook, expect

SETUP = """
import nbcluster as nc

@nc.remote
def load(i):
    return list(range(i))

@nc.remote
def merge(a, b):
    return a + b

@nc.remote
def check(x):
    raise ValueError(f"bad merge of {len(x)} items")
"""


#: Labels that run off the drawing or over another node or label (each node is a <g> holding
#: its shape and its label).
LABEL_PROBLEMS = """root => {
  const svg = root.querySelector("svg");
  const W = +svg.getAttribute("width"), H = +svg.getAttribute("height");
  const nodes = [...svg.querySelectorAll("g")].map(g => ({
    id: g.querySelector(".nbc-node").dataset.id, shape: g.querySelector(".nbc-node").getBBox(),
    text: g.querySelector("text").getBBox(), label: g.querySelector("text").textContent }));
  const over = (a, b) => a.x < b.x + b.width && b.x < a.x + a.width
                         && a.y < b.y + b.height && b.y < a.y + a.height;
  const problems = [];
  for (const a of nodes) {
    const t = a.text;
    if (t.x < 0 || t.y < 0 || t.x + t.width > W || t.y + t.height > H)
      problems.push(`${a.label}: cut off`);
    for (const b of nodes)
      if (a !== b && (over(t, b.shape) || over(t, b.text)))
        problems.push(`${a.label}: over ${b.label}`);
  }
  return problems;
}"""


def test_graph_shows_tasks_objects_and_the_failed_one_in_red(notebook: Notebook) -> None:
    notebook.run(SETUP)
    index = notebook.run(
        "g = nc.widgets.graph()\n"
        "a, b = load.remote(3), load.remote(4)\n"
        "merged = merge.remote(a, b)\n"
        "verdict = check.remote(merged)\n"
        "g"
    )
    view = notebook.cell(index).locator(".nbc-graph")
    expect(view).to_have_attribute("data-tasks", "4", timeout=20_000)
    expect(view).to_have_attribute("data-objects", "4")
    expect(view).to_have_attribute("data-failed", "1", timeout=20_000)
    expect(view).to_have_attribute("data-mode", "svg")
    tasks = view.locator(".nbc-node[data-kind='task']")
    expect(tasks).to_have_count(4)
    expect(view.locator(".nbc-node[data-kind='object']")).to_have_count(4)
    failed = view.locator(".nbc-node[data-kind='task'][data-state='failed']")
    expect(failed).to_have_count(1)
    expect(view.locator(".nbc-node[data-kind='task'][data-state='finished']")).to_have_count(3)
    error_color = notebook.page.evaluate(
        "() => { const p = document.createElement('div'); document.body.append(p);"
        " p.style.color = 'var(--jp-error-color1)'; const c = getComputedStyle(p).color;"
        " p.remove(); return c; }"
    )
    assert failed.evaluate("e => getComputedStyle(e).fill") == error_color
    expect(view.locator("text", has_text="merged")).to_have_count(1)  # the variable's name
    expect(view.locator("text", has_text="check")).to_have_count(1)
    assert view.evaluate(LABEL_PROBLEMS) == []
    failed.click()
    expect(view.locator(".nbc-details")).to_contain_text("ValueError: bad merge of 7 items")
    expect(view.locator(".nbc-details")).to_contain_text("check")
    # NBCLUSTER_SCREENSHOTS=docs keeps the README's picture of the graph current.
    shots = os.environ.get("NBCLUSTER_SCREENSHOTS")
    if shots:
        notebook.screenshot(Path(shots) / "widgets-graph.png", ".nbc-graph")
    assert notebook.errors == []


def test_ten_thousand_nodes_are_grouped_by_function(notebook: Notebook) -> None:
    notebook.run(SETUP)
    index = notebook.run(
        "refs = [load.remote(0) for _ in range(5000)]\n"
        "nc.get(refs)\n"
        "nc.widgets.graph(refs)",
        timeout=120,
    )
    view = notebook.cell(index).locator(".nbc-graph")
    expect(view).to_have_attribute("data-tasks", "5000", timeout=30_000)
    expect(view).to_have_attribute("data-mode", "grouped")
    expect(view.locator(".nbc-banner")).to_contain_text("grouped by function")
    expect(view.locator(".nbc-group")).to_have_count(1)
    expect(view.locator("text", has_text="10000")).to_have_count(1)

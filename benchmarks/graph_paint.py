"""How long a 10,000-node ObjectRef graph takes to appear in a real browser.

    python benchmarks/graph_paint.py [--runs 3] [--tasks 5000]

Starts JupyterLab and Debian's headless Chromium (as ``tests/browser`` does), opens a
notebook on the nbcluster kernel, runs ``--tasks`` tasks (each returns an object: twice as
many nodes), then ``--runs`` times runs a cell showing ``nc.widgets.graph(refs)`` and times it
from the cell's start until the graph is painted, and, as the page measures it
(``data-paint-ms``), from the widget's view being made until its first paint. Two shapes:
as a user gets it (past 2,000 nodes: one box per function, grouped by the head) and drawn
node by node on a canvas (``group_at`` above the node count). Medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

SETUP = """
import nbcluster as nc

@nc.remote
def load(i):
    return i

refs = [load.remote(i) for i in range({tasks})]
len(nc.get(refs))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=5000)
    a = ap.parse_args()
    from browser.lab import (
        CHROMIUM,
        CHROMIUM_FLAGS,
        Notebook,
        browser_env,
        notebook_json,
        running_lab,
    )
    from playwright.sync_api import sync_playwright

    from nbcluster.kernel.kernelspec import ensure_installed

    ensure_installed()
    nodes = 2 * a.tasks
    shapes = {"grouped (as shown)": "", "node by node, canvas": f", group_at={nodes + 1}"}
    got: dict[str, dict[str, list[float]]] = {s: {"cell": [], "page": []} for s in shapes}
    with tempfile.TemporaryDirectory() as home, running_lab(Path(home)) as lab, \
            sync_playwright() as p:  # fmt: skip
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_FLAGS, env=browser_env(Path(home)))  # fmt: skip
        (lab.root / "paint.ipynb").write_text(json.dumps(notebook_json()))
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        nb = Notebook(lab, page, "paint.ipynb")
        nb.open()
        nb.run(SETUP.format(tasks=a.tasks), timeout=300)
        for _ in range(a.runs):
            for shape, extra in shapes.items():
                t0 = time.monotonic()
                index = nb.start(f"nc.widgets.graph(refs{extra})")
                view = nb.cell(index).locator(".nbc-graph[data-paint-ms]")
                view.wait_for(timeout=120_000)
                got[shape]["cell"].append(time.monotonic() - t0)
                got[shape]["page"].append(float(view.get_attribute("data-paint-ms") or "nan"))
                tasks = view.get_attribute("data-tasks")
                assert tasks == str(a.tasks), f"{shape}: {tasks} tasks drawn"
                nb.wait_done(index)
        browser.close()
    print(f"first paint of a {nodes:,}-node ObjectRef graph in Chromium, medians of {a.runs}")
    for shape, g in got.items():
        print(f"  {shape:24} {statistics.median(g['cell']):6.2f} s from the cell's start, "
              f"{statistics.median(g['page']) / 1000:6.2f} s in the page")


if __name__ == "__main__":
    main()

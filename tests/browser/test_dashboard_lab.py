"""From JupyterLab to the dashboard, as a notebook user goes: the notebook's link opens its
cluster's page under Jupyter's own URL and login; ``{base_url}nbcluster/`` lists the
notebook's cluster; a task launched by a cell appears live, fails with its traceback, and
shows on the timeline."""

from __future__ import annotations

import os
from pathlib import Path

from browser.lab import REPO_ROOT, Notebook, expect

LINK = """
import nbcluster as nc
from IPython.display import HTML
url = nc.dashboard_url()
HTML(f'<a class="dash-link" href="{url}" target="_blank">dashboard</a>')
"""

FAILING = """
import time
@nc.remote
def parse(path):
    time.sleep(1.5)
    raise FileNotFoundError(f"no such table: {path}")
ref = parse.remote("sales.csv")
try:
    nc.get(ref)
except FileNotFoundError:
    print("failed as expected")
"""


def test_a_notebook_opens_its_clusters_dashboard_under_jupyter(
    notebook: Notebook, shots: Path
) -> None:
    index = notebook.run(LINK)
    link = notebook.cell(index).locator("a.dash-link")
    href = link.get_attribute("href")
    assert href is not None and href.startswith("/nbcluster/clusters/"), href
    cluster_id = href.rstrip("/").rsplit("/", 1)[1]

    # The link opens the cluster's page in a new tab, logged in by Jupyter's own cookie.
    with notebook.page.context.expect_page() as opened:
        link.click()
    dash = opened.value
    errors: list[str] = []
    dash.on("pageerror", lambda e: errors.append(str(e)))
    expect(dash.locator(".feed")).to_have_attribute("data-feed", "live", timeout=30_000)
    expect(dash.locator(f"[data-cluster-id='{cluster_id}']")).to_be_visible()
    expect(dash.locator(".cluster-info [data-notebook]")).to_have_text(notebook.name)

    # A cell's failing task appears in the table as it runs, then fails in place.
    dash.locator("[data-tab=tasks]").click()
    notebook.start(FAILING)
    row = dash.locator("tr[data-task-id]", has=dash.locator("[data-col=name]", has_text="parse"))
    expect(row.locator("[data-col=state] .badge")).to_have_attribute(
        "data-state", "RUNNING", timeout=30_000
    )
    expect(row.locator("[data-col=state] .badge")).to_have_attribute(
        "data-state", "FAILED", timeout=30_000
    )
    row.click()
    expect(dash.locator("pre.traceback")).to_contain_text("no such table: sales.csv")
    expect(dash.locator("pre.traceback")).to_contain_text("FileNotFoundError")
    shots.mkdir(parents=True, exist_ok=True)
    dash.screenshot(path=str(shots / "dashboard-task.png"))
    # NBCLUSTER_SCREENSHOTS=docs keeps the README's picture current.
    docs = os.environ.get("NBCLUSTER_SCREENSHOTS")
    if docs:
        dash.screenshot(path=str(REPO_ROOT / docs / "dashboard-task.png"))

    # The timeline shows it; the cells view names the cell's work.
    dash.locator("[data-tab=timeline]").click()
    expect(dash.locator("svg.timeline rect.slice[data-name='parse']")).to_have_attribute(
        "data-state", "FAILED", timeout=20_000
    )
    dash.locator("[data-tab=cells]").click()
    expect(dash.locator("tr[data-cell] [data-col=failed]").filter(has_text="1")).to_have_count(
        1, timeout=20_000
    )

    # {base_url}nbcluster/ lists this notebook's cluster among the server's.
    dash.goto(f"{notebook.lab.url}/nbcluster/")
    entry = dash.locator(f"tr[data-cluster-id='{cluster_id}']")
    expect(entry.locator("[data-notebook]")).to_have_text(notebook.name, timeout=20_000)
    expect(entry.locator("[data-col=state] .badge")).to_have_attribute("data-state", "running")
    assert errors == []

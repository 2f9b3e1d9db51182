"""Progress that appears by itself under a cell blocked in ``nc.get``, as a user sees it in
JupyterLab: it grows to 100%, leaves a static snapshot that survives a reload, and its Cancel
button stops the cell's tasks while the cell is still blocked."""

from __future__ import annotations

from browser.lab import Notebook, expect

WORK = """
import time
import nbcluster as nc

@nc.remote
def work(i, dt):
    time.sleep(dt)
    return i
"""


def test_progress_appears_under_the_waiting_cell_and_reaches_100(notebook: Notebook) -> None:
    notebook.run(WORK)
    index = notebook.start("refs = [work.remote(i, 0.15) for i in range(24)]\nsum(nc.get(refs))")
    live = notebook.cell(index).locator(".nbc-progress")
    expect(live).to_be_visible(timeout=20_000)  # the get blocked over a second
    expect(live.locator(".nbc-row[data-name='work']")).to_have_count(1)
    notebook.wait_done(index)
    expect(notebook.result(index)).to_have_text(str(sum(range(24))))
    static = notebook.cell(index).locator(".nbcluster-progress-static")
    expect(static).to_contain_text("24/24 tasks")
    expect(static).to_contain_text("work")
    assert notebook.cell(index).locator(".nbc-progress").count() == 0  # the live one is gone
    # A short get shows nothing.
    quick = notebook.run("nc.get([work.remote(i, 0) for i in range(3)])")
    assert notebook.cell(quick).locator(".nbcluster-progress-static, .nbc-progress").count() == 0
    notebook.save()
    notebook.reload()
    expect(notebook.cell(index).locator(".nbcluster-progress-static")).to_contain_text(
        "24/24 tasks"
    )
    assert notebook.errors == []


def test_cancel_stops_the_tasks_of_a_blocked_cell(notebook: Notebook) -> None:
    notebook.run(WORK)
    index = notebook.start("refs = [work.remote(i, 60) for i in range(4)]\nnc.get(refs)")
    live = notebook.cell(index).locator(".nbc-progress")
    expect(live).to_be_visible(timeout=20_000)
    expect(live.locator(".nbc-row[data-name='work']")).to_have_count(1)
    live.locator("button.nbc-cancel").click()
    notebook.wait_done(index, timeout=20)  # far less than the tasks' 60 s
    expect(notebook.outputs(index).last).to_contain_text("TaskCancelledError")
    static = notebook.cell(index).locator(".nbcluster-progress-static")
    expect(static).to_contain_text("4/4 tasks")  # ended: cancelled
    left = notebook.run(
        "from nbcluster.util import state\n"
        "sorted(t.state for t in state.list_tasks(filters=[('name', '=', 'work')]))"
    )
    expect(notebook.result(left)).not_to_contain_text("RUNNING")


def test_tasks_own_progress_shows_as_sub_bars_and_stays_in_the_snapshot(
    notebook: Notebook,
) -> None:
    notebook.run(WORK + "from nbcluster.util.progress import tqdm\n"
                 "@nc.remote\n"
                 "def epochs(n):\n"
                 "    for _ in tqdm(range(n), desc='epochs'):\n"
                 "        time.sleep(0.2)\n"
                 "    return n\n")  # fmt: skip
    index = notebook.start("nc.get([epochs.remote(12), epochs.remote(12)])")
    live = notebook.cell(index).locator(".nbc-progress")
    expect(live).to_be_visible(timeout=20_000)
    expect(live.locator(".nbc-subbar[data-desc='epochs']")).to_have_count(2, timeout=20_000)
    notebook.wait_done(index)
    static = notebook.cell(index).locator(".nbcluster-progress-static")
    expect(static).to_contain_text("epochs: epochs")
    expect(static.locator(".nbcluster-subbars")).to_contain_text("12/12")
    assert notebook.errors == []

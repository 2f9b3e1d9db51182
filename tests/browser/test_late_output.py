"""Output that remote work prints after its cell finished, as JupyterLab shows it.

The kernel publishes it with the cell's request as parent; JupyterLab keeps an executed
cell's request open (``requestExecute(..., disposeOnDone=false)``) until the cell runs again
or is cleared, so it lands under that cell, even while another cell runs."""

from __future__ import annotations

from browser.lab import Notebook, expect

SETUP = """
import time
import nbcluster as nc

@nc.remote
def late(dt, text):
    time.sleep(dt)
    print(text)
    return dt
"""


def test_output_printed_after_the_cell_finished_appears_under_that_cell(
    notebook: Notebook,
) -> None:
    notebook.run(SETUP)
    index = notebook.run("ref = late.remote(3, 'late hello')\n'submitted'")
    expect(notebook.result(index)).to_have_text("'submitted'")
    assert "late hello" not in notebook.output_text(index)  # the cell ended before it
    other = notebook.start("time.sleep(6)\n'busy'")  # another cell runs meanwhile
    notebook.wait_done(other, timeout=30)
    expect(notebook.cell(index).locator(".jp-OutputArea")).to_contain_text("late hello",
                                                                            timeout=15_000)
    assert "late hello" not in notebook.output_text(other)
    assert notebook.errors == []

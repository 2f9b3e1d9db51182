"""The execution count of the cell that is running now.

IPython changed when ``shell.execution_count`` moves: up to 8.x it is incremented after the
cell ran, from 9.x before it runs, so reading it inside a cell gives this cell's number on
old versions and the next one on new ones. The display hook's ``prompt_count`` is what
IPython itself writes as ``Out[n]``, and it is this cell's number on every version.
"""

from __future__ import annotations

from typing import Any


def cell_number(shell: Any) -> int:
    """This cell's ``In[n]`` (the last cell's, between cells)."""
    return int(shell.displayhook.prompt_count)

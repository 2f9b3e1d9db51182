"""Every guide in notebooks/ runs, headless, on the nbcluster kernel, without a cell erroring
(a cell meant to fail says so with the ``raises-exception`` tag)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_helpers import REPO_ROOT, kernel_env, kernelspec  # noqa: F401

from nbcluster.kernel.run_notebook import run_notebook

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.timeout(180)


def test_there_is_a_quick_start() -> None:
    assert REPO_ROOT / "notebooks" / "quickstart.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_nbcluster_kernel(
    notebook: Path,
    kernelspec: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    executed = run_notebook(notebook, tmp_path / notebook.name, timeout=120, env=kernel_env())
    assert executed.exists()

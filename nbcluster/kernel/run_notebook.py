"""Execute a notebook headless with the nbcluster kernel and write the executed copy.

This is the project's main job (``python -m nbcluster.kernel run-notebook``) and what the
test suite does with every guide in ``notebooks/``: a cell that errors fails the run.
"""

from __future__ import annotations

from pathlib import Path

from nbcluster.kernel.kernelspec import KERNEL_NAME, ensure_installed


def default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}.executed.ipynb")


def run_notebook(
    path: str | Path,
    output: str | Path | None = None,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> Path:
    """Run every cell of ``path`` in a fresh nbcluster kernel, in the notebook's directory.

    The executed notebook is written to ``output`` even when a cell fails (then the error is
    re-raised), so what went wrong can be read in it. ``env`` is the kernel's environment
    (default: this process's).
    """
    import nbformat
    from nbclient import NotebookClient

    ensure_installed()
    path = Path(path)
    out = Path(output) if output is not None else default_output(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    try:
        if env is None:
            client.execute()
        else:
            client.execute(env=env)
    finally:
        nbformat.write(nb, out)
    return out

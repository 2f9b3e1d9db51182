"""The ``nbcluster`` kernelspec: where it lives in the package and how to install it.

A wheel install puts the spec in ``<prefix>/share/jupyter/kernels/nbcluster`` through
hatchling's shared-data, which is all JupyterLab, Notebook 7 and ``jupyter kernelspec list``
need. Editable installs may skip shared data, so the same directory can also be installed by
``python -m nbcluster.kernel install``. There is one copy of the spec, in ``spec/``; its argv
starts with plain ``python``, which jupyter_client replaces with the interpreter of the
server that launches it.
"""

from __future__ import annotations

import sys
from pathlib import Path

KERNEL_NAME = "nbcluster"
DISPLAY_NAME = "Python 3 (nbcluster)"
SPEC_DIR = Path(__file__).resolve().parent / "spec"


def install(*, user: bool = False, prefix: str | None = None) -> str:
    """Install the kernelspec (system-wide by default); return the directory it went to.

    ``user`` installs into the user's Jupyter data dir, ``prefix`` into
    ``<prefix>/share/jupyter/kernels`` (``sys.prefix`` for a virtual environment).
    """
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().install_kernel_spec(
        str(SPEC_DIR), KERNEL_NAME, user=user, prefix=prefix, replace=True
    )


def installed_spec_dir() -> str | None:
    """Where Jupyter finds the ``nbcluster`` kernelspec, or None if it does not."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KernelSpecManager().find_kernel_specs().get(KERNEL_NAME)


def ensure_installed() -> str:
    """Install into ``sys.prefix`` unless Jupyter already finds an ``nbcluster`` spec."""
    found = installed_spec_dir()
    if found is not None:
        return found
    return install(prefix=sys.prefix)

"""The ``nbcluster`` kernelspec: where it lives in the package and how to install it.

A wheel install puts the spec in ``<prefix>/share/jupyter/kernels/nbcluster`` through
hatchling's shared-data, which is all JupyterLab, Notebook 7 and ``jupyter kernelspec list``
need. Editable installs may skip shared data, so the same directory can also be installed by
``python -m nbcluster.kernel install``. There is one copy of the spec, in ``spec/``. Its argv
starts with plain ``python``, which jupyter_client replaces with the interpreter of the
server that launches it: right for the wheel's copy, which only a Jupyter in the same
environment finds. ``install`` writes this interpreter's absolute path instead (as
ipykernel's ``install`` does), because a spec installed with ``--user`` is found by a
JupyterLab in any environment, which would otherwise run its own Python, without nbcluster.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
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

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / KERNEL_NAME
        shutil.copytree(SPEC_DIR, spec)
        data = json.loads((spec / "kernel.json").read_text())
        data["argv"][0] = sys.executable
        (spec / "kernel.json").write_text(json.dumps(data, indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(
            str(spec), KERNEL_NAME, user=user, prefix=prefix, replace=True
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

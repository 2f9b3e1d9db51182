"""The installed kernelspec runs nbcluster's own interpreter, wherever Jupyter lives.

A common setup: JupyterLab in one environment, nbcluster in another, joined by
``python -m nbcluster.kernel install --user``. Jupyter then launches the kernel from *its*
environment; a spec that said plain ``python`` would run Jupyter's interpreter, which has no
nbcluster. Here the "Jupyter environment" is a second virtual environment that has
jupyter_client and its dependencies but not nbcluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from kernel_helpers import kernel_env

pytestmark = pytest.mark.timeout(120)

#: Jupyter's side: launch the "nbcluster" kernel by name, as JupyterLab does, run one cell.
LAUNCH = r"""
import json, sys
from jupyter_client.manager import start_new_kernel
km, kc = start_new_kernel(kernel_name="nbcluster", startup_timeout=60)
out = []
try:
    kc.execute_interactive(
        "import sys, nbcluster; print(sys.executable, nbcluster.is_initialized())",
        timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")),
    )
finally:
    kc.stop_channels()
    km.shutdown_kernel()
print(json.dumps({"launcher": sys.executable, "kernel_said": "".join(out)}))
"""


def jupyter_elsewhere(root: Path) -> tuple[Path, dict[str, str]]:
    """A second environment's interpreter that imports jupyter_client but not nbcluster."""
    venv.EnvBuilder(with_pip=False).create(root / "env")
    site = root / "site"  # our site-packages, minus nbcluster (editable or not)
    site.mkdir()
    ours = Path(next(p for p in sys.path if p.endswith("site-packages")))
    for entry in ours.iterdir():
        if not entry.name.startswith(("nbcluster", "__editable__")) and entry.suffix != ".pth":
            (site / entry.name).symlink_to(entry)
    env = kernel_env(PYTHONPATH=str(site), JUPYTER_PATH=str(root / "prefix/share/jupyter"))
    env.pop("JUPYTER_DATA_DIR", None)
    return root / "env" / "bin" / "python", env


def test_a_jupyter_in_another_environment_runs_the_installed_kernel(tmp_path: Path) -> None:
    python, env = jupyter_elsewhere(tmp_path)
    bare = subprocess.run(
        [str(python), "-c", "import jupyter_client; import nbcluster"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "No module named 'nbcluster'" in bare.stderr, bare  # as the setup says
    installed = subprocess.run(
        [sys.executable, "-m", "nbcluster.kernel", "install", "--prefix", str(tmp_path / "prefix")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    spec = json.loads((tmp_path / "prefix/share/jupyter/kernels/nbcluster/kernel.json").read_text())
    assert spec["argv"][0] == sys.executable and Path(spec["argv"][0]).is_absolute()
    launched = subprocess.run(
        [str(python), "-c", LAUNCH], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=100, check=False,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    report = json.loads(launched.stdout.strip().splitlines()[-1])
    assert report["launcher"] != sys.executable
    assert report["kernel_said"].split() == [sys.executable, "True"], report


def test_the_kernel_module_says_what_it_does() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nbcluster.kernel", "--help"], capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for command in ("install [--user", "run-notebook NOTEBOOK", "-f CONNECTION_FILE"):
        assert command in done.stdout, done.stdout
    sub = subprocess.run(
        [sys.executable, "-m", "nbcluster.kernel", "run-notebook", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert sub.returncode == 0 and "--timeout" in sub.stdout, sub.stderr

"""Every cluster of this user on this machine is recorded where only this user can read it,
found by the CLI (``nbcluster status`` with no address), and forgotten when it ends.

Clusters here are started the ways users start them: a script's ``nbcluster.init()``, a
notebook kernel, ``nbcluster start``. Each test has its own session directory
(``NBCLUSTER_TEMP_DIR``), so it sees only the clusters it started.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from cluster_helpers import REPO_ROOT, CliCluster, poll
from conftest import session_files
from kernel_helpers import KernelSession, kernelspec, new_kernel  # noqa: F401

from nbcluster.exceptions import UnsafeSessionDirectoryError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.node import sessions

pytestmark = pytest.mark.timeout(120)
NewKernel = Callable[..., KernelSession]

#: A script that starts its own cluster, says where, and runs until its stdin closes.
SCRIPT = r"""
import sys, nbcluster as nc
info = nc.init(num_cpus=1)
print("READY", info["address"], flush=True)
sys.stdin.readline()
"""


class Script:
    """A driver script with a cluster of its own, as ``python train.py`` would be."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, cwd=str(REPO_ROOT), text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the script prints it, or exits (EOF)
        if not line.startswith("READY "):
            self.proc.kill()
            raise AssertionError(f"the script did not start: {line}{self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.address = line.split()[1]

    def end(self) -> None:
        """Let the script finish normally."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        self.proc.wait(30)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[CliCluster]:
    """A session directory of the test's own, and the environment and CLI that use it."""
    cluster = CliCluster(tmp_path)
    yield cluster
    cluster.close()


@pytest.fixture
def scripts(user: CliCluster) -> Iterator[list[Script]]:
    started: list[Script] = []
    yield started
    for script in started:
        script.kill()


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    """An expected failure: exit status 1, one line on stderr naming the command, no
    traceback, nothing on stdout."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"nbcluster {command}: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ----------------------------------------------------------------------- the user directory


def test_the_user_directory_is_private_and_checked_on_every_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "nbcluster"
    monkeypatch.setattr(CONFIG, "temp_dir", str(home))
    assert sessions.user_dir() == str(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    home.chmod(0o755)  # opened up after it was made: refused, and named
    with pytest.raises(UnsafeSessionDirectoryError, match=f"{home}.*0755"):
        sessions.live_clusters()
    home.rmdir()
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    home.symlink_to(target)  # a link could lead anywhere: refused
    with pytest.raises(UnsafeSessionDirectoryError, match=f"{home}.*symbolic link"):
        sessions.user_dir()
    home.unlink()
    home.write_text("")
    with pytest.raises(UnsafeSessionDirectoryError, match="not a directory"):
        sessions.user_dir()


def test_the_default_is_xdg_runtime_dir_when_private_else_a_per_uid_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CONFIG, "temp_dir", "")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert sessions.user_dir() == str(runtime / "nbcluster")
    runtime.chmod(0o777)  # not private: not used
    assert sessions.user_dir() == str(tmp_path / f"nbcluster-{os.getuid()}")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert sessions.default_user_dir() == str(tmp_path / f"nbcluster-{os.getuid()}")


# -------------------------------------------------------------- finding clusters: scripts


def test_the_cli_finds_a_scripts_cluster_and_forgets_it_when_the_script_dies(
    user: CliCluster, scripts: list[Script]
) -> None:
    script = Script(user.env)
    scripts.append(script)
    status = user.cli("status")
    assert status.returncode == 0, status.stderr
    assert "Nodes: 1 alive, 0 dead" in status.stdout
    listed = user.cli("clusters")
    assert listed.stdout.startswith(script.address), listed.stdout
    assert f"script pid {script.proc.pid}" in listed.stdout
    (record,) = json.loads(user.cli("clusters", "--format", "json").stdout)
    assert record["role"] == "head" and record["started_by"] == "script"
    assert record["driver_pid"] == script.proc.pid
    assert stat.S_IMODE(Path(record["token_file"]).stat().st_mode) == 0o600
    auto = subprocess.run(
        [sys.executable, "-c", "import nbcluster as nc; print(nc.init('auto')['address'])"],
        env=user.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert auto.stdout.strip() == script.address, auto.stderr
    # Killed outright, the script takes its cluster along, and the cluster its files.
    script.kill()
    poll(lambda: not session_files(user.temp_dir), 15, lambda: session_files(user.temp_dir))
    line = one_line_error(user.cli("status"), "status")
    assert "no running cluster found" in line


def test_with_two_clusters_the_cli_lists_them_and_asks_which(
    user: CliCluster, scripts: list[Script]
) -> None:
    scripts += [Script(user.env), Script(user.env)]
    ambiguous = user.cli("status")
    assert ambiguous.returncode == 1
    assert "2 clusters are running" in ambiguous.stderr and "--address" in ambiguous.stderr
    for script in scripts:
        assert f"{script.address} " in ambiguous.stderr
        assert f"script pid {script.proc.pid}" in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr
    # Named by its address, each is found, token and all.
    for script in scripts:
        chosen = user.cli("list", "nodes", "--address", script.address)
        assert chosen.returncode == 0, chosen.stderr
        assert script.address in chosen.stdout
    # A script that ends normally removes its cluster's files.
    scripts[0].end()
    assert scripts[0].proc.returncode == 0
    assert len(sessions_of(user)) == 1
    assert user.cli("status").returncode == 0


def sessions_of(user: CliCluster) -> list[str]:
    return [p for p in session_files(user.temp_dir) if p.startswith("session_")]


# ------------------------------------------------------------- finding clusters: notebooks


def test_the_cli_finds_a_notebook_kernels_cluster_with_its_notebook(
    user: CliCluster,
    new_kernel: NewKernel,  # noqa: F811
) -> None:
    kernel_id = str(uuid.uuid4())
    kernel = new_kernel(
        kernel_id, NBCLUSTER_TEMP_DIR=str(user.temp_dir), JPY_SESSION_NAME="work/analysis.ipynb"
    )
    address = kernel.ok("import nbcluster as nc\nprint(nc.init()['address'])").text().strip()
    (record,) = json.loads(user.cli("clusters", "--format", "json").stdout)
    assert record["address"] == address
    assert record["started_by"] == "kernel" and record["kernel_id"] == kernel_id
    assert record["notebook"] == "work/analysis.ipynb"
    assert record["driver_pid"] == kernel.pid
    listed = user.cli("clusters").stdout
    assert f"notebook work/analysis.ipynb (kernel {kernel_id[:8]})" in listed
    status = user.cli("status")
    assert "Nodes: 1 alive" in status.stdout, status.stderr
    # A kernel killed outright: its head follows, and leaves nothing.
    os.kill(kernel.pid, signal.SIGKILL)
    poll(lambda: not session_files(user.temp_dir), 20, lambda: session_files(user.temp_dir))


def test_a_kernel_attached_to_a_cluster_records_it_for_the_tools(
    user: CliCluster,
    new_kernel: NewKernel,  # noqa: F811
) -> None:
    head = user.start_head("--num-cpus", "1")
    kernel = new_kernel(
        str(uuid.uuid4()), NBCLUSTER_TEMP_DIR=str(user.temp_dir),
        NBCLUSTER_ADDRESS=head.address, NBCLUSTER_TOKEN=user.token,
        JPY_SESSION_NAME="shared.ipynb",
    )  # fmt: skip
    kernel.ok("import nbcluster as nc\nnc.init()")
    (cluster,) = json.loads(user.cli("clusters", "--format", "json").stdout)
    assert cluster["address"] == head.address and cluster["started_by"] == "cli"
    (attached,) = cluster["attached"]
    assert attached["role"] == "kernel" and attached["notebook"] == "shared.ipynb"
    assert Path(attached["token_file"]).read_text() == user.token
    assert "used by shared.ipynb" in user.cli("clusters").stdout
    kernel.shutdown()
    poll(lambda: len(sessions_of(user)) == 1, 20, lambda: session_files(user.temp_dir))


def test_a_crashed_clusters_files_go_at_the_next_start(user: CliCluster) -> None:
    first = user.cli("start", "--head", "--num-cpus", "1")
    assert first.returncode == 0, first.stderr
    (record,) = [json.loads(p.read_text()) for p in (user.temp_dir / "clusters").glob("*")]
    os.kill(record["pid"], signal.SIGKILL)  # no chance to clean up after itself
    poll(lambda: not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status()
         == psutil.STATUS_ZOMBIE, 10, "the head did not die")  # fmt: skip
    assert Path(record["session_dir"], "token").exists()  # left behind, for now
    second = user.cli("start", "--head", "--num-cpus", "1")
    assert second.returncode == 0, second.stderr
    assert not Path(record["session_dir"]).exists()
    assert not (user.temp_dir / "clusters" / f"{record['pid']}.json").exists()
    assert len(sessions_of(user)) == 1
    assert user.cli("stop").returncode == 0
    poll(lambda: not session_files(user.temp_dir), 10, lambda: session_files(user.temp_dir))

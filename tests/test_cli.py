"""The ``nbcluster`` command as a user meets it, through real subprocesses: expected failures
are one line and an exit status (``--debug`` shows the traceback), and ``stop`` stops what
this user started with ``start``, says what it stopped, and leaves quiet logs behind.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import CliCluster, poll, records
from test_sessions import Script, one_line_error

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def user(tmp_path: Path) -> Iterator[CliCluster]:
    cluster = CliCluster(tmp_path)
    yield cluster
    cluster.cli("stop")
    cluster.close()


def started_head(user: CliCluster, *args: str) -> str:
    done = user.cli("start", "--head", "--num-cpus", "1", *args)
    assert done.returncode == 0, done.stderr
    found = re.search(r"head node started at (\S+)", done.stdout)
    assert found, done.stdout
    return found.group(1)


# ------------------------------------------------------------------ expected failures


def test_no_cluster_is_one_line_and_debug_shows_the_traceback(user: CliCluster) -> None:
    for command in ("status", "memory", "summary", "timeline"):
        line = one_line_error(user.cli(command), command)
        assert "no running cluster found on this machine" in line
        assert "nbcluster start --head" in line  # what to do about it
    assert "no running cluster" in one_line_error(user.cli("list", "tasks"), "list")
    debug = user.cli("status", "--debug")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ClusterNotFoundError" in debug.stderr
    assert user.cli("--debug", "status").returncode != 0  # before the subcommand too


def test_a_wrong_token_is_one_line(user: CliCluster) -> None:
    address = started_head(user)
    line = one_line_error(
        user.cli("status", "--address", address, NBCLUSTER_TOKEN="not-the-token"), "status"
    )
    assert "authentication failed" in line.lower(), line


def test_a_port_in_use_is_one_line(user: CliCluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(user.cli("start", "--head", "--port", str(port)), "start")
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line, line
    assert not records(user.temp_dir)  # nothing half-started is left recorded


def test_a_cluster_whose_token_file_is_gone_is_one_line(user: CliCluster) -> None:
    started_head(user)
    (record,) = records(user.temp_dir)
    Path(record["token_file"]).unlink()
    line = one_line_error(user.cli("status"), "status")
    assert record["address"] in line and "token file" in line and "nbcluster stop" in line


def test_bad_input_is_one_line(user: CliCluster) -> None:
    line = one_line_error(user.cli("start", "--head", "--resources", "{bigmem: 1}"), "start")
    assert "--resources must be JSON" in line
    line = one_line_error(user.cli("start", "--address", "127.0.0.1:1"), "start")
    assert "needs its token" in line and "--token-file" in line


# ------------------------------------------------------------------------------------ stop


def test_stop_stops_what_start_started_and_says_so(user: CliCluster, tmp_path: Path) -> None:
    head_log, node_log = tmp_path / "head.log", tmp_path / "node.log"
    address = started_head(user, "--log-file", str(head_log))
    joined = user.cli("start", "--address", address, "--num-cpus", "1", "--log-file",
                      str(node_log), NBCLUSTER_TOKEN=Path(records(user.temp_dir)[0][
                          "token_file"]).read_text())  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    script = Script(user.env)  # a script's cluster: not `start`'s, so not `stop`'s
    try:
        (head,) = [r for r in records(user.temp_dir, "cli") if r["role"] == "head"]
        (node,) = [r for r in records(user.temp_dir, "cli") if r["role"] == "node"]
        stop = user.cli("stop")
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.splitlines() == [
            f"stopped node at {node['node_address']} (pid {node['pid']})",
            f"stopped head node at {address} (pid {head['pid']})",
        ]
        # The script's cluster runs on, and is now the only one.
        status = user.cli("status")
        assert status.returncode == 0 and script.address in status.stdout, status.stderr
        assert [r["started_by"] for r in records(user.temp_dir)] == ["script"]
        # The logs the user asked for stay, and say the stop was deliberate, without errors.
        for log in (head_log, node_log):
            poll(lambda log=log: "stopped" in log.read_text(), 10, log.read_text)
            text = log.read_text()
            assert "stopping: SIGTERM" in text, text
            assert "ERROR" not in text and "Traceback" not in text, text
        again = user.cli("stop")
        assert "no nodes started with `nbcluster start` are running" in again.stdout
    finally:
        script.kill()


# ------------------------------------------------------------------- infeasible demand

#: A driver asking for 9 CPUs of a cluster of a 2-CPU and an 8-CPU node: 10 in all, but
#: no node has 9. It reports the warning it got, and waits.
DEMANDING = r"""
import sys, time, warnings
import nbcluster as nc
nc.init()  # NBCLUSTER_ADDRESS and NBCLUSTER_TOKEN
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    ref = nc.remote(lambda: 1).options(num_cpus=9).remote()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
print("WARNED", seen[0].message if seen else None, flush=True)
sys.stdin.readline()
"""


def test_demand_no_node_can_fit_is_warned_and_shown_in_status(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cluster_helpers import REPO_ROOT

    with CliCluster(tmp_path) as cluster:
        cluster.start_head("--num-cpus", "2")
        cluster.join("big", "--num-cpus", "8")
        driver = subprocess.Popen(
            [sys.executable, "-c", DEMANDING], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=cluster.driver_env(), cwd=str(REPO_ROOT),
        )  # fmt: skip
        try:
            assert driver.stdout is not None
            warned = driver.stdout.readline()
            assert warned.startswith("WARNED A task requires {'CPU': 9.0}"), (
                warned + driver.stderr.read()  # type: ignore[union-attr]
            )
            assert "no node of the cluster has that much" in warned
            assert "CPU: 2; CPU: 8" in warned or "CPU: 8; CPU: 2" in warned, warned

            def shown() -> str:
                out = cluster.cli("status", "--address", cluster.head.address).stdout
                return out if "infeasible" in out else ""

            out = poll(shown, 20, "status never showed the infeasible demand")
            line = next(ln for ln in out.splitlines() if "infeasible" in ln)
            assert line.strip().startswith("{'CPU': 9}: 1+ pending"), line
            assert "the largest offers CPU: 8" in line
        finally:
            driver.kill()
            driver.wait(10)

"""Joining a cluster: every way a join goes wrong is refused with the reason, in time.

A node the head cannot dial back, a head that advertises an address the node cannot reach,
a head nobody answers at, and a node of another nbcluster version each stop ``nbcluster
start`` with a message that names the address (or versions) at fault, while the cluster
keeps running. A node holds a lease on the head: when the head freezes, the node leaves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from cluster_helpers import _STARTED, CliCluster, CliNode, attach, gone, poll
from netns_pair import Pair, netns_pair

import nbcluster as nc
from nbcluster.exceptions import AuthenticationError
from nbcluster.runtime.api.session import current_core

SUBNET = "10.231.50"
#: A refused join ends well within this (the handshake timeout is 5 s).
REFUSED_WITHIN_S = 15.0


def refused(node: CliNode, timeout: float = REFUSED_WITHIN_S) -> str:
    """Wait for a node's CLI to give up; its output."""
    t0 = time.monotonic()
    try:
        code = node.cli.wait(timeout)
    except subprocess.TimeoutExpired:
        message = f"{node.name} still runs after {timeout} s:\n{node.output()}"
        raise AssertionError(message) from None
    assert code != 0, node.output()
    assert time.monotonic() - t0 < timeout
    return node.output()


def alive_nodes(cluster: CliCluster, prefix: list[str]) -> str:
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "nbcluster", "status", "--address", cluster.head.address],
        capture_output=True, text=True, timeout=60, check=False,
        env={**cluster.env, "NBCLUSTER_TOKEN": cluster.token},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with netns_pair("nbjn", SUBNET) as p:
        yield p


@pytest.fixture
def head_in_ns1(pair: Pair, tmp_path: Path) -> Iterator[CliCluster]:
    cluster = CliCluster(tmp_path)
    try:
        cluster.start_head("--host", "0.0.0.0", "--num-cpus", "1",
                           prefix=Pair.exec_in(pair.ns1))  # fmt: skip
        yield cluster
    finally:
        cluster.close()


def test_a_node_the_head_cannot_reach_is_refused_with_its_address(
    pair: Pair, head_in_ns1: CliCluster
) -> None:
    assert head_in_ns1.head.host == pair.ip1  # a wildcard head advertises its real address
    node = head_in_ns1.launch(
        "loopback-node", ["--address", head_in_ns1.head.address, "--host", "127.0.0.1"],
        prefix=Pair.exec_in(pair.ns2),
    )  # fmt: skip
    out = refused(node)
    assert "the head cannot reach the new node at 127.0.0.1:" in out, out
    assert "--node-ip" in out, out
    assert "Nodes: 1 alive, 0 dead" in alive_nodes(head_in_ns1, Pair.exec_in(pair.ns1))


def test_a_head_advertising_an_unreachable_address_is_named(pair: Pair, tmp_path: Path) -> None:
    # machine 1 has a second address that machine 2 has no route to (another network)
    other = "10.231.59.1"
    subprocess.run(["ip", "-n", pair.ns1, "addr", "add", f"{other}/32", "dev", "lo"], check=True)
    try:
        with CliCluster(tmp_path) as cluster:
            # listens everywhere, but tells others to use the address they cannot reach
            cluster.start_head("--host", "0.0.0.0", "--node-ip", other, "--num-cpus", "1",
                               prefix=Pair.exec_in(pair.ns1))  # fmt: skip
            port = cluster.head.port
            node = cluster.launch(
                "node", ["--address", f"{pair.ip1}:{port}"], prefix=Pair.exec_in(pair.ns2)
            )
            out = refused(node)
            assert "this node cannot reach node" in out and f"at {other}:{port} (" in out, out
            assert f"the head at {pair.ip1}:{port} gives for them" in out, out
    finally:
        subprocess.run(["ip", "-n", pair.ns1, "addr", "del", f"{other}/32", "dev", "lo"],
                       check=False)  # fmt: skip


def test_a_head_that_does_not_answer_is_named(pair: Pair, tmp_path: Path) -> None:
    with CliCluster(tmp_path) as cluster:
        silent = f"{pair.ip1}:6390"  # machine 1 exists, but nothing listens there
        node = cluster.launch("node", ["--address", silent], prefix=Pair.exec_in(pair.ns2))
        out = refused(node)
        assert f"cannot reach the head at {silent}" in out, out
        assert f"this node ({pair.ip2})" in out, out  # where it tried from


def joined(node: CliNode) -> str:
    """Wait for a launched node to say it joined; its address."""

    def started() -> str | None:
        if node.cli.poll() is not None:
            raise AssertionError(f"{node.name} exited:\n{node.output()}")
        found = _STARTED.search(node.output())
        return found.group(1) if found else None

    return str(poll(started, 30, node.output))


def test_a_join_token_joins_nodes_and_nothing_else(tmp_path: Path) -> None:
    with CliCluster(tmp_path) as cluster:
        cluster.start_head("--num-cpus", "1")
        attach(cluster.head.address, cluster.token)
        core = current_core()
        token = core.head_call("create_join_token", "g1", 1, timeout=10)

        nc.shutdown()  # a driver holding a stolen join token is refused, with the reason
        with pytest.raises(AuthenticationError, match=r"node join token .group g1.*a driver needs"):
            nc.init(address=cluster.head.address, token=token)
        attach(cluster.head.address, cluster.token)
        assert len([n for n in nc.nodes() if n["Alive"]]) == 1  # the cluster carries on

        first = cluster.launch("first", ["--address", cluster.head.address], token=token)
        assert joined(first)
        second = cluster.launch("second", ["--address", cluster.head.address], token=token)
        assert "already used by 1 node(s)" in refused(second)

        core = current_core()
        late = core.head_call("create_join_token", "g2", 5, timeout=10)
        assert core.head_call("revoke_join_token", "g2", timeout=10)
        third = cluster.launch("third", ["--address", cluster.head.address], token=late)
        assert "the join token of node group g2 was revoked" in refused(third)

        wrong = cluster.launch("wrong", ["--address", cluster.head.address], token="0" * 64)
        assert "refused this node's token" in refused(wrong)
        assert len([n for n in nc.nodes() if n["Alive"]]) == 2
        nc.shutdown()


VERSION_SHIM = "import nbcluster._version as v\nv.__version__ = '0.0.1-other'\n"


def test_a_node_of_another_version_is_refused_with_both_versions(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(VERSION_SHIM)
    import nbcluster

    with CliCluster(tmp_path) as cluster:
        cluster.start_head("--num-cpus", "1")
        cluster.env["PYTHONPATH"] = f"{shim}{os.pathsep}{cluster.env['PYTHONPATH']}"
        node = cluster.launch("old-node", ["--address", cluster.head.address])
        out = refused(node)
        assert "version mismatch" in out, out
        assert f"the head runs nbcluster {nbcluster.__version__} on Python" in out, out
        assert "this node runs nbcluster 0.0.1-other on Python" in out, out


def test_a_node_leaves_when_the_head_stops_answering(tmp_path: Path) -> None:
    with CliCluster(tmp_path, NBCLUSTER_HEAD_LEASE_S="2") as cluster:
        head = cluster.start_head("--num-cpus", "1")
        node = cluster.join("node", "--num-cpus", "1")
        os.kill(head.node_pid, signal.SIGSTOP)  # the head's machine froze: no close, no reply
        try:
            t0 = time.monotonic()
            proc = psutil.Process(node.node_pid)
            poll(lambda: gone(proc), 15, node.output)
            assert time.monotonic() - t0 < 10
            assert "has not answered for" in node.output()
        finally:
            os.kill(head.node_pid, signal.SIGCONT)

"""Real multi-node clusters for the tests, started the way a user starts them: with the CLI.

``CliCluster`` runs ``python -m nbcluster start --head --block`` and ``start --address ...
--block`` as subprocesses, each with its own log file, all under one temporary
``NBCLUSTER_TEMP_DIR`` so a test never sees (or stops) a user's cluster. ``close`` stops every
node it started with SIGTERM, as a user's Ctrl-C would, and kills what is still there after a
deadline, so nothing outlives a test even when it fails.

Commands can run behind a ``prefix`` (``ip netns exec ns1``) to place a node in a network
namespace. ``attach`` makes the test process a driver of such a cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from conftest import describe, is_gone  # noqa: F401 (the cluster tests import them from here)

import nbcluster as nc

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
#: How long a node may take to print its address (a cold start on a loaded 2-core machine).
START_TIMEOUT_S = 30.0
#: How long a node may take to be gone after SIGTERM (the CLI itself waits 5 s for it).
STOP_TIMEOUT_S = 10.0
NODE_MODULE = "nbcluster.runtime.node.node_main"
#: How ``ps`` shows a node process once it runs (``nbcluster.runtime.execute.proctitle``).
NODE_TITLES = ("nbcluster::head", "nbcluster::node")
#: The CLI's line saying where its node listens. Under PYTHONUNBUFFERED ``print`` writes the
#: line and its newline apart, so the node's own log line may come between them.
_STARTED = re.compile(r"nbcluster (?:head )?node started at (\[[^\]\s]*\]:\d+|[^\s,\[]+)")


def poll(
    predicate: Callable[[], Any],
    timeout: float,
    message: str | Callable[[], object] = "",
    interval: float = 0.02,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = str(message()) if callable(message) else message
            raise AssertionError(f"not true within {timeout:g}s: {text or predicate}")
        time.sleep(interval)


def gone(proc: psutil.Process) -> bool:
    """True once this very process has exited (its pid may since belong to another)."""
    try:
        return bool(not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its live descendants."""
    try:
        proc = psutil.Process(pid)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_quietly(procs: Iterable[psutil.Process]) -> None:
    """Last-resort cleanup of processes a test started and recorded. A ``psutil.Process``
    refuses to signal a pid that has since been reused, so this never hits anyone else."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


def listening_ports(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every TCP socket these processes listen on."""
    wanted = set(pids)
    return [
        (c.pid, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in wanted
    ]


def clean_env(temp_dir: Path, **extra: str) -> dict[str, str]:
    """The environment for a CLI node or a driver: this repository importable (the tests
    directory too, so workers import the test modules whose functions they run), cluster state
    under ``temp_dir``, and none of the caller's own cluster settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBCLUSTER_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["NBCLUSTER_TEMP_DIR"] = str(temp_dir)
    env.update(extra)
    return env


@dataclass
class CliNode:
    """One ``nbcluster start ... --block`` command and the node process it runs."""

    name: str
    cli: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    node_pid: int = 0
    #: every process of this node ever seen (the CLI, the node, its fork server, its workers)
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> list[int]:
        """Pids of the CLI and everything under it, as they are now (and remember them).

        Descendants are looked up from processes already seen, as ``psutil.Process``
        objects, never from a bare pid that may have been reused since they exited.
        """
        for proc in list(self.seen.values()):
            if gone(proc):
                continue
            try:
                self.seen.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        return [pid for pid, proc in self.seen.items() if not gone(proc)]

    def all_gone(self) -> bool:
        self.processes()
        return self.cli.poll() is not None and all(gone(p) for p in self.seen.values())

    def left(self) -> str:
        return describe(pid for pid, proc in self.seen.items() if not gone(proc))

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM to the CLI (what a service manager sends); its exit code."""
        self.processes()
        if self.cli.poll() is None:
            self.cli.send_signal(signal.SIGTERM)
        try:
            return self.cli.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not stop within {timeout}s of SIGTERM:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        """Stop whatever is left of this node, by force, and reap the CLI."""
        self.processes()
        kill_quietly(self.seen.values())
        try:
            self.cli.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass


class CliCluster:
    """Nodes started with the CLI under one temporary state directory, with one token."""

    def __init__(self, root: Path, token: str | None = None, **env: str) -> None:
        self.root = root
        self.temp_dir = root / "nbcluster"  # created by the CLI, as a user's would be
        self.token = token or uuid.uuid4().hex
        self.env = clean_env(self.temp_dir, **env)
        self.nodes: list[CliNode] = []
        self._logs = 0

    @property
    def head(self) -> CliNode:
        return self.nodes[0]

    def start_head(self, *args: str, prefix: Sequence[str] = ()) -> CliNode:
        return self.start_node("head", ["--head", *args], prefix)

    def join(self, name: str, *args: str, prefix: Sequence[str] = ()) -> CliNode:
        return self.start_node(name, ["--address", self.head.address, *args], prefix)

    def launch(
        self, name: str, args: Sequence[str], prefix: Sequence[str] = (), token: str | None = None
    ) -> CliNode:
        """Run ``nbcluster start ARGS --block`` with token T (in the environment, never on the
        command line); do not wait for it."""
        self._logs += 1
        log_path = self.root / f"{self._logs:02d}-{name}.log"
        cmd = [*prefix, sys.executable, "-m", "nbcluster", "start", *args, "--block"]
        env = {**self.env, "NBCLUSTER_TOKEN": token or self.token}
        with open(log_path, "wb") as log:
            cli = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=str(REPO_ROOT),
            )  # fmt: skip
        node = CliNode(name, cli, log_path)
        node.seen[cli.pid] = psutil.Process(cli.pid)  # ours until we reap it
        node.processes()
        self.nodes.append(node)
        return node

    def start_node(self, name: str, args: Sequence[str], prefix: Sequence[str] = ()) -> CliNode:
        """Start a node and wait until it says where it listens."""
        node = self.launch(name, args, prefix)

        def started() -> str | None:
            if node.cli.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {node.cli.returncode} while starting:\n{node.output()}"
                )
            found = _STARTED.search(node.output())
            return found.group(1) if found else None

        node.address = poll(started, START_TIMEOUT_S, lambda: f"{name} start:\n{node.output()}")
        node.node_pid = next(
            p.pid
            for p in psutil.Process(node.cli.pid).children()
            if any(t in " ".join(p.cmdline()) for t in (NODE_MODULE, *NODE_TITLES))
        )
        node.processes()
        return node

    def cli(
        self, *args: str, timeout: float = 30.0, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m nbcluster ARGS`` in this cluster's environment."""
        return subprocess.run(
            [sys.executable, "-m", "nbcluster", *args],
            check=False, capture_output=True, text=True, timeout=timeout, env={**self.env, **env},
            cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The environment of a driver script that attaches to this cluster by itself."""
        return {**self.env, "NBCLUSTER_ADDRESS": self.head.address,
                "NBCLUSTER_TOKEN": self.token, **extra}  # fmt: skip

    def close(self) -> None:
        """SIGTERM every node (joined ones first, as a user would), then make sure."""
        try:
            for node in reversed(self.nodes):
                node.processes()
                if node.cli.poll() is None:
                    node.cli.send_signal(signal.SIGTERM)
            poll(
                lambda: all(n.all_gone() for n in self.nodes),
                STOP_TIMEOUT_S,
                lambda: "left after SIGTERM: " + "; ".join(n.left() for n in self.nodes),
            )
        finally:
            for node in self.nodes:
                node.kill()

    def __enter__(self) -> CliCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_driver(
    script: str, env: dict[str, str], prefix: Sequence[str] = (), timeout: float = 60.0
) -> Any:
    """Run ``python -c script`` as a separate driver; return the JSON of its last stdout line."""
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", script],
        check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO_ROOT),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"driver exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return json.loads(lines[-1])


def attach(address: str, token: str) -> None:
    """Make this process a driver of the cluster at ``address``, leaving any other first.

    ``init`` while connected returns the connected cluster's information without side
    effects, which tells whether we are already attached where we want to be.
    """
    if nc.is_initialized():
        if nc.init()["address"] == address:
            return
        nc.shutdown()
    nc.init(address=address, token=token)


def records(temp_dir: Path, started_by: str | None = None) -> list[dict[str, Any]]:
    """The session records (``nbcluster.runtime.node.sessions``) under ``temp_dir``, as JSON."""
    found = []
    for path in sorted((temp_dir / "clusters").glob("*.json")):
        record = json.loads(path.read_text())
        if started_by is None or record["started_by"] == started_by:
            found.append(record)
    return found


def recorded_nodes(temp_dir: Path) -> list[psutil.Process]:
    """The node processes ``nbcluster start`` recorded under ``temp_dir``, with all their
    descendants (fork servers and workers), as they are now."""
    procs: list[psutil.Process] = []
    for record in records(temp_dir, "cli"):
        procs.extend(tree(int(record["pid"])))
    return procs


def node_id_of(address: str) -> str:
    """The NodeID of the node whose agent listens at ``address``."""
    for n in nc.nodes():
        if n["Address"] == address:
            return str(n["NodeID"])
    raise AssertionError(f"no node at {address} in {nc.nodes()}")


def node_entry(node_id: str) -> dict[str, Any]:
    """This node's entry of ``nodes()`` (with ``Alive`` and ``DeathReason``)."""
    return next(n for n in nc.nodes() if n["NodeID"] == node_id)

"""The README's two-machine example, run as written, on two network-namespace "machines".

The commands are read from the README's "Cluster" section, not copied here, so the README
cannot drift from what works: the lines under ``# machine A`` run in one namespace, those
under ``# machine B`` in the other, with only the placeholders filled in (``A`` becomes
machine A's address, ``...`` the token the head printed). Each machine has its own
nbcluster state directory, as two computers would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_helpers import REPO_ROOT, clean_env
from netns_pair import Pair, netns_pair

SUBNET = "10.231.48"  # this module's own: test_netns.py uses 10.231.47


def readme_section(title: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def machine_commands(block: str) -> dict[str, list[str]]:
    """``{"A": [command, ...], "B": [...]}`` from a block whose comments name machines."""
    out: dict[str, list[str]] = {}
    machine = None
    for line in block.splitlines():
        header = re.fullmatch(r"#\s*machine\s+(\w+)\s*", line.strip())
        if header:
            machine = header.group(1)
            continue
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            assert machine is not None, f"a command before any '# machine X' line: {line!r}"
            out.setdefault(machine, []).append(command)
    return out


class Machines:
    def __init__(self, pair: Pair, root: Path) -> None:
        self.pair = pair
        self.ns = {"A": pair.ns1, "B": pair.ns2}
        self.ips = {"A": pair.ip1, "B": pair.ip2}
        bin_dir = os.path.dirname(sys.executable)  # where `nbcluster` is installed
        self.env = {
            name: clean_env(root / name, PATH=f"{bin_dir}:{os.environ.get('PATH', '')}")
            for name in self.ns
        }

    def fill(self, command: str, token: str = "") -> str:
        """The README's placeholders: machine A's address, and the token."""
        command = re.sub(r"\bA:(\d+)", rf"{self.ips['A']}:\1", command)
        return command.replace("NBCLUSTER_TOKEN=...", f"NBCLUSTER_TOKEN={token}")

    def run(self, machine: str, command: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*Pair.exec_in(self.ns[machine]), "bash", "-c", command],
            capture_output=True, text=True, timeout=timeout, env=self.env[machine],
            cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"machine {machine}: {command!r} exited with {done.returncode}\n"
            f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
        return done.stdout


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Machines]:
    with netns_pair("nbrm", SUBNET) as pair:
        m = Machines(pair, tmp_path)
        try:
            yield m
        finally:  # what the README leaves running (machine A's head) stops as a user would
            for name in m.ns:
                subprocess.run(
                    [*Pair.exec_in(m.ns[name]), sys.executable, "-m", "nbcluster", "stop"],
                    capture_output=True, timeout=60, env=m.env[name], check=False,
                )  # fmt: skip


def printed_token(output: str) -> str:
    """The token as ``nbcluster start --head`` gives it: in its token file, or printed."""
    found = re.search(r"token file: (\S+)", output)
    if found:
        return Path(found.group(1)).read_text().strip()
    found = re.search(r"NBCLUSTER_TOKEN=(\w+)", output)
    assert found, f"the head printed no token:\n{output}"
    return found.group(1)


DRIVER = """
import json, socket
import nbcluster as nc
from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy
__INIT__
@nc.remote
def where():
    return nc.get_runtime_context().get_node_id()
nodes = {n["NodeID"]: n["Address"] for n in nc.nodes() if n["Alive"]}
print(json.dumps({
    "nodes": nodes,
    "bigmem": nc.get(where.options(resources={"bigmem": 1}).remote(), timeout=30),
    "each": {nid: nc.get(where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        nid, soft=False)).remote(), timeout=30) for nid in nodes},
}))
"""


def test_the_readme_two_machine_example_works_as_written(machines: Machines) -> None:
    section = readme_section("Cluster")
    commands = machine_commands(code_blocks(section, "bash")[0])
    assert set(commands) == {"A", "B"}, commands
    a_ip, b_ip = machines.ips["A"], machines.ips["B"]

    head_output = "".join(machines.run("A", machines.fill(c)) for c in commands["A"])
    token = printed_token(head_output)
    assert f"{a_ip}:6380" in head_output, head_output  # it advertises what B can reach

    outputs = [machines.run("B", machines.fill(c, token)) for c in commands["B"][:-1]]
    status = next(o for o in outputs if "Nodes:" in o)
    assert "Nodes: 2 alive, 0 dead" in status, status
    assert f"{a_ip}:6380" in status and f"{b_ip}:" in status, status
    assert "127." not in status, status  # no loopback address: each node is reachable

    init_lines = [
        line for line in code_blocks(section, "python")[0].splitlines() if "nc.init(" in line
    ]
    init = machines.fill(init_lines[0]).replace("token=...", f"token=\"{token}\"")
    report = json.loads(
        machines.run("B", DRIVER.replace("__INIT__", init).join(["python -c '", "'"]))
        .strip()
        .splitlines()[-1]
    )
    addresses = sorted(report["nodes"].values())
    assert addresses[0] == f"{a_ip}:6380" and addresses[1].startswith(f"{b_ip}:"), addresses
    b_node = next(nid for nid, addr in report["nodes"].items() if addr.startswith(b_ip))
    assert report["bigmem"] == b_node  # B's --resources took effect
    assert report["each"] == {nid: nid for nid in report["nodes"]}  # a task ran on each

    stopped = machines.run("B", machines.fill(commands["B"][-1], token))
    assert stopped.startswith(f"stopped node at {b_ip}:"), stopped
    after = machines.run("A", "nbcluster status")
    assert "Nodes: 1 alive" in after, after

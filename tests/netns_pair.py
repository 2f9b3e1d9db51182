"""Two "machines" on one host: network namespaces joined by a veth pair, for the tests.

Each namespace has only its loopback and one end of the veth (``SUBNET.1`` and ``SUBNET.2``),
so processes in them reach each other only through their advertised addresses, never through
a shared 127.0.0.1: the situation of two real machines. Names include this process's pid and
each test module uses its own subnet, so runs and modules never collide.

Needs root (or CAP_NET_ADMIN) and iproute2's ``ip``; ``missing`` skips (or fails, in CI)
otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
from cluster_helpers import kill_quietly
from parts import missing


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=30)


def must(*args: str) -> None:
    done = ip(*args)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"


@dataclass
class Pair:
    ns1: str
    ns2: str
    ip1: str
    ip2: str

    @staticmethod
    def exec_in(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


@contextlib.contextmanager
def netns_pair(tag: str, subnet: str) -> Iterator[Pair]:
    """ns1 (``subnet``.1) and ns2 (``subnet``.2); deleted afterwards, with whatever still
    runs inside them."""
    if shutil.which("ip") is None:
        missing("iproute2", "`ip` is not installed (apt-get install iproute2)")
    name = f"{tag}{os.getpid()}"
    pair = Pair(f"{name}a", f"{name}b", f"{subnet}.1", f"{subnet}.2")
    made = ip("netns", "add", pair.ns1)
    if made.returncode != 0:
        missing("ip netns", f"cannot create a namespace (needs root): {made.stderr.strip()}")
    try:
        must("netns", "add", pair.ns2)
        # Both ends are created inside the namespaces: nothing appears on the host.
        must("link", "add", "veth1", "netns", pair.ns1, "type", "veth", "peer", "name", "veth2",
             "netns", pair.ns2)  # fmt: skip
        for ns, dev, addr in ((pair.ns1, "veth1", pair.ip1), (pair.ns2, "veth2", pair.ip2)):
            must("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            must("-n", ns, "link", "set", dev, "up")
            must("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for ns in (pair.ns1, pair.ns2):
            pids = ip("netns", "pids", ns).stdout.split()
            kill_quietly(psutil.Process(int(p)) for p in pids if psutil.pid_exists(int(p)))
            ip("netns", "del", ns)
        left = ip("netns", "list").stdout
        assert pair.ns1 not in left and pair.ns2 not in left, left

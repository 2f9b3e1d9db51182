"""Limits on a shared host: a user's cluster takes the CPUs and memory that its cgroup, its
spawner (``CPU_LIMIT``/``MEM_LIMIT``) and the site's config file give the user, not the
machine's.

Real clusters in real cgroups: the test makes a child of its own cgroup (v1, or v2 where the
controllers are delegated to it) with a CPU quota and a memory limit, and starts the node
(and a driver, as a user's kernel would be) inside it. The node offers the quota's CPUs,
sizes its store from the limit, says so in ``nbcluster status`` and ``nc.init()``, and its
memory monitor kills a task that outgrows the limit before the kernel's OOM killer has to.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from cluster_helpers import CliCluster, attach, clean_env, poll, run_driver
from parts import missing

import nbcluster as nc
from nbcluster.runtime.config import Config
from nbcluster.runtime.scheduling import limits

MiB = 2**20
GiB = 2**30
T = 60.0
#: What the cgroup tests give their cgroup: one CPU (this machine has more) and 1 GiB.
BOX_CPUS = 1
BOX_MEMORY = GiB


class CgroupBox:
    """A child of this process's own cgroup with a CPU quota and a memory limit, for the
    processes a test starts in it (``prefix``); ``close`` removes it once they are gone."""

    def __init__(self, name: str, cpus: float, memory: int) -> None:
        self.name = name
        self.made: list[tuple[int, Path]] = []
        try:
            self.memory = self._make("memory")
            self.cpu = self._make("cpu")
            self._limit(cpus, memory)
        except BaseException:
            self.close()
            raise

    def _make(self, controller: str) -> tuple[int, Path]:
        for group in limits.own_cgroups(controller):
            parent = Path(group.path)
            if group.version == 2:
                delegated = (parent / "cgroup.subtree_control").read_text().split()
                if controller not in delegated:
                    continue
            child = parent / self.name
            try:
                child.mkdir()
            except OSError as e:
                missing("cgroups", f"cannot make a {controller} cgroup at {child}: {e}")
            self.made.append((group.version, child))
            return group.version, child
        missing("cgroups", f"no cgroup hierarchy here lets this process limit {controller}")

    def _limit(self, cpus: float, memory: int) -> None:
        version, d = self.memory
        if version == 1:
            (d / "memory.limit_in_bytes").write_text(str(memory))
            if (d / "memory.memsw.limit_in_bytes").exists():  # no swapping instead of OOM
                (d / "memory.memsw.limit_in_bytes").write_text(str(memory))
        else:
            (d / "memory.max").write_text(str(memory))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
        version, d = self.cpu
        period = 100_000
        if version == 1:
            (d / "cpu.cfs_period_us").write_text(str(period))
            (d / "cpu.cfs_quota_us").write_text(str(int(cpus * period)))
        else:
            (d / "cpu.max").write_text(f"{int(cpus * period)} {period}")

    def prefix(self) -> list[str]:
        """A command prefix that moves the command into this cgroup, then runs it."""
        moves = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for _, d in self.made)
        return ["sh", "-c", f'set -e; {moves}; exec "$@"', "sh"]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for _, d in self.made:
            found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
        return found

    def kernel_oom_kills(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup."""
        version, d = self.memory
        text = (d / ("memory.oom_control" if version == 1 else "memory.events")).read_text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        raise AssertionError(f"no oom_kill count in {d}: {text}")

    def close(self) -> None:
        """Remove the cgroup, once every process the test started in it has exited."""
        try:
            poll(lambda: not self.pids(), 10.0, lambda: f"still in {self.name}: {self.pids()}")
        finally:
            for _, d in reversed(self.made):
                if d.exists():
                    d.rmdir()
            self.made.clear()


@pytest.fixture(scope="module")
def boxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CgroupBox, CliCluster]]:
    """A head node started with ``nbcluster start`` inside a cgroup of 1 CPU and 1 GiB,
    this process attached to it as a driver."""
    box = CgroupBox(f"nbcluster-test-{os.getpid()}", BOX_CPUS, BOX_MEMORY)
    cluster = CliCluster(tmp_path_factory.mktemp("limits"), NBCLUSTER_CONFIG_FILE="")
    for name in ("CPU_LIMIT", "MEM_LIMIT"):  # only the cgroup limits this node
        cluster.env.pop(name, None)
    try:
        cluster.start_head(prefix=box.prefix())
        attach(cluster.head.address, cluster.token)
        yield box, cluster
    finally:
        nc.shutdown()
        try:
            cluster.close()
        finally:
            box.close()


@nc.remote
def worker_facts() -> dict[str, Any]:
    with open("/proc/self/oom_score_adj") as f:
        return {"pid": os.getpid(), "oom_score_adj": int(f.read())}


def test_a_node_in_a_cgroup_takes_its_cpu_quota_and_sizes_its_store_from_its_limit(
    boxed: tuple[CgroupBox, CliCluster],
) -> None:
    box, cluster = boxed
    assert cluster.head.node_pid in box.pids()
    assert nc.cluster_resources() == {"CPU": float(BOX_CPUS)}
    [node] = nc.nodes()
    assert node["ObjectStoreCapacity"] == int(BOX_MEMORY * 0.3)
    assert node["Limits"] == {
        "CPU": {"amount": float(BOX_CPUS), "source": "cgroup quota"},
        "memory": {"amount": float(BOX_MEMORY), "source": "cgroup limit"},
    }
    status = cluster.cli("status")
    assert status.returncode == 0, status.stderr
    assert "limited to 1 CPU (cgroup quota), 1.0 GiB memory (cgroup limit)" in status.stdout
    # One worker for its one CPU, first in line for the kernel's OOM killer; the node is not.
    facts = nc.get(worker_facts.remote(), timeout=T)
    assert facts["oom_score_adj"] == 1000
    workers = [p for p in psutil.Process(cluster.head.node_pid).children(recursive=True)
               if "nbcluster::worker" in " ".join(p.cmdline())]  # fmt: skip
    assert [p.pid for p in workers] == [facts["pid"]]
    node, ours = (Path(f"/proc/{pid}/oom_score_adj").read_text() for pid in
                  (cluster.head.node_pid, os.getpid()))  # fmt: skip
    assert node == ours  # inherited


def grow(step: int = 8 * MiB, every_s: float = 0.04, until: int = 3 * GiB) -> int:
    """Hold ``step`` more bytes every ``every_s`` seconds, up to ``until`` (a task reading a
    large file into memory, at some 200 MB/s)."""
    chunks = []
    while len(chunks) * step < until:
        chunks.append(np.ones(step // 8))
        time.sleep(every_s)
    return len(chunks)


@nc.remote
def ping() -> str:
    return "pong"


#: A driver in the cgroup beside the node, as a user's notebook kernel would be: what its
#: ``init`` shows, and what a task that outgrows the limit comes to.
OUTGROW = """
import json
import nbcluster as nc
from test_limits import grow, ping
info = nc.init()
try:
    out = {"result": nc.get(nc.remote(grow).options(max_retries=0).remote(), timeout=60)}
except Exception as e:
    out = {"error": type(e).__name__, "message": str(e)}
out["title"] = str(info).splitlines()[0]
out["after"] = nc.get(ping.remote(), timeout=60)
print(json.dumps(out))
"""


def test_a_task_outgrowing_the_cgroup_is_killed_by_the_monitor_not_the_kernel(
    boxed: tuple[CgroupBox, CliCluster],
) -> None:
    box, cluster = boxed
    out = run_driver(OUTGROW, cluster.driver_env(), prefix=box.prefix(), timeout=2 * T)
    assert out.get("error") == "OutOfMemoryError", (out, box.kernel_oom_kills())
    assert "95% of this user's memory limit of 1.0 GiB (cgroup limit)" in out["message"]
    assert "newest task" in out["message"]
    assert box.kernel_oom_kills() == 0
    assert "limited to 1 CPU (cgroup quota), 1.0 GiB memory (cgroup limit)" in out["title"]
    # The driver lived to tell, and the node runs new work.
    assert out["after"] == "pong"
    assert [n["Alive"] for n in nc.nodes()] == [True]


#: A user's kernel starting its own cluster (``nc.init()``, the kernel's path) under a spawner
#: that set CPU_LIMIT and MEM_LIMIT without enforcing them (LocalProcessSpawner does that).
SPAWNED = """
import json
import nbcluster as nc
from test_limits import grow
info = nc.init()
[node] = nc.nodes()
out = {"title": str(info).splitlines()[0], "resources": dict(nc.cluster_resources()),
       "store": node["ObjectStoreCapacity"], "limits": node["Limits"]}
try:
    out["result"] = nc.get(nc.remote(grow).options(max_retries=0).remote(), timeout=60)
except Exception as e:
    out["error"], out["message"] = type(e).__name__, str(e)
print(json.dumps(out))
"""


def test_the_spawners_cpu_and_memory_limits_size_a_users_cluster(tmp_path: Path) -> None:
    mem = 768 * MiB
    env = clean_env(tmp_path / "nbcluster", CPU_LIMIT="1.0", MEM_LIMIT=str(mem),
                    NBCLUSTER_CONFIG_FILE="")  # fmt: skip
    out = run_driver(SPAWNED, env, timeout=2 * T)
    assert out["resources"] == {"CPU": 1.0}
    assert out["store"] == int(mem * 0.3)
    assert out["limits"] == {
        "CPU": {"amount": 1.0, "source": "CPU_LIMIT"},
        "memory": {"amount": float(mem), "source": "MEM_LIMIT"},
    }
    assert "limited to 1 CPU (CPU_LIMIT), 768.0 MiB memory (MEM_LIMIT)" in out["title"]
    # Nothing enforces MEM_LIMIT; the monitor holds the cluster's own memory under it.
    assert out.get("error") == "OutOfMemoryError", out
    assert "95% of this user's memory limit of 768.0 MiB (MEM_LIMIT)" in out["message"]


def detected(env: dict[str, str]) -> dict[str, Any]:
    """``limits.detect().applied()`` in a fresh process with ``env``, as a node would see it."""
    code = "import json; from nbcluster.runtime.scheduling import limits; print(json.dumps(limits.detect().applied()))"  # noqa: E501
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False, timeout=T)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_the_site_config_file_limits_every_users_cluster(tmp_path: Path) -> None:
    site = tmp_path / "config.json"
    site.write_text(json.dumps({"cpu_limit": 1, "mem_limit": 512 * MiB}))
    with CliCluster(tmp_path, NBCLUSTER_CONFIG_FILE=str(site)) as cluster:
        for name in ("CPU_LIMIT", "MEM_LIMIT"):
            cluster.env.pop(name, None)
        cluster.start_head()
        status = cluster.cli("status")
        assert status.returncode == 0, status.stderr
        assert (
            f"limited to 1 CPU (cpu_limit in {site}), 512.0 MiB memory (mem_limit in {site})"
            in status.stdout
        )
        attach(cluster.head.address, cluster.token)
        try:
            assert nc.cluster_resources() == {"CPU": 1.0}
            assert nc.nodes()[0]["ObjectStoreCapacity"] == int(512 * MiB * 0.3)
        finally:
            nc.shutdown()
    # The environment overrides the file, and says so.
    env = clean_env(tmp_path, NBCLUSTER_CONFIG_FILE=str(site), NBCLUSTER_MEM_LIMIT=str(640 * MiB))
    env.pop("CPU_LIMIT", None)
    env.pop("MEM_LIMIT", None)
    assert detected(env)["memory"] == {"amount": float(640 * MiB), "source": "NBCLUSTER_MEM_LIMIT"}


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"mem_limt": 1}', "unknown setting 'mem_limt' (did you mean 'mem_limit'?)"),
        ('{"mem_limit": "lots"}', "mem_limit in {path}='lots': not a whole number"),
        ('{"cpu_limit": 2,}', "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object of settings"),
    ],
)
def test_a_broken_config_file_is_named_when_a_node_starts(
    tmp_path: Path, content: str, says: str
) -> None:
    site = tmp_path / "config.json"
    site.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "nbcluster", "start", "--head"],
        env=clean_env(tmp_path / "nbcluster", NBCLUSTER_CONFIG_FILE=str(site)),
        capture_output=True, text=True, check=False, timeout=T, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert str(site) in done.stderr
    assert says.format(path=site) in done.stderr, done.stderr


def test_a_store_larger_than_the_memory_allowed_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """As in Ray: the store is memory, so one larger than the user may use would take puts
    until the kernel killed the node. Here MEM_LIMIT is that memory."""
    env = clean_env(tmp_path / "nbcluster", MEM_LIMIT=str(512 * MiB), NBCLUSTER_CONFIG_FILE="")
    done = subprocess.run(
        [sys.executable, "-m", "nbcluster", "start", "--head", "--object-store-memory",
         str(GiB)],
        env=env, capture_output=True, text=True, check=False, timeout=T, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode != 0
    assert (
        f"object_store_memory={GiB} (1.0 GiB) is more than the 512.0 MiB of memory this node "
        "may use (MEM_LIMIT)" in done.stderr
    ), done.stderr
    assert not list((tmp_path / "nbcluster").glob("clusters/*.json"))  # nothing started
    # init() says the same, and then starts with a store that fits.
    out = run_driver(
        "import json, nbcluster as nc\n"
        "try:\n"
        f"    nc.init(num_cpus=1, object_store_memory={GiB})\n"
        "except ValueError as e:\n"
        "    refused = str(e)\n"
        f"nc.init(num_cpus=1, object_store_memory={256 * MiB})\n"
        "print(json.dumps({'refused': refused, 'store': nc.nodes()[0]['ObjectStoreCapacity'],\n"
        "                  'works': nc.get(nc.put(41)) + 1}))\n",
        env, timeout=T,
    )  # fmt: skip
    assert "is more than the 512.0 MiB of memory this node may use (MEM_LIMIT)" in out["refused"]
    assert out["store"] == 256 * MiB
    assert out["works"] == 42


def test_a_bad_spawner_limit_is_named() -> None:
    with pytest.raises(ValueError, match=r"MEM_LIMIT='4G' in the environment is not a number"):
        limits.detect(env={"MEM_LIMIT": "4G"}, config=Config())


# -- the cgroup files as other layouts write them (made-up trees read with ``root``) --------


def fake_tree(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> None:
    for path, text in {"proc/self/cgroup": cgroup, "proc/self/mountinfo": mountinfo,
                       **files}.items():  # fmt: skip
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_cgroup_v2_limits_on_an_ancestor_apply_as_systemd_spawner_sets_them(
    tmp_path: Path,
) -> None:
    # SystemdSpawner: MemoryMax and CPUQuota on the server's unit, the kernel in a scope below
    unit = "sys/fs/cgroup/system.slice/jupyter-ada-singleuser.service"
    fake_tree(
        tmp_path,
        "0::/system.slice/jupyter-ada-singleuser.service/kernel.scope\n",
        "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        {
            f"{unit}/memory.max": f"{256 * MiB}\n",
            f"{unit}/cpu.max": "150000 100000\n",
            f"{unit}/memory.current": f"{100 * MiB}\n",
            f"{unit}/memory.stat": f"anon 1\ninactive_file {30 * MiB}\nactive_file 5\n",
            f"{unit}/kernel.scope/memory.max": "max\n",
            f"{unit}/kernel.scope/cpu.max": "max 100000\n",
            "sys/fs/cgroup/system.slice/memory.max": "max\n",
        },
    )
    found = limits.detect(env={}, config=Config(), root=str(tmp_path))
    assert found.memory.amount == 256 * MiB and found.memory.kind == limits.CGROUP
    assert found.cpus.amount == min(2, limits._machine_cpus())  # 1.5 CPUs round up
    assert found.memory.cgroup is not None
    assert found.memory.cgroup.path == str(tmp_path / unit)
    # what the kernel counts against the limit, less the page cache it can drop first
    assert limits.cgroup_memory_used(found.memory.cgroup) == 70 * MiB


def test_cgroup_v1_in_a_container_reads_the_mounted_part_and_ignores_no_limit(
    tmp_path: Path,
) -> None:
    # Docker without a cgroup namespace: /proc/self/cgroup names the host's path, the mount
    # shows only the container's part of the tree.
    fake_tree(
        tmp_path,
        "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n",
        "40 31 0:35 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n"
        "41 31 0:36 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n",
        {
            "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{384 * MiB}\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    found = limits.detect(env={}, config=Config(), root=str(tmp_path))
    assert (found.memory.amount, found.cpus.amount) == (384 * MiB, 1.0)
    assert limits.describe(found.applied()) == (
        "1 CPU (cgroup quota), 384.0 MiB memory (cgroup limit)"
    )
    # "no limit" is v1's huge number, and a quota of -1
    (tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    (tmp_path / "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n")
    assert limits.detect(env={}, config=Config(), root=str(tmp_path)).applied() == {}

"""Nodes on real cluster managers: sshd and a Slurm cluster on network-namespace "machines".

``cluster_managers/up.sh`` builds two machines (each its own network, hostname and sshd, both
running a slurmd) around a bridge whose root-namespace end is the head's machine, plus munged
and slurmctld there; ``down.sh`` removes it all. The cluster under test starts on loopback, as
a notebook's does, so every test also exercises opening it to the machines' network.

The stories: nodes join over ssh and through Slurm (batch jobs, and steps inside an
allocation) and run work pinned to them, on machines whose host names differ; removing a
group ends its remote processes and its jobs leave the queue; a kernel killed outright leaves
no node and no job behind; and each bad input — a host that does not answer, a wrong Python
path, a job Slurm rejects or leaves pending, a node that cannot reach the head — is reported
with the reason within the wait timeout while the cluster carries on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import REPO_ROOT, TESTS_DIR
from conftest import wait_until
from kernel_helpers import KernelSession, kernelspec, new_kernel  # noqa: F401
from parts import missing

import nbcluster as nc
from nbcluster.cluster import LaunchError, LaunchTimeoutError
from nbcluster.runtime.wire.addresses import primary_ip
from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCRIPTS = Path(__file__).parent / "cluster_managers"
JOIN_TIMEOUT_S = 60.0
DAEMONS = ("/usr/sbin/sshd", "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
#: What nodes need to import this module's functions (they run on the machines).
NODE_ENV = {"PYTHONPATH": os.pathsep.join((str(REPO_ROOT), str(TESTS_DIR)))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def machines() -> Iterator[dict[str, Any]]:
    """Two machines with sshd and slurmd, a Slurm controller; up.sh's facts."""
    if os.geteuid() != 0:
        missing("root", "the cluster-manager machines need root (namespaces, sshd, slurmd)")
    if not all(os.path.exists(p) for p in DAEMONS):
        missing("sshd/slurm", "install openssh-server munge slurmctld slurmd slurm-client "
                "(scripts/test-parts.sh does)")  # fmt: skip
    d = tempfile.mkdtemp(prefix="nbc-cluster-")  # not tmp_path: munged must reach it
    pid = os.getpid()
    env = {**os.environ, "NBC_PREFIX": f"n{pid % 100000}", "NBC_NET": f"10.233.{pid % 250}",
           "NBC_SLURMCTLD_PORT": str(_free_port()), "NBC_NODE_CPUS": "4"}  # fmt: skip
    saved = os.environ.get("SLURM_CONF")
    try:
        up = subprocess.run([str(SCRIPTS / "up.sh"), d], capture_output=True, text=True,
                            timeout=600, env=env, check=False)  # fmt: skip
        if up.returncode == 3:
            missing("cluster-manager machines", up.stderr.strip().splitlines()[-1])
        assert up.returncode == 0, f"up.sh failed ({up.returncode}):\n{up.stderr[-4000:]}"
        facts: dict[str, Any] = dict(
            line.split("=", 1) for line in up.stdout.splitlines() if "=" in line
        )
        os.environ["SLURM_CONF"] = facts["SLURM_CONF"]  # for this driver's sbatch/squeue
        yield facts
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        subprocess.run([str(SCRIPTS / "down.sh"), d], capture_output=True, timeout=120,
                       check=False)  # fmt: skip


@pytest.fixture
def loopback_cluster(make_cluster: Any) -> Any:
    """A fresh cluster on loopback, as a notebook starts one; its groups end with it."""
    return make_cluster(num_cpus=1)


def ssh_options(machines: dict[str, Any]) -> dict[str, Any]:
    hosts = machines["NODE_HOSTNAMES"].split(",")
    return {"hosts": hosts, "ssh_options": ["-F", machines["SSH_CONFIG"]], "env": NODE_ENV}


def slurm_options(machines: dict[str, Any]) -> dict[str, Any]:
    # --exclusive: one node per machine, so each lands on its own host
    return {"partition": machines["SLURM_PARTITION"], "sbatch_options": ["--exclusive"],
            "walltime": "0:10:00", "env": NODE_ENV}  # fmt: skip


@nc.remote
def hostname() -> str:
    return socket.gethostname()


def hostnames_of(nodes: list[dict[str, Any]]) -> list[str]:
    pinned = [
        hostname.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    ]
    return sorted(nc.get(pinned, timeout=30))


def remote_nbcluster(machines: dict[str, Any]) -> list[str]:
    """Command lines of nbcluster processes still running on the machines."""
    out = []
    for ns in machines["NODE_NETNS"].split(","):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              check=False).stdout.split()  # fmt: skip
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "nbcluster" in cmd and "sshd" not in cmd:
                out.append(f"{ns} {pid}: {cmd}")
    return out


def queued(job_ids: list[str]) -> list[str]:
    """The jobs ``squeue`` still lists (pending, running, completing)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                         check=False).stdout.split("\n")  # fmt: skip
    return [line for line in out if line.split(" ")[0] in job_ids]


# ------------------------------------------------------------------------------------ ssh


def test_ssh_nodes_join_a_loopback_cluster_and_take_work(
    machines: dict[str, Any], loopback_cluster: Any
) -> None:
    assert nc.init()["address"].startswith("127.0.0.1:")
    group = nc.cluster.add_nodes(backend="ssh", cpus=1, **ssh_options(machines))
    try:
        nodes = group.wait(timeout=JOIN_TIMEOUT_S)
        assert hostnames_of(nodes) == sorted(machines["NODE_HOSTNAMES"].split(","))
        assert sorted(n["NodeManagerAddress"] for n in nodes) == sorted(
            machines["NODE_IPS"].split(",")
        )
        # objects cross both ways between the loopback head machine and the machines
        data = nc.put(b"x" * (8 << 20))
        sizes = [
            nc.get(
                _size.options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                ).remote(data),
                timeout=30,
            )
            for n in nodes
        ]
        assert sizes == [8 << 20, 8 << 20]
    finally:
        group.remove()
    wait_until(lambda: not remote_nbcluster(machines), timeout=15,
               message=lambda: "\n".join(remote_nbcluster(machines)))  # fmt: skip


@nc.remote
def _size(b: bytes) -> int:
    return len(b)


def test_ssh_bad_hosts_and_pythons_are_reported_in_time(
    machines: dict[str, Any], loopback_cluster: Any
) -> None:
    opts = ssh_options(machines)
    silent = f"{machines['HEAD_IP'].rsplit('.', 1)[0]}.99"  # on the network, but nobody there
    group = nc.cluster.add_nodes(backend="ssh", hosts=[silent], ssh_options=opts["ssh_options"],
                                 connect_timeout=3)  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(LaunchError, match=rf"ssh to {silent} failed: .*{silent}"):
        group.wait(timeout=JOIN_TIMEOUT_S)
    assert time.monotonic() - t0 < 20
    group.remove()

    group = nc.cluster.add_nodes(backend="ssh", python="/no/such/python", **opts)
    with pytest.raises(LaunchError, match="cannot run /no/such/python on"):
        group.wait(timeout=JOIN_TIMEOUT_S)
    group.remove()
    assert nc.get(hostname.remote(), timeout=30) == socket.gethostname()  # carries on


def test_a_node_that_cannot_reach_the_head_says_so(
    machines: dict[str, Any], make_cluster: Any
) -> None:
    # A head pinned to this machine's other interface, which the machines have no route to.
    outside = primary_ip()
    if outside.startswith(machines["HEAD_IP"].rsplit(".", 1)[0]) or outside.startswith("127."):
        pytest.skip("this machine has no second interface to pin the head to")
    make_cluster(num_cpus=1, node_ip=outside)
    ns = machines["NODE1_NETNS"].rsplit("/", 1)[-1]
    subprocess.run(["ip", "-n", ns, "route", "del", "default"], check=True)
    try:
        opts = ssh_options(machines)
        group = nc.cluster.add_nodes(backend="ssh", **{**opts, "hosts": opts["hosts"][:1]})
        with pytest.raises(LaunchError) as err:
            group.wait(timeout=JOIN_TIMEOUT_S)
        assert f"no route from this machine to {outside}" in str(err.value), err.value
        group.remove()
    finally:
        subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", machines["HEAD_IP"]],
                       check=True)  # fmt: skip


# ---------------------------------------------------------------------------------- slurm


def test_slurm_jobs_join_take_work_and_leave_the_queue(
    machines: dict[str, Any], loopback_cluster: Any
) -> None:
    group = nc.cluster.add_nodes(2, backend="slurm", cpus=1, **slurm_options(machines))
    job_ids = [str(j.handle) for j in group.jobs]
    try:
        nodes = group.wait(timeout=JOIN_TIMEOUT_S)
        assert hostnames_of(nodes) == sorted(machines["NODE_HOSTNAMES"].split(","))
        assert len(queued(job_ids)) == 2
    finally:
        group.remove()
    assert queued(job_ids) == []
    assert not remote_nbcluster(machines)


def test_slurm_rejections_and_pending_jobs_give_the_schedulers_reason(
    machines: dict[str, Any], loopback_cluster: Any
) -> None:
    with pytest.raises(LaunchError, match=r"Slurm refused the job: .*[Ii]nvalid partition"):
        nc.cluster.add_nodes(1, backend="slurm", partition="nosuchpartition")

    later = nc.cluster.add_nodes(1, backend="slurm", sbatch_options=["--begin=now+3600"])
    t0 = time.monotonic()
    with pytest.raises(LaunchTimeoutError, match=r"0 of 1 nodes joined within 3 s; job \d+: "
                       r"pending \(BeginTime\)"):  # fmt: skip
        later.wait(timeout=3)
    assert time.monotonic() - t0 < 10
    later.remove()
    assert queued([str(j.handle) for j in later.jobs]) == []

    wrong = nc.cluster.add_nodes(1, backend="slurm", python="/no/such/python")
    with pytest.raises(LaunchError, match=r"(?s)FAILED.*/no/such/python: not found"):
        wrong.wait(timeout=JOIN_TIMEOUT_S)
    wrong.remove()
    assert nc.get(hostname.remote(), timeout=30) == socket.gethostname()


INSIDE_ALLOCATION = """
import json, socket, sys, nbcluster as nc
from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On
nc.init(num_cpus=1)
group = nc.cluster.add_nodes(2, backend="slurm", cpus=1)
nodes = group.wait(timeout=60)
where = nc.remote(socket.gethostname)
names = nc.get([where.options(scheduling_strategy=On(n["NodeID"])).remote() for n in nodes])
report = {"describe": group.launcher.describe(), "names": sorted(names),
          "jobs": [j.name for j in group.jobs]}
group.remove()
print("REPORT", json.dumps(report), flush=True)
"""


def test_inside_an_allocation_nodes_are_job_steps(machines: dict[str, Any]) -> None:
    env = {**os.environ, "PYTHONPATH": NODE_ENV["PYTHONPATH"], "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        ["salloc", "-N2", "--exclusive", "-p", machines["SLURM_PARTITION"], sys.executable,
         "-c", INSIDE_ALLOCATION],
        capture_output=True, text=True, timeout=180, env=env, cwd=str(REPO_ROOT), check=False,
    )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("REPORT ")]
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    report = json.loads(lines[0][len("REPORT ") :])
    assert report["describe"].startswith("slurm steps in job ")
    assert report["names"] == sorted(machines["NODE_HOSTNAMES"].split(","))
    assert all(name.startswith("step ") for name in report["jobs"])


# --------------------------------------------------------------------------- from a kernel


def test_from_a_kernel_ssh_and_slurm_nodes_and_nothing_left_when_it_is_killed(
    machines: dict[str, Any], new_kernel: Any,  # noqa: F811
) -> None:
    kernel: KernelSession = new_kernel(SLURM_CONF=machines["SLURM_CONF"])
    setup = (
        "import socket, nbcluster as nc\n"
        "from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On\n"
        "where = nc.remote(socket.gethostname)\n"
        "def names(g):\n"
        "    return sorted(nc.get([where.options(scheduling_strategy=On(n['NodeID'])).remote()"
        " for n in g.nodes], timeout=30))\n"
        f"SSH = {ssh_options(machines)!r}\nSLURM = {slurm_options(machines)!r}\n"
    )
    kernel.ok(setup)
    cell = kernel.ok(
        "s = nc.cluster.add_nodes(backend='ssh', cpus=1, **SSH)\n"
        "b = nc.cluster.add_nodes(2, backend='slurm', cpus=1, **SLURM)\n"
        "s.wait(60); b.wait(60)\n"
        "print(names(s), names(b), [j.handle for j in b.jobs])"
    )
    expected = sorted(machines["NODE_HOSTNAMES"].split(","))
    assert "now also listens on" in cell.text()  # the notebook is told
    ssh_names, slurm_names, job_ids = cell.text().strip().splitlines()[-1].split("] [")
    assert f"{ssh_names}]" == str(expected) and f"[{slurm_names}]" == str(expected)
    first_jobs = json.loads(f"[{job_ids}".replace("'", '"'))

    status = kernel.ok("%cluster status").text()
    assert "ssh-1" in status and "slurm-2" in status and "Nodes: 5 alive" in status, status
    kernel.ok("%cluster remove ssh-1 slurm-2")
    wait_until(lambda: not remote_nbcluster(machines) and not queued(first_jobs), timeout=15)

    cell = kernel.ok(
        "s = nc.cluster.add_nodes(backend='ssh', cpus=1, **SSH)\n"
        "b = nc.cluster.add_nodes(2, backend='slurm', cpus=1, **SLURM)\n"
        "later = nc.cluster.add_nodes(1, backend='slurm', cpus=1,\n"
        "                             **{**SLURM, 'sbatch_options': ['--begin=now+3600']})\n"
        "s.wait(60); b.wait(60)\n"
        "print(len(nc.nodes()), [j.handle for j in b.jobs + later.jobs])"
    )
    jobs = json.loads(cell.text().strip().splitlines()[-1].split(" ", 1)[1].replace("'", '"'))
    assert len(remote_nbcluster(machines)) >= 4
    assert [ln.split(" ")[1] for ln in queued(jobs[-1:])] == ["PENDING"]  # until its start time
    # No shutdown, no cancel: the nodes see to themselves, and the head (as it stops) to the
    # job still queued, which would otherwise start an hour later for a cluster that is gone.
    os.kill(kernel.pid, signal.SIGKILL)
    wait_until(
        lambda: not remote_nbcluster(machines) and not queued(jobs),
        timeout=15,
        message=lambda: "\n".join(remote_nbcluster(machines)) + str(queued(jobs)),
    )


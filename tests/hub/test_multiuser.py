"""Two real users on one JupyterHub host, each with their own nbcluster kernel and cluster.

Everything goes through the hub's proxy with each user's own hub token, as a browser would:
both servers and both kernels start at the same time, both clusters run tasks, and neither
user can read the other's session files, reach the other's cluster with a wrong or
borrowed token or with ``init("auto")``, or find the other's token on a command line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from hub.realhub import HubUser, RealHub, poll
from nbcluster.runtime.config import Config
from nbcluster.runtime.scheduling import limits

#: One cell run in each user's kernel: the cluster works, and where its files are.
WHO_AM_I = """
import getpass, json, os
import nbcluster as nc
from nbcluster.runtime.api import session as api

@nc.remote
def square(x):
    return x * x, getpass.getuser()

info = nc.init()
print(json.dumps({
    "results": nc.get([square.remote(i) for i in range(4)]),
    "address": info["address"],
    "session_dir": info["session_dir"],
    "user": getpass.getuser(),
    "title": str(info).splitlines()[0],
    "store": nc.nodes()[0]["ObjectStoreCapacity"],
}))
"""


@pytest.fixture(scope="module")
def two_users(hub: RealHub) -> Iterator[tuple[Any, Any]]:
    """alice and bob, each with a running server and an nbcluster kernel, started together."""
    alice, bob = (hub.user(n) for n in hub.settings["os_users"][:2])
    hub.spawn(alice, bob)
    kernels = {u.name: hub.start_kernel(u) for u in (alice, bob)}
    yield (alice, kernels[alice.name]), (bob, kernels[bob.name])
    for u in (alice, bob):
        hub.api("DELETE", f"{u.server}api/kernels/{kernels[u.name]}", u.token)
        hub.api("DELETE", f"/hub/api/users/{u.name}/server", u.token)


def _run(hub: RealHub, who: tuple[HubUser, str], code: str) -> Any:
    return hub.run(who[0], who[1], code).last_json()


def test_each_user_runs_their_own_cluster(hub: RealHub, two_users: Any) -> None:
    alice, bob = two_users
    seen = {u[0].name: _run(hub, u, WHO_AM_I) for u in (alice, bob)}
    for name, info in seen.items():
        assert info["user"] == name
        # the tasks ran in the user's own workers, under the user's own uid
        assert info["results"] == [[i * i, name] for i in range(4)]
        st = os.stat(info["session_dir"])
        assert st.st_uid == hub_uid(name), f"{info['session_dir']} is not {name}'s"
        assert st.st_mode & 0o077 == 0, oct(st.st_mode)
        # sized by the spawner's mem_limit (2G) and cpu_limit (2), not by the machine
        assert "2.0 GiB memory (MEM_LIMIT)" in info["title"], info["title"]
        if limits.detect(env={}, config=Config()).cpus.amount >= 2:  # else the machine's fewer
            assert "2 CPUs (CPU_LIMIT)" in info["title"], info["title"]
        assert info["store"] == int(2 * 2**30 * 0.3)
    assert seen[alice[0].name]["address"] != seen[bob[0].name]["address"]
    assert seen[alice[0].name]["session_dir"] != seen[bob[0].name]["session_dir"]


def hub_uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def _cluster_of(hub: RealHub, who: tuple[HubUser, str]) -> dict[str, Any]:
    info = _run(hub, who, "import json, nbcluster as nc; i = nc.init()\n"
                          "print(json.dumps({'address': i['address'], "
                          "'session_dir': i['session_dir']}))")  # fmt: skip
    token_file = os.path.join(info["session_dir"], "token")
    with open(token_file) as f:  # the test runs as root
        info["token"] = f.read().strip()
    info["token_file"] = token_file
    return info


def test_users_cannot_reach_each_others_cluster(hub: RealHub, two_users: Any) -> None:
    alice, bob = two_users
    a, b = _cluster_of(hub, alice), _cluster_of(hub, bob)
    probe = f"""
import json, os, subprocess, sys, psutil
out = {{}}
for path in {[a["token_file"], a["session_dir"]]!r}:
    try:
        open(path).read() if os.path.isfile(path) else os.listdir(path)
        out[path] = "readable"
    except OSError as e:
        out[path] = type(e).__name__
# alice's token on no command line bob can see
out["token_in_ps"] = any({a["token"]!r} in " ".join(p.info["cmdline"] or [])
                         for p in psutil.process_iter(["cmdline"]))
def attach(env):
    code = "import nbcluster as nc; nc.init(); print('ATTACHED', nc.nodes()[0]['Address'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, **env))
    return (r.stdout + r.stderr)[-600:]
out["wrong"] = attach({{"NBCLUSTER_ADDRESS": {a["address"]!r}, "NBCLUSTER_TOKEN": "0" * 64}})
out["own_token"] = attach({{"NBCLUSTER_ADDRESS": {a["address"]!r},
                           "NBCLUSTER_TOKEN": {b["token"]!r}}})
out["auto"] = attach({{"NBCLUSTER_ADDRESS": "auto"}})
print(json.dumps(out))
"""
    out = _run(hub, bob, probe)
    assert out[a["token_file"]] == "PermissionError", out
    assert out[a["session_dir"]] == "PermissionError", out
    assert out["token_in_ps"] is False
    for how in ("wrong", "own_token"):
        assert "AuthenticationError" in out[how], (how, out[how])
        assert "ATTACHED" not in out[how]
    # bob's init("auto") finds no cluster of alice's (bob's kernel cluster is not recorded)
    assert a["address"] not in out["auto"], out["auto"]
    assert "ATTACHED" not in out["auto"] or b["address"] in out["auto"], out["auto"]


def test_each_user_s_jupyter_lists_only_their_own_clusters(
    hub: RealHub, two_users: Any
) -> None:
    """``{base_url}nbcluster/`` (the jupyter-server extension) of each user's server."""
    alice, bob = two_users
    mine = {u[0].name: _cluster_of(hub, u)["address"] for u in (alice, bob)}
    for me, other in ((alice, bob), (bob, alice)):
        r = hub.api("GET", f"{me[0].server}nbcluster/api/clusters", me[0].token)
        assert r.status_code == 200, r.text
        listed = {c["address"] for c in r.json()["clusters"]}
        assert mine[me[0].name] in listed, (me[0].name, listed)
        assert mine[other[0].name] not in listed, (me[0].name, listed)
        # and the other user's server (with this user's token) is closed to them
        r = hub.api("GET", f"{other[0].server}nbcluster/api/clusters", me[0].token)
        assert r.status_code == 403, r.status_code


def test_a_second_kernel_gets_its_own_cluster_which_stops_with_it(
    hub: RealHub, two_users: Any, os_users: Any
) -> None:
    """Every process of a user's kernel cluster runs as that user, and goes with the kernel."""
    alice, _ = two_users
    first = _cluster_of(hub, alice)["address"]
    kid = hub.start_kernel(alice[0])
    second = hub.run(alice[0], kid, "import nbcluster as nc, json\n"
                                   "print(json.dumps(nc.init()['address']))").last_json()
    assert second != first

    uid = os_users.uid(alice[0].name)

    def heads() -> list[Any]:
        """alice's head processes (by command line or process title), not their children."""
        names = ("nbcluster.runtime.node.node_main", "nbcluster::head")
        found = [p for p in os_users.processes() if p.uids().real == uid
                 and any(name in " ".join(p.cmdline()) for name in names)]  # fmt: skip
        pids = {p.pid for p in found}
        return [p for p in found if p.ppid() not in pids]

    # her kernels' two heads: every process of a kernel's cluster runs as its user
    assert len(heads()) == 2
    r = hub.api("DELETE", f"{alice[0].server}api/kernels/{kid}", alice[0].token)
    assert r.status_code == 204, r.text
    poll(lambda: len(heads()) == 1, 30, "the second kernel's cluster stopping")

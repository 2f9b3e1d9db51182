"""One nbcluster cluster for a team, run by JupyterHub as its service ``nbcluster``.

The hub starts ``nbcluster start --head --jupyterhub`` itself (``c.JupyterHub.services``);
the spawner gives every server ``NBCLUSTER_ADDRESS``, and the users' kernels attach with
their own hub tokens: no cluster token is handed to anyone. Two users with the service's
access scope share the cluster, each seeing only their own work; a third user without the
scope is refused; quotas give clear errors. All through the hub's proxy, as a browser would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from hub.realhub import Cell, HubUser, RealHub, poll


def _open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def team(hub: RealHub) -> Iterator[dict[str, tuple[HubUser, str]]]:
    """carol, dave (both may use the cluster) and erin (may not), each with a kernel."""
    shared = hub.shared  # type: ignore[attr-defined]
    poll(lambda: _open(shared.address), 60, f"the nbcluster service at {shared.address}")
    users = [hub.user(n) for n in (*shared.users, shared.outsider)]
    hub.spawn(*users)
    kernels = {u.name: (u, hub.start_kernel(u)) for u in users}
    yield kernels
    for u, kid in kernels.values():
        hub.api("DELETE", f"{u.server}api/kernels/{kid}", u.token)
        hub.api("DELETE", f"/hub/api/users/{u.name}/server", u.token)


def _run(hub: RealHub, who: tuple[HubUser, str], code: str) -> Cell:
    return hub.run(who[0], who[1], code)


def _json(hub: RealHub, who: tuple[HubUser, str], code: str) -> Any:
    return _run(hub, who, code).last_json()


JOBS = """
import json, os
import nbcluster as nc
from nbcluster.runtime.ownership.object_ref import get_core
from nbcluster.util import state

@nc.remote
def {name}_job(x):
    return x + 1

results = nc.get([{name}_job.remote(i) for i in range(3)])
tasks = state.list_tasks(limit=None)
print(json.dumps({{
    "results": results,
    "address": nc.nodes()[0]["Address"],
    "task_names": sorted({{t.name for t in tasks}}),
    "token_env": "NBCLUSTER_TOKEN" in os.environ,
    "client_mode": get_core().client_mode,
}}))
"""


def test_users_attach_with_their_hub_tokens_and_see_only_their_work(
    hub: RealHub, team: dict[str, Any]
) -> None:
    shared = hub.shared  # type: ignore[attr-defined]
    seen = {}
    for name in shared.users:
        short = name.rstrip("0123456789")
        seen[short] = _json(hub, team[name], JOBS.format(name=short))
    for short, got in seen.items():
        assert got["results"] == [1, 2, 3]
        assert got["address"] == shared.address  # the service's cluster, not one of their own
        assert got["token_env"] is False  # no cluster token was handed to anyone
        assert got["client_mode"] is True  # the service's node is not the user's to map
        assert got["task_names"] == [f"{short}_job"], got  # only their own tasks


def test_an_admin_sees_everyones_work(hub: RealHub, team: dict[str, Any]) -> None:
    """(After the first test, whose users ran carol_job and dave_job.)"""
    shared = hub.shared  # type: ignore[attr-defined]
    admin = hub.user(shared.admin)  # a token of the admin's, used by a driver in carol's server
    code = f"""
import json, os, subprocess, sys
probe = ("import json, nbcluster as nc; from nbcluster.util import state; nc.init(); "
         "print(json.dumps(sorted({{t.name for t in state.list_tasks(limit=None)}})))")
env = dict(os.environ, JUPYTERHUB_API_TOKEN={admin.token!r})
r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                   env=env)
print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else json.dumps(r.stderr[-800:]))
"""
    names = _json(hub, team[shared.users[0]], code)
    assert {"carol_job", "dave_job"} <= set(names), names


DASHBOARD = "/services/nbcluster/"


def test_the_dashboard_needs_hub_login_and_shows_each_user_their_own_work(
    hub: RealHub, team: dict[str, Any]
) -> None:
    """(After the first test, whose users ran carol_job and dave_job.)"""
    shared = hub.shared  # type: ignore[attr-defined]
    r = requests.get(hub.url + DASHBOARD, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and "/hub/" in r.headers["Location"], (r.status_code, r.headers)
    carol = hub.user(shared.users[0])
    r = hub.api("GET", f"{DASHBOARD}nbcluster/api/clusters", carol.token)
    assert r.status_code == 200, r.text
    (cluster,) = r.json()["clusters"]
    assert cluster["address"] == shared.address
    tasks = f"{DASHBOARD}nbcluster/api/clusters/{cluster['id']}/tasks?limit=1000"
    seen = {}
    for name in (*shared.users, shared.admin):
        r = hub.api("GET", tasks, hub.user(name).token)
        assert r.status_code == 200, r.text
        seen[name] = {t["name"] for t in r.json()["items"]}
    assert seen[shared.users[0]] == {"carol_job"}, seen
    assert seen[shared.users[1]] == {"dave_job"}, seen
    assert {"carol_job", "dave_job"} <= seen[shared.admin], seen
    overview = hub.api("GET", f"{DASHBOARD}nbcluster/api/clusters/{cluster['id']}/overview",
                       carol.token).json()  # fmt: skip
    assert overview["tasks"]["total"] == 3 and overview["tasks"]["by_state"] == {"FINISHED": 3}
    r = hub.api("GET", tasks, hub.user(shared.outsider).token)
    assert r.status_code == 403, r.status_code

    # A browser: log in at the hub, then the Hub's OAuth brings it back to the page.
    s = requests.Session()
    s.get(hub.url + "/hub/login", timeout=30)
    r = s.post(hub.url + "/hub/login", allow_redirects=False, timeout=30,
               data={"username": carol.name, "password": hub.password,
                     "_xsrf": s.cookies["_xsrf"]})  # fmt: skip
    assert r.status_code == 302, r.status_code
    r = s.get(hub.url + DASHBOARD, timeout=30)
    assert r.status_code == 200 and '"server": "jupyterhub"' in r.text, (r.status_code, r.text)
    r = s.get(hub.url + tasks, timeout=30)
    assert {t["name"] for t in r.json()["items"]} == {"carol_job"}


@pytest.fixture
def browser_page(tmp_path: Any) -> Iterator[Any]:
    """A page in Debian's headless Chromium (the browser tests' settings)."""
    from browser.lab import CHROMIUM, CHROMIUM_FLAGS, browser_env, have_chromium
    from parts import missing

    if not have_chromium():
        missing("chromium", f"{CHROMIUM} not found; scripts/test-parts.sh installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright", "pip install -e '.[test]' installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_FLAGS, env=browser_env(tmp_path))  # fmt: skip
        try:
            yield browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
        finally:
            browser.close()


def test_the_dashboard_in_a_browser_shows_the_user_their_own_work(
    hub: RealHub, team: dict[str, Any], browser_page: Any
) -> None:
    """(After the first test, whose users ran carol_job and dave_job.)"""
    from browser.lab import expect

    page = browser_page
    carol = hub.shared.users[0]  # type: ignore[attr-defined]
    page.goto(hub.url + DASHBOARD)  # not logged in: the hub's login page
    page.fill("#username_input", carol)
    page.fill("#password_input", hub.password)
    page.click("#login_submit")  # ...then the Hub's OAuth brings the browser back
    expect(page.locator("[data-state-count=FINISHED]")).to_have_text("3", timeout=30_000)
    assert page.url.startswith(hub.url + DASHBOARD), page.url
    page.locator("[data-tab=tasks]").click()
    names = page.locator("[data-col=name]")
    expect(names.first).to_have_text("carol_job", timeout=30_000)
    assert set(names.all_inner_texts()) <= {"carol_job", "name", "Name"}, names.all_inner_texts()


def test_a_user_without_the_scope_is_refused(hub: RealHub, team: dict[str, Any]) -> None:
    shared = hub.shared  # type: ignore[attr-defined]
    cell = _run(hub, team[shared.outsider], "import nbcluster as nc\nnc.get(nc.put(1))")
    assert cell.status == "error"
    shown = cell.stderr + cell.error
    assert f"JupyterHub user {shared.outsider!r} may not use this cluster" in shown, shown
    assert "access:services!service=nbcluster" in shown, shown


def test_a_wrong_hub_token_is_refused_and_the_cluster_runs_on(
    hub: RealHub, team: dict[str, Any]
) -> None:
    shared = hub.shared  # type: ignore[attr-defined]
    code = """
import json, os, subprocess, sys
probe = "import nbcluster as nc; nc.init()"
env = dict(os.environ, JUPYTERHUB_API_TOKEN="0" * 32)
r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                   env=env)
print(json.dumps(r.stderr.strip().splitlines()[-1]))
"""
    last = _json(hub, team[shared.users[0]], code)
    assert "AuthenticationError" in last and "does not accept this API token" in last, last
    assert _json(hub, team[shared.users[1]], "import nbcluster as nc, json\n"
                 "print(json.dumps(nc.get(nc.put(41)) + 1))") == 42  # fmt: skip


def test_users_make_only_the_requests_a_driver_makes(
    hub: RealHub, team: dict[str, Any]
) -> None:
    """A join token would buy the cluster token: users may not ask for one."""
    carol = team[hub.shared.users[0]]  # type: ignore[attr-defined]
    got = _json(hub, carol, """
import json
from nbcluster.runtime.ownership.object_ref import get_core
try:
    get_core().head_call("create_join_token", "mine", 1, timeout=30)
    print(json.dumps("granted"))
except PermissionError as e:
    print(json.dumps(str(e)))
""")
    assert got == "create_join_token is for the cluster's own processes, not users"
    # In client mode a user reads and writes the store's arena only where their objects are.
    got = _json(hub, carol, """
import json
from nbcluster.runtime.ownership.object_ref import get_core
core = get_core()
try:
    core.agent_call("store_read_range", core.store.capacity - 64, 64, timeout=30)
    print(json.dumps("read"))
except PermissionError as e:
    print(json.dumps(str(e)))
""")
    assert got == "that part of the object store is not an object you opened"


ACTORS = """
import json
import nbcluster as nc

@nc.remote
class Counter:
    def __init__(self, start):
        self.n = start
    def incr(self):
        self.n += 1
        return self.n

mine = Counter.options(name="counter").remote({start})
got = nc.get(nc.get_actor("counter").incr.remote())
print(json.dumps({{"value": got, "id": mine._actor_id.hex()}}))
"""


def test_named_actors_are_per_user_and_only_their_owner_kills_them(
    hub: RealHub, team: dict[str, Any]
) -> None:
    carol, dave = (team[n] for n in hub.shared.users)  # type: ignore[attr-defined]
    c = _json(hub, carol, ACTORS.format(start=100))
    d = _json(hub, dave, ACTORS.format(start=200))
    assert (c["value"], d["value"]) == (101, 201)  # two actors named "counter"
    kill = f"""
import json
from nbcluster.runtime.ownership.object_ref import get_core
try:
    get_core().head_call("kill_actor", bytes.fromhex({c["id"]!r}), True, timeout=30)
    print(json.dumps("killed"))
except PermissionError as e:
    print(json.dumps(str(e)))
"""
    assert _json(hub, dave, kill) == "the actor belongs to another user"
    again = "import json, nbcluster as nc\nprint(json.dumps(nc.get(mine.incr.remote())))"
    assert _json(hub, carol, again) == 102  # still alive


def test_a_shared_namespace_is_common_to_all(hub: RealHub, team: dict[str, Any]) -> None:
    carol, dave = (team[n] for n in hub.shared.users)  # type: ignore[attr-defined]
    _json(hub, carol, """
import json, nbcluster as nc
@nc.remote
class Board:
    def __init__(self):
        self.notes = []
    def add(self, note):
        self.notes.append(note)
        return list(self.notes)
board = Board.options(name="board", namespace="team", lifetime="detached").remote()
print(json.dumps(nc.get(board.add.remote("from carol"))))
""")
    got = _json(hub, dave, """
import json, nbcluster as nc
print(json.dumps(nc.get(nc.get_actor("board", namespace="team").add.remote("from dave"))))
""")
    assert got == ["from carol", "from dave"]


def test_quotas_give_clear_errors(hub: RealHub, team: dict[str, Any]) -> None:
    shared = hub.shared  # type: ignore[attr-defined]
    carol = team[shared.users[0]]
    got = _json(hub, carol, """
import json, numpy as np, nbcluster as nc
out = {}
@nc.remote(num_cpus=2)
def big():
    return 1
try:
    nc.get(big.remote(), timeout=60)
except Exception as e:
    out["cpus"] = f"{type(e).__name__}: {e}"
try:
    nc.put(np.zeros(16 * 2**20, dtype=np.uint8))
except Exception as e:
    out["store"] = f"{type(e).__name__}: {e}"
@nc.remote(num_cpus=2)
class Big:
    pass
try:
    Big.remote()
except Exception as e:
    out["actor"] = f"{type(e).__name__}: {e}"
out["after"] = nc.get(nc.remote(lambda: 7).remote())
print(json.dumps(out))
""")
    assert "may use 1 CPUs at once; this task asks for 2" in got["cpus"], got
    assert got["store"].startswith("QuotaExceededError"), got
    assert "may keep 8.0 MiB in the object store" in got["store"], got
    assert got["actor"].startswith("QuotaExceededError"), got
    assert "their actors hold 0 and this one asks for 2" in got["actor"], got
    assert got["after"] == 7  # within quota, work goes on


def test_a_worker_node_joins_and_runs_the_users_tasks(
    hub: RealHub, team: dict[str, Any], tmp_path: Any
) -> None:
    """A node started with --jupyterhub on another "machine" takes users' work too."""
    shared = hub.shared  # type: ignore[attr-defined]
    (token_file,) = shared.service_dir.glob("**/session_*/token")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBCLUSTER_")}
    env.update(NBCLUSTER_TOKEN=token_file.read_text().strip(),
               NBCLUSTER_TEMP_DIR=str(tmp_path / "node"))  # fmt: skip
    log = tmp_path / "node.log"
    with open(log, "wb") as out:
        node = subprocess.Popen(
            [sys.executable, "-m", "nbcluster", "start", "--address", shared.address,
             "--jupyterhub", "--num-cpus", "1", "--resources", '{"extra": 1}', "--block"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    try:
        got = _json(hub, team[shared.users[0]], """
import json, time, nbcluster as nc
deadline = time.monotonic() + 60
while len([n for n in nc.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
    time.sleep(0.1)
@nc.remote(resources={"extra": 1})
def where():
    return nc.get_runtime_context().get_node_id()
extra = [n["NodeID"] for n in nc.nodes() if n["Alive"] and "extra" in n["Resources"]]
print(json.dumps({"ran_on": nc.get(where.remote(), timeout=60), "extra": extra}))
""")
        assert got["extra"] and got["ran_on"] == got["extra"][0], (got, log.read_text()[-2000:])
    finally:
        node.terminate()
        node.wait(30)

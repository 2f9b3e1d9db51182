"""The dashboard the head serves itself: login links, the token, the JSON API, live events.

A real cluster (``nc.init(dashboard=True)`` or ``nbcluster start --head --dashboard-port``)
and real HTTP and WebSocket clients: what a browser outside Jupyter, or a script holding
the token, gets.
"""

from __future__ import annotations

import os
import re
import socket
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import CliCluster, attach, poll
from conftest import wait_for_file, wait_until
from dashboard_helpers import EventSocket, Http, ws_status

import nbcluster as nc
from nbcluster.runtime.api import session as runtime_api


def fails(msg: str) -> None:
    raise ValueError(msg)


def square(x: int) -> int:
    return x * x


def held(path: str) -> str:
    wait_for_file(path)
    return "released"


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def logged_in(url: str) -> tuple[Http, str]:
    """A browser that opened a login link; and the cluster id it was sent to."""
    browser = Http(_origin(url))
    code, _, body, final = browser.request(url)
    assert code == 200, body[:300]
    cluster_id = re.search(r"/nbcluster/clusters/([0-9a-f]+)/$", final)
    assert cluster_id, final
    return browser, cluster_id.group(1)


def test_a_login_link_works_once_and_the_token_is_needed_for_everything(
    make_cluster: Any,
) -> None:
    make_cluster(num_cpus=2, dashboard=True)
    url = nc.dashboard_url()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/nbcluster/login\?token=[\w-]+", url), url
    origin = _origin(url)
    token = runtime_api._driver.token  # type: ignore[union-attr]
    assert token not in url

    browser, cluster_id = logged_in(url)
    code, _, page, _ = browser.request(f"/nbcluster/clusters/{cluster_id}/")
    assert code == 200 and b'id="nbcluster-config"' in page
    assert token.encode() not in page  # the page never carries the token
    assert browser.get_json("/nbcluster/api/clusters")["clusters"][0]["id"] == cluster_id

    # The link is spent: the browser that used it may follow it again (a link in a notebook
    # is clicked more than once), a second browser is refused and sees how to log in.
    code, _, _, final = browser.request(url)
    assert code == 200 and final.endswith(f"/nbcluster/clusters/{cluster_id}/")
    stranger = Http(origin)
    code, _, body, _ = stranger.request(url)
    assert code == 403 and b"nbcluster dashboard" in body
    for path in ("/", "/nbcluster/", f"/nbcluster/clusters/{cluster_id}/",
                 "/nbcluster/static/dashboard.js", "/nbcluster/api/clusters",
                 f"/nbcluster/api/clusters/{cluster_id}/tasks", "/metrics"):  # fmt: skip
        code, _, body, _ = stranger.request(path)
        assert code == 403, (path, code, body[:200])
        assert token.encode() not in body
    ws = f"ws://{origin[7:]}/nbcluster/api/clusters/{cluster_id}/events"
    assert ws_status(ws, {}) == 403
    assert ws_status(ws, {"Authorization": "token not-the-token"}) == 403
    assert ws_status(ws, {"Cookie": browser.cookie_header()}) == 101

    # A script holding the cluster token needs no cookie (Prometheus too).
    script = Http(origin, {"Authorization": f"token {token}"})
    assert script.get_json("/nbcluster/api/clusters")["clusters"][0]["state"] == "running"
    code, _, text, _ = Http(origin, {"Authorization": f"Bearer {token}"}).request("/metrics")
    assert code == 200 and b"nbcluster_tasks" in text
    wrong = Http(origin, {"Authorization": "token wrong"})
    assert wrong.request("/nbcluster/api/clusters")[0] == 403


def test_the_api_reads_tasks_with_their_tracebacks_and_says_what_is_wrong(
    make_cluster: Any,
) -> None:
    make_cluster(num_cpus=2, dashboard=True)
    browser, cid = logged_in(nc.dashboard_url())
    ok = [nc.remote(square).remote(i) for i in range(5)]
    bad = nc.remote(fails).remote("no such thing")
    assert nc.get(ok) == [0, 1, 4, 9, 16]
    with pytest.raises(ValueError):
        nc.get(bad)
    api = f"/nbcluster/api/clusters/{cid}"
    failed = wait_until(lambda: browser.get_json(f"{api}/tasks?state=FAILED")["items"])
    assert len(failed) == 1 and failed[0]["name"] == "fails"
    assert failed[0]["error_type"] == "ValueError"
    assert "no such thing" in failed[0]["error_message"]
    assert "Traceback" in failed[0]["error_message"]  # the remote traceback, whole
    task = browser.get_json(f"{api}/tasks/{bad.task_id().hex()}")
    assert task["state"] == "FAILED" and task["task_id"] == bad.task_id().hex()

    listed = browser.get_json(f"{api}/tasks?name=square&limit=2")
    assert len(listed["items"]) == 2 and listed["total"] == 5
    # Workers report their tasks' ends on their own clock (within a flush interval).
    wait_until(lambda: browser.get_json(f"{api}/tasks?filter=state!%3DFINISHED")["total"] == 1)
    summary = browser.get_json(f"{api}/summary")["cluster"]["summary"]
    assert summary["square"]["state_counts"] == {"FINISHED": 5}
    overview = browser.get_json(f"{api}/overview")
    assert overview["tasks"]["by_state"]["FAILED"] == 1
    assert overview["recent_errors"][0]["task_id"] == bad.task_id().hex()
    assert [n["state"] for n in overview["nodes"]] == ["ALIVE"]
    rows = browser.get_json(f"{api}/timeline")["rows"]
    assert {r[0] for r in rows} >= {"square", "fails"} and all(r[4] <= r[5] for r in rows)
    trace = browser.get_json(f"{api}/timeline?format=chrome")
    assert sum(1 for e in trace if e["ph"] == "X") >= 6
    assert browser.get_json(f"{api}/nodes")["items"][0]["resources_total"]["CPU"] == 2
    assert browser.get_json(f"{api}/workers?worker_type=DRIVER")["total"] == 1
    history = wait_until(
        lambda: next(iter(browser.get_json(f"{api}/metrics")["nodes"].values()), {}).get("time")
    )
    assert len(history) >= 1

    # Bad input: a clear answer, and the cluster carries on.
    for path, status in (
        ("/nbcluster/api/clusters/0123abcd", 404),
        (f"{api}/tasks/ffffffffffffffffffffffffffffffff", 404),
        (f"{api}/tasks/not-hex", 404),
        (f"{api}/nonsense", 404),
        (f"{api}/tasks?limit=many", 400),
        (f"{api}/tasks?filter=nokey", 400),
    ):
        code, headers, body, _ = browser.request(path)
        assert code == status, (path, code, body)
        assert headers["Content-Type"].startswith("application/json") and b"message" in body
    assert nc.get(nc.remote(square).remote(7)) == 49


def test_the_event_socket_streams_a_task_live(make_cluster: Any, gate: Path) -> None:
    make_cluster(num_cpus=2, dashboard=True)
    browser, cid = logged_in(nc.dashboard_url())
    origin = browser.base[len("http://") :]
    feed = EventSocket(
        f"ws://{origin}/nbcluster/api/clusters/{cid}/events?types=TASK_",
        {"Cookie": browser.cookie_header()},
    )
    try:
        hello = feed.read()
        assert hello["subscribed"]["next_seq"] >= 1
        ref = nc.remote(held).remote(str(gate))
        tid = ref.task_id().hex()

        def mine(events: list[dict[str, Any]]) -> set[str]:
            return {e["type"] for e in events if e["data"].get("task_id") == tid}

        seen = feed.events_until(lambda evs: "TASK_RUNNING" in mine(evs))
        assert all(e["type"].startswith("TASK_") for e in seen)  # the filter holds
        gate.touch()
        assert nc.get(ref) == "released"
        feed.events_until(lambda evs: "TASK_FINISHED" in mine(seen + evs))
    finally:
        feed.close()


def to_stderr(marker: str) -> str:
    """Write past the task's output capture, to the worker's own stderr: the node's log."""
    os.write(2, f"{marker}\n".encode())
    return socket.gethostname()


@pytest.mark.slow
def test_each_nodes_log_is_read_through_the_head(tmp_path: Path) -> None:
    from nbcluster.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cluster = CliCluster(tmp_path)
    try:
        cluster.start_head("--num-cpus", "1", "--dashboard-port", "0")
        cluster.join("node2", "--num-cpus", "1")
        attach(cluster.head.address, cluster.token)
        script = Http("http://x", {"Authorization": f"token {cluster.token}"})
        info = _dash_info()
        script.base = f"http://{info['dashboard']}"
        cid = info["cluster_id"]
        nodes = wait_until(lambda: len(x := nc.nodes()) == 2 and x)
        other = next(n["NodeID"] for n in nodes if n["NodeID"] != cid)
        marker = f"only-in-node2-{uuid.uuid4().hex}"
        on_node2 = NodeAffinitySchedulingStrategy(other, soft=False)
        nc.get(nc.remote(to_stderr).options(scheduling_strategy=on_node2).remote(marker))
        api = f"/nbcluster/api/clusters/{cid}/log"
        got = wait_until(lambda: marker in (x := script.get_json(f"{api}?node={other}"))["text"]
                         and x)  # fmt: skip
        assert got["size"] >= len(marker) and got["next"] == got["size"]
        assert marker not in script.get_json(api)["text"]  # the head's own log is another
        tail = script.get_json(f"{api}?node={other}&offset={got['next']}")
        assert tail["text"] == "" and tail["offset"] == got["next"]
        code, _, body, _ = script.request(f"{api}?node=nosuchnode")
        assert code == 404 and b"no node" in body
    finally:
        nc.shutdown()
        cluster.close()


def _dash_info() -> dict[str, Any]:
    core = runtime_api._driver
    assert core is not None
    nc.dashboard_url()  # the port is open (it was asked for at start anyway)
    return dict(core.head_call("dash_info", timeout=30))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_standalone_head_serves_its_dashboard_and_stops_from_it(tmp_path: Path) -> None:
    cluster = CliCluster(tmp_path)
    try:
        port = _free_port()
        head = cluster.start_head("--num-cpus", "1", "--dashboard-port", str(port))
        first = poll(lambda: re.search(r"dashboard \(one-time login link\): (\S+)",
                                       head.output()), 30, head.output)  # fmt: skip
        assert first.group(1).startswith(f"http://127.0.0.1:{port}/nbcluster/login?token=")
        printed = cluster.cli("dashboard", "--address", head.address,
                              NBCLUSTER_TOKEN=cluster.token)  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        link = printed.stdout.strip().splitlines()[-1]
        assert link.startswith(f"http://127.0.0.1:{port}/nbcluster/login?token=")
        assert link != first.group(1)
        browser, cid = logged_in(link)
        info = browser.get_json(f"/nbcluster/api/clusters/{cid}")
        assert info["kind"] == "standalone" and info["state"] == "running"
        # Changing something needs the XSRF token as well as the cookie.
        browser.post_json(f"/nbcluster/api/clusters/{cid}/stop", status=403, xsrf=False)
        assert browser.post_json(f"/nbcluster/api/clusters/{cid}/stop")["stopped"] is True
        poll(head.all_gone, 20, head.left)
    finally:
        for node in cluster.nodes:
            node.kill()


def test_a_busy_dashboard_port_fails_the_start_and_says_so(tmp_path: Path) -> None:
    cluster = CliCluster(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        node = cluster.launch("head", ["--head", "--dashboard-port", str(port)])
        try:
            code = node.cli.wait(30)
        finally:
            node.kill()
    assert code != 0
    assert f"the dashboard cannot listen on 127.0.0.1:{port}" in node.output()

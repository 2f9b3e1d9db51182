"""The jupyter-server extension: every cluster of the server's user, behind Jupyter's login.

A real Jupyter server (pytest-jupyter, with its escaped base URL ``/a%40b/``), real nbcluster
kernels started through the server's own sessions API, and a standalone cluster started
with the CLI: the extension finds them through their session records and reads them over the
authenticated protocol, as it would in a user's JupyterLab.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import CliCluster
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from nbcluster.runtime.config import CONFIG

pytest_plugins = ["pytest_jupyter.jupyter_server"]

pytestmark = pytest.mark.slow


@pytest.fixture
def jp_server_config(session_dir: Path) -> dict[str, Any]:
    """The extension enabled, in a server that starts after the session files' place is set
    (its kernels inherit its environment)."""
    return {"ServerApp": {"jpserver_extensions": {"nbcluster.extension": True}}}


@pytest.fixture
def session_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own session files: its kernels write their records there, and the
    extension (in this process) reads them from there."""
    path = tmp_path / "nbcluster"
    monkeypatch.setenv("NBCLUSTER_TEMP_DIR", str(path))
    monkeypatch.setattr(CONFIG, "temp_dir", str(path))
    monkeypatch.setenv("NBCLUSTER_JUPYTER_BASE_URL", "")  # restored after the test
    return path


@pytest.fixture
def nbcluster_kernelspec(jp_data_dir: Path) -> None:
    """The nbcluster kernelspec in the test's Jupyter data dir, running this interpreter."""
    spec = jp_data_dir / "kernels" / "nbcluster"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "nbcluster.kernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (nbcluster)", "language": "python",
    }))  # fmt: skip


async def until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    """Await ``predicate()`` (sync or async) until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or predicate}")
        await asyncio.sleep(0.1)


class Lab:
    """What the tests do through the server: start notebook kernels, run cells, call the API."""

    def __init__(self, fetch: Any, ws_fetch: Any, serverapp: Any) -> None:
        self.fetch = fetch
        self.ws_fetch = ws_fetch
        self.serverapp = serverapp
        self.clients: list[Any] = []

    async def api(self, *parts: str, method: str = "GET", **kwargs: Any) -> Any:
        body = "" if method == "POST" else None
        r = await self.fetch("nbcluster", "api", "clusters", *parts, method=method, body=body,
                             **kwargs)  # fmt: skip
        return json.loads(r.body)

    async def status(self, *parts: str, method: str = "GET", **kwargs: Any) -> int:
        try:
            await self.fetch(*parts, method=method, body="" if method == "POST" else None,
                             **kwargs)  # fmt: skip
        except HTTPClientError as e:
            return int(e.code)
        return 200

    async def open_notebook(self, path: str) -> str:
        """Open a notebook with the nbcluster kernel, as JupyterLab does; its kernel id."""
        r = await self.fetch("api", "sessions", method="POST", body=json.dumps(
            {"path": path, "type": "notebook", "name": path, "kernel": {"name": "nbcluster"}}
        ))  # fmt: skip
        return str(json.loads(r.body)["kernel"]["id"])

    async def run(self, kernel_id: str, code: str, timeout: float = 60) -> list[Any]:
        """Run a cell in the kernel; its output messages (fails if the cell raised)."""
        km = self.serverapp.kernel_manager.get_kernel(kernel_id)
        kc = km.client()
        kc.start_channels()
        self.clients.append(kc)
        await kc.wait_for_ready(timeout=60)
        outputs: list[Any] = []
        reply = await kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", (reply["content"], outputs)
        return outputs

    async def cluster_of(self, kernel_id: str) -> dict[str, Any]:
        async def find() -> Any:
            for c in (await self.api())["clusters"]:
                if c["kernel_id"] == kernel_id and c["state"] == "running":
                    return c
            return None

        return await until(find, 60, f"the cluster of kernel {kernel_id}")  # type: ignore[no-any-return]

    def close(self) -> None:
        for kc in self.clients:
            kc.stop_channels()


@pytest.fixture
def lab(
    jp_fetch: Any, jp_ws_fetch: Any, jp_serverapp: Any, session_dir: Path,
    nbcluster_kernelspec: None, jp_root_dir: Path, jp_asyncio_loop: Any,
) -> Iterator[Lab]:  # fmt: skip
    (jp_root_dir / "work").mkdir()
    the_lab = Lab(jp_fetch, jp_ws_fetch, jp_serverapp)
    yield the_lab
    the_lab.close()  # kernels (and their clusters) stop before the server does
    jp_asyncio_loop.run_until_complete(jp_serverapp.kernel_manager.shutdown_all(now=True))


async def test_a_notebooks_cluster_is_listed_read_and_streamed(lab: Lab, jp_base_url: str) -> None:
    kid = await lab.open_notebook("work/analysis.ipynb")
    cluster = await lab.cluster_of(kid)
    assert cluster["kind"] == "kernel" and cluster["notebook_path"] == "work/analysis.ipynb"
    assert cluster["kernel_state"] in ("idle", "busy", "starting")
    assert cluster["resources"]["CPU"] >= 1 and cluster["nodes"] == 1
    cid = cluster["id"]
    assert cluster["dashboard_url"] == f"{jp_base_url}nbcluster/clusters/{cid}/"

    # The kernel's own link names the same page (the extension told it Jupyter's base URL).
    out = await lab.run(kid, "import nbcluster as nc\nprint(nc.dashboard_url())")
    printed = "".join(m["content"].get("text", "") for m in out)
    assert printed.strip() == f"{jp_base_url}nbcluster/clusters/{cid}/"
    # ...and so does what nc.init() displays.
    shown = await lab.run(kid, "nc.init()")
    html = next(m["content"]["data"]["text/html"] for m in shown
                if m["msg_type"] == "execute_result")  # fmt: skip
    assert f"href='{jp_base_url}nbcluster/clusters/{cid}/'" in html

    ws = await lab.ws_fetch("nbcluster", "api", "clusters", cid, "events",
                            params={"types": "TASK_"})  # fmt: skip
    try:
        hello = json.loads(await ws.read_message())
        assert "subscribed" in hello
        await lab.run(kid, (
            "@nc.remote\ndef broken(x):\n    raise KeyError(f'missing {x}')\n"
            "ref = broken.remote('page')\n"
            "try:\n    nc.get(ref)\nexcept KeyError:\n    print('raised')\n"
        ))  # fmt: skip
        seen: list[dict[str, Any]] = []

        async def failed_seen() -> bool:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 30))
            seen.extend(msg if isinstance(msg, list) else [])
            return any(e["type"] == "TASK_FAILED" for e in seen)

        await until(failed_seen, 30, "a TASK_FAILED event on the socket")
    finally:
        ws.close()
    failed = await lab.api(cid, "tasks", params={"state": "FAILED"})
    assert failed["total"] == 1
    task = failed["items"][0]
    assert task["name"] == "broken" and "missing page" in task["error_message"]
    detail = await lab.api(cid, "tasks", task["task_id"])
    assert "Traceback" in detail["error_message"]
    overview = await lab.api(cid, "overview")
    assert overview["tasks"]["by_state"]["FAILED"] == 1
    # The cell that launched it: its tasks are tagged with the cell's request id.
    cells = (await lab.api(cid, "cells"))["cells"]
    mine = [c for c in cells if c["tag"] == task["tag"]]
    assert len(mine) == 1 and mine[0]["by_state"] == {"FAILED": 1}
    assert mine[0]["error"]["task_id"] == task["task_id"]
    same_cell = await lab.api(cid, "tasks", params={"tag": task["tag"]})
    assert [t["task_id"] for t in same_cell["items"]] == [task["task_id"]]

    # Pages and assets are served under the escaped base URL, with the base in the page.
    page = await lab.fetch("nbcluster", "clusters", cid, "")
    assert f'"baseUrl": "{jp_base_url}"'.encode() in page.body
    assert f'src="{jp_base_url}nbcluster/static/dashboard.js'.encode() in page.body
    assert (await lab.fetch("nbcluster", "static", "dashboard.js")).code == 200

    # A wrong id is 404; a wrong kind of record too.
    assert await lab.status("nbcluster", "api", "clusters", "feedbeef") == 404
    assert await lab.status("nbcluster", "api", "clusters", cid, "teapots") == 404


async def test_nothing_is_served_without_jupyters_login(
    lab: Lab, jp_base_url: str, jp_http_port: int
) -> None:
    kid = await lab.open_notebook("secret.ipynb")
    cid = (await lab.cluster_of(kid))["id"]
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{jp_http_port}{jp_base_url}nbcluster"
    for path, method in (
        ("/api/clusters", "GET"), (f"/api/clusters/{cid}", "GET"),
        (f"/api/clusters/{cid}/tasks", "GET"), (f"/api/clusters/{cid}/stop", "POST"),
        ("/metrics", "GET"), ("/static/dashboard.js", "GET"), ("/", "GET"),
        (f"/clusters/{cid}/", "GET"),
    ):  # fmt: skip
        try:
            r = await client.fetch(base + path, method=method, raise_error=False,
                                   body="" if method == "POST" else None,
                                   follow_redirects=False)  # fmt: skip
            code = r.code
        except HTTPClientError as e:
            code = e.code
        # REST: 403; pages and their assets: a redirect to Jupyter's login page.
        page = path in ("/", f"/clusters/{cid}/", "/static/dashboard.js")
        assert code == (302 if page else 403), (path, code)
        if page:
            assert "/login" in r.headers["Location"], r.headers
    with pytest.raises(HTTPClientError) as refused:
        await lab.ws_fetch("nbcluster", "api", "clusters", cid, "events",
                           headers={"Authorization": ""})  # fmt: skip
    assert refused.value.code == 403
    # ...and the cluster did not notice.
    assert (await lab.cluster_of(kid))["state"] == "running"


async def test_stopping_a_notebooks_cluster_restarts_its_kernel(lab: Lab) -> None:
    kid = await lab.open_notebook("restart-me.ipynb")
    before = await lab.cluster_of(kid)
    stopped = await lab.api(before["id"], "stop", method="POST")
    assert stopped == {"id": before["id"], "stopped": True, "restarted_kernel": kid}

    async def gone() -> bool:
        listed = {c["id"]: c for c in (await lab.api())["clusters"]}
        return listed.get(before["id"], {}).get("state") == "gone"

    await until(gone, 60, "the old cluster shows as gone")
    after = await lab.cluster_of(kid)  # the restarted kernel started a new one
    assert after["id"] != before["id"]
    body = await lab.fetch("nbcluster", "api", "clusters", before["id"], "tasks",
                           raise_error=False)  # fmt: skip
    assert body.code == 410 and json.loads(body.body)["state"] == "gone"


async def test_a_standalone_cluster_is_listed_and_stopped(
    lab: Lab, tmp_path: Path, session_dir: Path
) -> None:
    (tmp_path / "cli").mkdir()
    cluster = CliCluster(tmp_path / "cli")
    cluster.temp_dir = session_dir
    cluster.env["NBCLUSTER_TEMP_DIR"] = str(session_dir)
    head = await asyncio.get_running_loop().run_in_executor(
        None, lambda: cluster.start_head("--num-cpus", "1")
    )
    try:
        async def standalone() -> Any:
            found = [c for c in (await lab.api())["clusters"] if c["kind"] == "standalone"]
            return found and found[0]["state"] == "running" and found[0]

        entry = await until(standalone, 30, "the standalone cluster")
        assert entry["address"] == head.address and entry["kernel_id"] is None
        await lab.api(entry["id"], "stop", method="POST")

        async def now_gone() -> bool:
            listed = {c["id"]: c for c in (await lab.api())["clusters"]}
            return listed[entry["id"]]["state"] == "gone"

        await until(now_gone, 30, "the stopped cluster shows as gone")
    finally:
        for node in cluster.nodes:
            node.kill()


#: A server speaking a later nbcluster handshake, as a kernel with another nbcluster would.
OTHER_PROTOCOL = r"""
import os, socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"NBC9" + os.urandom(32))
    c.close()
"""


async def test_a_cluster_of_another_nbcluster_version_says_so(lab: Lab, tmp_path: Path) -> None:
    from nbcluster.runtime.node import sessions

    proc = subprocess.Popen([sys.executable, "-c", OTHER_PROTOCOL], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        token_file = tmp_path / "token"
        token_file.write_text("its own token")
        token_file.chmod(0o600)
        sessions.write_record(sessions.ClusterRecord(
            role="head", pid=proc.pid, create_time=sessions.process_create_time(proc.pid),
            address=f"127.0.0.1:{port}", token_file=str(token_file), started_by="cli",
            version="9.0.0",
        ))  # fmt: skip

        async def listed() -> Any:
            for c in (await lab.api())["clusters"]:
                if c["address"] == f"127.0.0.1:{port}":
                    return c
            return None

        entry = await until(listed, 30, "the other version's cluster")
        assert entry["state"] == "incompatible", entry
        assert "protocol" in entry["error"] and "nbcluster 9.0.0" in entry["error"]
        r = await lab.fetch("nbcluster", "api", "clusters", entry["id"], "tasks",
                            raise_error=False)  # fmt: skip
        assert r.code == 409 and "nbcluster 9.0.0" in json.loads(r.body)["message"]
    finally:
        proc.kill()
        proc.wait()

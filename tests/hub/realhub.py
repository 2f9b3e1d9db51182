"""A real JupyterHub on loopback ports, real OS users, and kernels driven through its proxy.

``RealHub`` starts ``jupyterhub`` (with configurable-http-proxy) from this interpreter's
environment with ``jupyterhub_config.py`` beside this file, mints each user a token with the
hub's own API, spawns servers, starts kernels and runs code in them over the kernel
websocket, exactly as a browser would, all through the hub's public port. ``stop`` stops the
hub, which stops the servers and the proxy it started; whatever survives (a kernel, a
cluster's processes) is killed by pid.

``OsUsers`` makes real accounts with ``useradd`` (the tests run as root) and removes them
afterwards with their processes and every file they left in the temp dirs. A user's server
runs this same virtual environment, so the environment and the source tree must be readable
by other users: ``readable_by_others`` checks it (a venv under a 0700 home is the usual trap).

Pitfalls met on the way are in ``../shared/recipes/jupyterhub-e2e.md``; those particular to
real users are noted where they bite.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "jupyterhub_config.py"
VENV_BIN = Path(sys.executable).parent
#: Seconds the hub may take to answer after start (about 2 s here).
HUB_START_S = 60.0
#: Seconds a spawn may take (3 s alone here, longer when two servers start on 2 busy cores).
SPAWN_S = 120.0
#: Seconds a cell may take (the first one waits for the kernel's cluster to start).
CELL_S = 90.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (held open together so none is picked twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def poll(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except requests.ConnectionError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not done within {timeout:g} s")
        time.sleep(step)


# --------------------------------------------------------------------------- OS users


@dataclass
class OsUsers:
    """Real OS accounts made for one test run; ``remove`` undoes everything they left."""

    root: Path
    names: list[str] = field(default_factory=list)

    def add(self, name: str) -> str:
        home = self.root / "home" / name
        home.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash", name],
            check=True, capture_output=True,
        )  # fmt: skip
        self.names.append(name)
        return name

    def uid(self, name: str) -> int:
        return pwd.getpwnam(name).pw_uid

    def processes(self) -> list[psutil.Process]:
        uids = {self.uid(n) for n in self.names}
        out = []
        for p in psutil.process_iter(["uids"]):
            try:
                if p.info["uids"] and p.info["uids"].real in uids:
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def files_in_temp(self) -> list[str]:
        """Files and folders these users own directly in /tmp, /dev/shm, or one level down
        in nbcluster's folders there (their session directories)."""
        uids = {self.uid(n) for n in self.names}
        found = []
        for top in ("/tmp", "/dev/shm"):
            for entry in _scandir(top):
                if _owner(entry) in uids:
                    found.append(entry)
                elif "nbcluster" in os.path.basename(entry) and os.path.isdir(entry):
                    found += [e for e in _scandir(entry) if _owner(e) in uids]
        return found

    def remove(self) -> None:
        if not self.names:
            return
        for p in self.processes():  # only processes of the accounts made here
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        for path in self.files_in_temp():
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        for name in self.names:
            subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        self.names.clear()


def _scandir(path: str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path)]
    except OSError:
        return []


def _owner(path: str) -> int | None:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return None


# --------------------------------------------------------------------------- the hub


@dataclass
class HubUser:
    name: str
    token: str

    @property
    def server(self) -> str:
        return f"/user/{self.name}/"


class RealHub:
    """One JupyterHub process and everything it started."""

    def __init__(
        self,
        root: Path,
        os_users: list[str],
        ports: list[int] | None = None,
        *,
        shared_users: Iterable[str] = (),
        shared_env: dict[str, str] | None = None,
        services: list[dict[str, Any]] | None = None,
        roles: list[dict[str, Any]] | None = None,
        server_token_scopes: list[str] | None = None,
    ) -> None:
        self.root = root
        (root / "run").mkdir(parents=True, exist_ok=True)
        hub, proxy_api, hub_api = ports or free_ports(3)
        self.url = f"http://127.0.0.1:{hub}"
        self.hub_api_url = f"http://127.0.0.1:{hub_api}/hub/api"
        self.password = secrets.token_hex(8)
        self.service_token = secrets.token_hex(32)
        self.settings = {
            "root": str(root),
            "ports": {"hub": hub, "proxy_api": proxy_api, "hub_api": hub_api},
            "password": self.password,
            "service_token": self.service_token,
            "os_users": os_users,
            "shared_users": list(shared_users),
            "shared_env": shared_env or {},
            "services": services or [],
            "roles": roles or [],
            "server_token_scopes": server_token_scopes or [],
            "venv_bin": str(VENV_BIN),
        }
        self.log_path = root / "run" / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()
        self.users: dict[str, HubUser] = {}

    # -- process --------------------------------------------------------------------------
    def start(self) -> None:
        settings = self.root / "run" / "settings.json"
        settings.write_text(json.dumps(self.settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NBCLUSTER_", "JUPYTER"))}
        # HOME in the test folder: jupyter tools write ~/.jupyter and ~/.local otherwise.
        env.update(NBCLUSTER_TEST_HUB_SETTINGS=str(settings), HOME=str(self.root / "run"))
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)],
                cwd=self.root / "run", env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        poll(self._answers, HUB_START_S, f"the hub answering at {self.url}\n{self.log_tail()}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the hub exited ({self.proc.returncode}):\n{self.log_tail()}")
        return requests.get(f"{self.url}/hub/api/", timeout=5).status_code == 200

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no hub log)"

    def remember_processes(self) -> None:
        """Record every process below the hub now, to kill any that outlive it."""
        if self.proc is not None:
            try:
                self.pids |= {p.pid for p in psutil.Process(self.proc.pid).children(True)}
            except psutil.Error:
                pass

    def stop(self) -> None:
        if self.proc is None:
            return
        self.remember_processes()
        self.proc.send_signal(signal.SIGTERM)  # stops the servers and the proxy it started
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        # Kernels exit about a second after their server; nodes when their kernel is gone.
        left = [psutil.Process(p) for p in self.pids if psutil.pid_exists(p)]
        _, alive = psutil.wait_procs(left, timeout=10)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc = None

    # -- REST -----------------------------------------------------------------------------
    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        kw.setdefault("timeout", 30)
        return requests.request(method, self.url + path, headers=headers, **kw)

    def user(self, name: str) -> HubUser:
        """The hub user ``name`` with a fresh API token of their own (made with the hub API)."""
        if name not in self.users:
            r = self.api("POST", f"/hub/api/users/{name}/tokens", self.service_token,
                         json={"note": "tests", "expires_in": 3600})  # fmt: skip
            if r.status_code == 404:  # not created until first login or an admin adds them
                self.api("POST", f"/hub/api/users/{name}", self.service_token).raise_for_status()
                r = self.api("POST", f"/hub/api/users/{name}/tokens", self.service_token,
                             json={"note": "tests", "expires_in": 3600})  # fmt: skip
            assert r.status_code == 201, r.text
            self.users[name] = HubUser(name, r.json()["token"])
        return self.users[name]

    def spawn(self, *users: HubUser) -> None:
        """Start the users' servers at the same time and wait until every one is ready."""
        for u in users:
            r = self.api("POST", f"/hub/api/users/{u.name}/server", u.token)
            assert r.status_code in (201, 202), f"{r.text}\n{self.log_tail()}"
        for u in users:
            poll(lambda u=u: self._ready(u), SPAWN_S, f"{u.name}'s server\n{self.log_tail()}")
        self.remember_processes()

    def _ready(self, u: HubUser) -> bool:
        model = self.api("GET", f"/hub/api/users/{u.name}", u.token).json()
        server = model["servers"].get("")
        if server is None and model.get("pending") is None:
            raise AssertionError(f"{u.name}'s server failed to start:\n{self.log_tail()}")
        return bool(server and server.get("ready"))

    def start_kernel(self, u: HubUser, kernel: str = "nbcluster") -> str:
        r = self.api("POST", f"{u.server}api/kernels", u.token, json={"name": kernel})
        assert r.status_code == 201, r.text
        self.remember_processes()
        return str(r.json()["id"])

    def run(self, u: HubUser, kernel_id: str, code: str, timeout: float = CELL_S) -> Cell:
        """Run ``code`` in the kernel over its websocket, through the hub's proxy."""
        try:
            return asyncio.run(asyncio.wait_for(self._run(u, kernel_id, code), timeout))
        except asyncio.TimeoutError:
            raise AssertionError(
                f"{u.name}'s cell did not finish in {timeout:g} s:\n{code}\n{self.log_tail(80)}"
            ) from None

    async def _run(self, u: HubUser, kernel_id: str, code: str) -> Cell:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        url = f"ws{self.url[4:]}{u.server}api/kernels/{kernel_id}/channels"
        ws = await websocket_connect(
            HTTPRequest(url, headers={"Authorization": f"token {u.token}"})
        )
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": u.name,
                       "session": uuid.uuid4().hex, "version": "5.3"},
            "parent_header": {}, "metadata": {}, "buffers": [], "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        cell = Cell()
        idle = False
        try:
            while cell.status is None or not idle:
                raw = await ws.read_message()
                if raw is None:
                    raise AssertionError(f"kernel websocket closed; so far: {cell}")
                m = json.loads(raw)
                if m["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = m["msg_type"], m["content"]
                if kind == "stream":
                    cell.stdout += content["text"] if content["name"] == "stdout" else ""
                    cell.stderr += content["text"] if content["name"] == "stderr" else ""
                elif kind == "error":
                    cell.error = f"{content['ename']}: {content['evalue']}"
                elif kind == "execute_reply":
                    cell.status = content["status"]
                elif kind == "status":
                    idle = content["execution_state"] == "idle"
        finally:
            ws.close()
        return cell


@dataclass
class Cell:
    """What running one cell showed."""

    stdout: str = ""
    stderr: str = ""
    error: str = ""
    status: str | None = None

    def ok(self) -> str:
        """The cell's stdout; fails with everything it showed if it did not succeed."""
        assert self.status == "ok", f"cell failed: {self}"
        return self.stdout

    def last_json(self) -> Any:
        """The last line of stdout, as JSON (tests print one result per cell)."""
        return json.loads(self.ok().strip().splitlines()[-1])

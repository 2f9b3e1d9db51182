"""A fake Kubernetes API server with a fake kubelet, for the kubernetes launcher's tests.

It serves the few core/v1 paths the launcher uses (pods, their logs, secrets) over HTTP with
bearer-token auth, and rejects, with a 422 as a real API server would, any manifest that does
not validate against the Kubernetes 1.30 schemas (``kubernetes-validate``, strict: unknown
fields fail). Its "kubelet" runs each accepted pod's command as a local process, with the
environment the pod spec gives it (secret references resolved), and reports its phase; two
images and a resource limit stand for what a real cluster does to bad pods: ``nosuch/image``
cannot be pulled (``ErrImagePull``), and a pod asking for more than ``CAPACITY_CPU`` CPUs is
``Unschedulable``. What it does not model: scheduling, images, RBAC, garbage collection.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

SCHEMA_VERSION = "1.30.0"
TOKEN = "fake-bearer-token"
CAPACITY_CPU = 4.0
BAD_IMAGE = "nosuch/image"
#: A label key: an optional DNS-subdomain prefix and "/", then a name (the API server's rule).
LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


@dataclass
class FakeCluster:
    root: Path
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: every manifest accepted, as (kind, body)
    accepted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    def add_pod(self, name: str, namespace: str) -> dict[str, Any]:
        """A pod that exists already (the notebook's own)."""
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
               "status": {"phase": "Running"}}  # fmt: skip
        self.pods[name] = pod
        return pod

    def kubeconfig(self, namespace: str) -> Path:
        path = self.root / "kubeconfig"
        path.write_text(json.dumps({  # JSON is YAML
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u",
                                                      "namespace": namespace}}],
        }))  # fmt: skip
        return path

    # -- the kubelet ------------------------------------------------------------------------
    def run_pod(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        cpu = float(container.get("resources", {}).get("requests", {}).get("cpu", "0"))
        status: dict[str, Any] = {"phase": "Pending"}
        pod["status"] = status
        if container["image"] == BAD_IMAGE:
            status["containerStatuses"] = [{"name": "node", "ready": False, "state": {"waiting": {
                "reason": "ErrImagePull",
                "message": f'rpc error: pull access denied for {BAD_IMAGE}, repository does not '
                           "exist or may require authorization"}}}]  # fmt: skip
            return
        if cpu > CAPACITY_CPU:
            why = "0/1 nodes are available: 1 Insufficient cpu."
            status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": why}]  # fmt: skip
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("NBCLUSTER_")}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]]["stringData"][ref["key"]]
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (the process holds it)
        proc = subprocess.Popen(
            container["command"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
        log.close()
        self.procs[name] = proc
        status["phase"] = "Running"
        threading.Thread(target=self._reap, args=(name, proc), daemon=True).start()

    def _reap(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self.lock:
            pod = self.pods.get(name)
            if pod is not None:
                ended = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
                container = {"name": "node", "state": {"terminated": ended}}
                phase = "Succeeded" if code == 0 else "Failed"
                pod["status"] = {"phase": phase, "containerStatuses": [container]}

    def stop_pod(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop_pod(name)


def _status(code: int, message: str, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip


def _handler(cluster: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain" if isinstance(body, str)
                             else "application/json")  # fmt: skip
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            url = urlparse(self.path)
            m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(pods|secrets)(?:/([^/]+))?(/log)?",
                             url.path)  # fmt: skip
            if not m:
                self._send(404, _status(404, f"no route {url.path}", "NotFound"))
                return
            ns, kind, name, log = m.groups()
            store = cluster.pods if kind == "pods" else cluster.secrets
            with cluster.lock:
                if method == "POST" and name is None:
                    length = int(self.headers.get("Content-Length", "0"))
                    self._create(ns, kind, store, json.loads(self.rfile.read(length)))
                    return
                obj = store.get(name or "")
                if obj is None:
                    self._send(404, _status(404, f'{kind} "{name}" not found', "NotFound"))
                elif method == "GET" and log:
                    lines = int(parse_qs(url.query).get("tailLines", ["20"])[0])
                    path = cluster.root / f"{name}.log"
                    text = path.read_text(errors="replace") if path.exists() else ""
                    self._send(200, "".join(text.splitlines(True)[-lines:]))
                elif method == "GET":
                    self._send(200, obj)
                elif method == "DELETE":
                    del store[name]
                    if kind == "pods":
                        cluster.stop_pod(name)
                    self._send(200, obj)
                else:
                    self._send(405, _status(405, "method not allowed", "MethodNotAllowed"))

        def _create(self, ns: str, kind: str, store: dict[str, Any], body: dict[str, Any]) -> None:
            try:
                kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
                bad = [k for k in body["metadata"].get("labels", {}) if not LABEL_KEY.match(k)]
            except kubernetes_validate.ValidationError as e:
                bad, why = [], f"{body.get('kind')} is invalid: {str(e).splitlines()[0]}"
                self._send(422, _status(422, why, "Invalid"))
                return
            if bad:  # what the API server checks beyond the schema, as it words it
                why = (f"{body.get('kind')} is invalid: metadata.labels: Invalid value: "
                       f"{bad[0]!r}: name part must consist of alphanumeric characters, '-', "
                       "'_' or '.'")  # fmt: skip
                self._send(422, _status(422, why, "Invalid"))
                return
            meta = body["metadata"]
            meta["name"] = meta.get("name") or meta["generateName"] + secrets.token_hex(3)
            meta["namespace"], meta["uid"] = ns, str(uuid.uuid4())
            cluster.accepted.append((body["kind"], json.loads(json.dumps(body))))
            store[meta["name"]] = body
            if kind == "pods":
                cluster.run_pod(body)
            self._send(201, body)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


@contextmanager
def fake_kubernetes(root: Path) -> Iterator[FakeCluster]:
    cluster = FakeCluster(root)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cluster))
    cluster.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield cluster
    finally:
        server.shutdown()
        server.server_close()
        cluster.close()

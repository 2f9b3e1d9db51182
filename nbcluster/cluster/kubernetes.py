"""The ``kubernetes`` backend: one pod per node, owned by the notebook's pod.

Pods are made with the official ``kubernetes`` client (``pip install "nbcluster[kubernetes]"``),
configured in-cluster when the notebook runs in a pod, else from the kubeconfig. Each pod runs
``nbcluster start --address HEAD --block`` from ``image`` (which must have nbcluster and the
same Python as the notebook); the group's join token is in a Secret the pods read it from, so
it is in no pod spec. When the notebook runs in a pod (or ``owner_pod`` names one), that pod
owns the worker pods and the Secret: Kubernetes deletes them when the notebook's pod goes,
besides the nodes leaving by themselves when they lose the head.

Pod states come back with Kubernetes' words: an unschedulable pod shows the scheduler's
message (``0/3 nodes are available: 3 Insufficient cpu``), an image that cannot be pulled
fails the group with ``ErrImagePull``/``ImagePullBackOff`` and its message, a failed container
with its reason and exit code; ``output_tail`` reads the pod's log.

Options: ``image`` (required), ``namespace`` (default: the notebook pod's, else "default"),
``python`` (in the image, default ``python``), ``service_account``, ``node_selector``,
``tolerations``, ``image_pull_policy``, ``labels``, ``owner_pod``, ``kubeconfig``,
``context``. Tested against a fake API server that validates every manifest against the
Kubernetes 1.30 schemas and runs the pods' commands as local processes; not yet run against
a real cluster (image pulls, scheduling, RBAC and garbage collection are Kubernetes' own).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlparse

from nbcluster.cluster.launcher import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    Job,
    JobStatus,
    JoinCommand,
    Launcher,
    LaunchError,
    NodeSpec,
)

SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Container states that will not get better by waiting.
_FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                  "CreateContainerConfigError", "CrashLoopBackOff"}  # fmt: skip
GROUP_LABEL = "nbcluster.io/group"


def _client() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise LaunchError(
            "backend='kubernetes' needs the kubernetes client: pip install 'nbcluster[kubernetes]'"
        ) from None
    return kubernetes


class KubernetesLauncher(Launcher):
    name = "kubernetes"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        o = spec.options
        if not o.get("image"):
            raise ValueError("backend='kubernetes' needs image=... (with nbcluster installed)")
        self.image = str(o["image"])
        self.in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ
        self.namespace = str(o.get("namespace") or _pod_namespace() or "default")
        self.python = str(o.get("python") or (spec.python if spec.python != sys.executable
                                               else "python"))  # fmt: skip
        self.owner_pod = o.get("owner_pod") or (os.environ.get("HOSTNAME") if self.in_cluster
                                                 else None)  # fmt: skip
        k8s = _client()
        if self.in_cluster and not o.get("kubeconfig"):
            cfg = k8s.client.Configuration()
            k8s.config.load_incluster_config(client_configuration=cfg)
            self.api_client = k8s.client.ApiClient(cfg)
        else:
            self.api_client = k8s.config.new_client_from_config(
                config_file=o.get("kubeconfig"), context=o.get("context")
            )
        self.api = k8s.client.CoreV1Api(self.api_client)
        self.secret: str | None = None

    def describe(self) -> str:
        return f"kubernetes pods in {self.namespace}"

    def reach_host(self) -> str | None:
        """In a pod: the cluster's service address (pods share its network); else the API
        server's host."""
        if self.in_cluster:
            return os.environ["KUBERNETES_SERVICE_HOST"]
        return str(urlparse(self.api_client.configuration.host).hostname or "") or None

    # -- manifests ------------------------------------------------------------------------------
    def owner_references(self) -> list[dict[str, Any]]:
        if not self.owner_pod:
            return []
        pod = self._get(str(self.owner_pod))
        if pod is None:
            return []
        return [{"apiVersion": "v1", "kind": "Pod", "name": self.owner_pod,
                 "uid": pod["metadata"]["uid"], "blockOwnerDeletion": False,
                 "controller": False}]  # fmt: skip

    def secret_manifest(self, group: str, token: str, owners: list[Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"generateName": f"nbcluster-{group}-", "namespace": self.namespace,
                         "labels": self._labels(group), "ownerReferences": owners},
            "type": "Opaque",
            "stringData": {"token": token},
        }  # fmt: skip

    def pod_manifest(
        self, command: JoinCommand, group: str, secret: str, owners: list[Any]
    ) -> dict[str, Any]:
        s, o = self.spec, self.spec.options
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        if s.cpus is not None:
            requests["cpu"] = f"{s.cpus:g}"
        if s.memory:
            requests["memory"] = limits["memory"] = _quantity(s.memory)
        if s.gpus:
            limits["nvidia.com/gpu"] = str(int(s.gpus + 0.999))
        env = [{"name": "NBCLUSTER_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}]  # fmt: skip
        env += [{"name": k, "value": v} for k, v in sorted(command.env.items())]
        container: dict[str, Any] = {
            "name": "node",
            "image": self.image,
            "command": [self.python, *command.argv[1:]],
            "env": env,
            "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
        }
        if o.get("image_pull_policy"):
            container["imagePullPolicy"] = str(o["image_pull_policy"])
        pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container],
                                    "terminationGracePeriodSeconds": 10}  # fmt: skip
        fields = (("service_account", "serviceAccountName"), ("node_selector", "nodeSelector"),
                  ("tolerations", "tolerations"))  # fmt: skip
        for key, field in fields:
            if o.get(key):
                pod_spec[field] = o[key]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": f"nbcluster-{group}-", "namespace": self.namespace,
                         "labels": self._labels(group), "ownerReferences": owners},
            "spec": pod_spec,
        }  # fmt: skip

    def _labels(self, group: str) -> dict[str, str]:
        extra = {str(k): str(v) for k, v in (self.spec.options.get("labels") or {}).items()}
        return {**extra, "app.kubernetes.io/name": "nbcluster-node",
                "app.kubernetes.io/managed-by": "nbcluster", GROUP_LABEL: group}  # fmt: skip

    # -- the API --------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API request through the official client; the decoded JSON (None on 404)."""
        k8s = _client()
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=30, **kwargs)
        except k8s.client.exceptions.ApiException as e:
            if e.status == 404:
                return None
            raise LaunchError(f"the Kubernetes API refused {what}: {_api_reason(e)}") from None
        except Exception as e:  # connection refused, TLS, timeouts; or the client's own checks
            if type(e).__name__ == "ValidationError":
                why = f"the Kubernetes client refused the {what.rsplit(' ', 1)[-1]} ({what}): {e}"
                raise LaunchError(why) from None
            raise LaunchError(f"cannot reach the Kubernetes API ({what}): {e}") from None
        data = resp.data
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

    def _get(self, pod: str) -> Any:
        return self._call(f"reading pod {pod}", self.api.read_namespaced_pod, pod, self.namespace)

    def start(self, command: JoinCommand, count: int, group: str, log_dir: str) -> list[Job]:
        owners = self.owner_references()
        manifest = self.secret_manifest(group, command.token, owners)
        secret = self._call("creating a Secret", self.api.create_namespaced_secret,
                            self.namespace, manifest)  # fmt: skip
        self.secret = str(secret["metadata"]["name"])
        jobs: list[Job] = []
        try:
            for _ in range(count):
                manifest = self.pod_manifest(command, group, self.secret, owners)
                pod = self._call("creating a Pod", self.api.create_namespaced_pod,
                                 self.namespace, manifest)  # fmt: skip
                name = pod["metadata"]["name"]
                jobs.append(Job(f"pod {name}", name))
        except LaunchError:
            self.cancel(jobs)
            raise
        return jobs

    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        return [_pod_status(self._get(str(job.handle))) for job in jobs]

    def output_tail(self, job: Job, lines: int = 20) -> str:
        try:
            text = self._call(f"reading the log of pod {job.handle}",
                              self.api.read_namespaced_pod_log, str(job.handle), self.namespace,
                              tail_lines=lines)  # fmt: skip
        except LaunchError:
            return ""
        return text.strip() if isinstance(text, str) else ""

    def cancel(self, jobs: list[Job]) -> None:
        for job in jobs:
            try:
                self._call(f"deleting pod {job.handle}", self.api.delete_namespaced_pod,
                           str(job.handle), self.namespace)  # fmt: skip
            except LaunchError:
                pass
        if self.secret:
            try:
                self._call(f"deleting Secret {self.secret}", self.api.delete_namespaced_secret,
                           self.secret, self.namespace)  # fmt: skip
            except LaunchError:
                pass
            self.secret = None


def _pod_status(pod: Any) -> JobStatus:
    if pod is None:
        return JobStatus(DONE, "pod deleted")
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    containers = status.get("containerStatuses") or [{}]
    state = containers[0].get("state") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    if waiting.get("reason") in _FATAL_WAITING:
        return JobStatus(FAILED, f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
    if phase == "Running":
        return JobStatus(RUNNING)
    if phase == "Succeeded":
        return JobStatus(DONE)
    if phase == "Failed":
        why = terminated.get("reason") or status.get("reason") or "Failed"
        code = terminated.get("exitCode")
        msg = terminated.get("message") or status.get("message") or ""
        text = f"{why}" + (f", exit code {code}" if code is not None else "")
        return JobStatus(FAILED, f"{text}: {msg}" if msg else text)
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return JobStatus(PENDING, f"{cond.get('reason')}: {cond.get('message', '')}")
    return JobStatus(PENDING, waiting.get("reason", ""))


def _api_reason(e: Any) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"


def _quantity(memory: str) -> str:
    """Slurm-style sizes ("16G") as Kubernetes quantities ("16Gi")."""
    m = memory.strip()
    return m + "i" if m[-1:] in "KMGTP" and m[:-1].replace(".", "").isdigit() else m


def _pod_namespace() -> str | None:
    try:
        with open(SA_NAMESPACE) as f:
            return f.read().strip() or None
    except OSError:
        return None

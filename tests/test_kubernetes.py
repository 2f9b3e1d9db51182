"""The kubernetes backend, against a fake API server that validates every manifest.

``fake_kubernetes`` stands in for a cluster: it checks the launcher's Secret and Pod
manifests against the Kubernetes 1.30 schemas (strict) and runs accepted pods' commands as
local processes, so the nodes really join. The stories: pods join and are owned by the
notebook's pod, the token is only in the Secret, removal deletes pods and Secret; an image
that cannot be pulled, an unschedulable pod and a manifest the API rejects each come back
with Kubernetes' own words. What a real cluster adds (pulling images, scheduling, RBAC,
garbage collection of owned pods) is not exercised here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_helpers import REPO_ROOT, TESTS_DIR
from conftest import wait_until

pytest.importorskip("kubernetes", reason="the kubernetes client is in the test extra")
pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the test extra")

from fake_kubernetes import BAD_IMAGE, FakeCluster, fake_kubernetes

import nbcluster as nc
from nbcluster.cluster import LaunchError, LaunchTimeoutError

NAMESPACE = "science"
NODE_ENV = {"PYTHONPATH": f"{REPO_ROOT}:{TESTS_DIR}"}


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[FakeCluster]:
    with fake_kubernetes(tmp_path) as fake:
        fake.add_pod("notebook-0", NAMESPACE)
        yield fake


def options(k8s: FakeCluster, **extra: Any) -> dict[str, Any]:
    return {"image": "ghcr.io/example/nbcluster:latest", "python": sys.executable,
            "kubeconfig": str(k8s.kubeconfig(NAMESPACE)), "namespace": NAMESPACE,
            "owner_pod": "notebook-0", "env": NODE_ENV, **extra}  # fmt: skip


@nc.remote
def node_id() -> str:
    return str(nc.get_runtime_context().get_node_id())


def test_pods_join_owned_by_the_notebook_pod_and_go_when_removed(
    k8s: FakeCluster, cluster: Any
) -> None:
    group = nc.cluster.add_nodes(2, backend="kubernetes", cpus=1, memory="1G", **options(k8s))
    try:
        nodes = group.wait(timeout=60)
        assert len(nodes) == 2
        assert nc.get(node_id.options(resources={}).remote(), timeout=30)
    finally:
        group.remove()
    kinds = [kind for kind, _ in k8s.accepted]
    assert kinds == ["Secret", "Pod", "Pod"]  # each validated against the 1.30 schemas
    owner = k8s.pods["notebook-0"]["metadata"]["uid"]
    for _, body in k8s.accepted:
        refs = body["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("Pod", "notebook-0", owner)]
        assert body["metadata"]["labels"]["nbcluster.io/group"] == group.id
    token = k8s.accepted[0][1]["stringData"]["token"]
    for _, pod in k8s.accepted[1:]:
        assert token not in json.dumps(pod)  # the pods read it from the Secret
        container = pod["spec"]["containers"][0]
        assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"},
                                          "limits": {"memory": "1Gi"}}  # fmt: skip
    assert set(k8s.pods) == {"notebook-0"} and k8s.secrets == {}
    wait_until(lambda: all(p.poll() is not None for p in k8s.procs.values()), timeout=15)


def test_an_image_that_cannot_be_pulled_fails_the_group(k8s: FakeCluster, cluster: Any) -> None:
    group = nc.cluster.add_nodes(1, backend="kubernetes", **options(k8s, image=BAD_IMAGE))
    with pytest.raises(LaunchError, match=r"ErrImagePull: rpc error: pull access denied"):
        group.wait(timeout=30)
    group.remove()
    assert set(k8s.pods) == {"notebook-0"}


def test_an_unschedulable_pod_says_why_it_waits(k8s: FakeCluster, cluster: Any) -> None:
    group = nc.cluster.add_nodes(1, backend="kubernetes", cpus=64, **options(k8s))
    with pytest.raises(LaunchTimeoutError, match=r"pending \(Unschedulable: 0/1 nodes are "
                       r"available: 1 Insufficient cpu.\)"):  # fmt: skip
        group.wait(timeout=2)
    group.remove()


def test_a_manifest_the_api_rejects_is_reported_at_once(k8s: FakeCluster, cluster: Any) -> None:
    with pytest.raises(LaunchError, match=r"API refused creating a Secret: Secret is invalid: "
                       r"metadata.labels: Invalid value: 'bad key!'"):  # fmt: skip
        nc.cluster.add_nodes(1, backend="kubernetes", **options(k8s, labels={"bad key!": "x"}))
    assert nc.cluster.groups() == []
    assert set(k8s.pods) == {"notebook-0"} and k8s.secrets == {}  # the Secret was cleaned up
    assert nc.get(node_id.remote(), timeout=30)

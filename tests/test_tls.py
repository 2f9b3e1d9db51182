"""TLS between nodes: a cluster started with ``--tls`` encrypts every connection.

The head generates a self-signed certificate; a node joins with the same certificate and key;
a driver holding it runs work across both nodes. A client without it cannot even complete a
handshake, and the ports speak TLS to anyone who asks.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cluster_helpers import CliCluster, run_driver

from nbcluster.runtime.wire.transport import parse_address

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/openssl").exists(), reason="generating a certificate needs openssl"
)

ACROSS = r"""
import json
import numpy as np
import nbcluster as nc
nc.init()
@nc.remote(resources={"b": 1})
def make():
    return np.arange(3_000_000, dtype=np.float64)
@nc.remote(resources={"a": 1})
def total(x):
    return float(x.sum()), nc.get_runtime_context().get_node_id()
value, where = nc.get(total.remote(make.remote()), timeout=60)
print(json.dumps({"sum": value, "where": where}))
nc.shutdown()
"""

PLAIN = r"""
import json
import nbcluster as nc
try:
    nc.init()
    print(json.dumps({"error": None}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
"""


def test_a_tls_cluster_runs_work_across_nodes_and_refuses_plain_clients(tmp_path: Path) -> None:
    with CliCluster(tmp_path, NBCLUSTER_HANDSHAKE_TIMEOUT_S="2") as cluster:
        head = cluster.start_head("--num-cpus", "1", "--resources", '{"a": 1}', "--tls")
        cert = cluster.temp_dir / "tls" / "cluster.crt"
        key = cluster.temp_dir / "tls" / "cluster.key"
        assert cert.exists() and key.exists()
        assert key.stat().st_mode & 0o077 == 0, "the private key is readable by others"
        cluster.join(
            "b", "--num-cpus", "1", "--resources", '{"b": 1}',
            "--tls-cert", str(cert), "--tls-key", str(key),
        )  # fmt: skip

        tls_env = cluster.driver_env(NBCLUSTER_TLS_CERT=str(cert), NBCLUSTER_TLS_KEY=str(key))
        got = run_driver(ACROSS, tls_env)
        assert got["sum"] == float(sum(range(3_000_000)))

        # The head's port speaks TLS with the cluster's certificate, pinned.
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        host, port = parse_address(head.address)
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="nbcluster") as tls_sock,
        ):
            assert tls_sock.version() in ("TLSv1.2", "TLSv1.3")
            assert tls_sock.getpeercert() is not None

        # A driver without the certificate is refused with a clear error.
        refused = run_driver(PLAIN, cluster.driver_env())
        assert refused["error"] == "ClusterConnectionError", refused
        assert "TLS" in refused["message"], refused

        # And the cluster still works after it.
        assert run_driver(ACROSS, tls_env)["sum"] == float(sum(range(3_000_000)))

"""Optional TLS for every nbcluster connection, so traffic between machines is encrypted.

The cluster shares one certificate and key (``NBCLUSTER_TLS_CERT`` / ``NBCLUSTER_TLS_KEY``,
set by ``nbcluster start --tls-cert/--tls-key``, or generated self-signed by ``--tls``).
Every server presents it and every client accepts exactly that certificate (it is its own
trust root, so it is pinned: no other certificate, however signed, is accepted). The token
handshake still runs inside TLS: TLS hides the traffic, the token proves membership.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import subprocess

from nbcluster.runtime.config import CONFIG


def enabled() -> bool:
    return bool(CONFIG.tls_cert)


@functools.cache
def server_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(CONFIG.tls_cert, CONFIG.tls_key or None)
    return ctx


@functools.cache
def client_context() -> ssl.SSLContext | None:
    if not enabled():
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # nodes are reached by IP; the pinned certificate is the check
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(CONFIG.tls_cert)
    return ctx


def fingerprint(cert_path: str) -> str:
    with open(cert_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def generate(directory: str) -> tuple[str, str]:
    """A self-signed certificate and key for a cluster (openssl), readable by us only."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert, key = os.path.join(directory, "cluster.crt"), os.path.join(directory, "cluster.key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "825", "-subj", "/CN=nbcluster"],
        check=True, capture_output=True,
    )  # fmt: skip
    os.chmod(key, 0o600)
    return cert, key

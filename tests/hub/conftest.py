"""Fixtures for the JupyterHub tests: one real hub per run, with real OS users.

``hub`` starts JupyterHub (configurable-http-proxy from PyPI, installed by the ``test``
extra) on loopback ports with two fresh OS accounts, made with ``useradd`` and removed
afterwards with their processes and files. Their servers run under their own uids
(LocalProcessSpawner), so what one user's files and clusters let another do is tested for
real. Without root, ``useradd``, JupyterHub or the proxy the tests skip (or fail under
``NBCLUSTER_TEST_REQUIRE_PARTS=1``) through ``parts.missing``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from parts import missing
from traverse import TraverseGrant

from hub.realhub import VENV_BIN, OsUsers, RealHub, free_ports
from nbcluster.kernel.kernelspec import ensure_installed

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hub/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.slow)


def _require_parts() -> None:
    if os.geteuid() != 0:
        missing("root", "the hub tests make OS users (useradd) and run servers as them")
    for tool in ("useradd", "userdel"):
        if shutil.which(tool) is None:
            missing(tool, "the hub tests make real OS users (Debian's passwd package)")
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        missing("jupyterhub", "pip install -e '.[test]' installs it")
    if not (VENV_BIN / "configurable-http-proxy").exists():
        missing("configurable-http-proxy", f"not in {VENV_BIN}; the test extra installs it")


@pytest.fixture(scope="package")
def os_users() -> Iterator[OsUsers]:
    """Real OS accounts (and their homes), removed with all they left after the run: alice
    and bob run their own clusters; carol, dave, erin and frank are the shared cluster's."""
    _require_parts()
    root = Path(tempfile.mkdtemp(prefix="nbcluster-hubtest-"))
    os.chmod(root, 0o755)  # the users' homes live below it
    users = OsUsers(root)
    interpreter = Path(os.path.realpath(sys.executable))  # a venv's python is a symlink
    grant = TraverseGrant([Path(sys.prefix), interpreter.parent, Path(sys.base_prefix), REPO_ROOT])
    grant.acquire()
    try:
        suffix = os.getpid() % 100000
        for name in ("alice", "bob", "carol", "dave", "erin", "frank"):
            users.add(f"{name}{suffix}")
        yield users
    finally:
        users.remove()
        grant.release()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class SharedCluster:
    """The nbcluster cluster the hub runs as its service ``nbcluster``."""

    address: str
    users: list[str]  # may use it (their role has the service's access scope)
    outsider: str  # a hub user without that scope
    admin: str  # has the scope, and is one of the service's --admin-users
    service_dir: Path  # the service's NBCLUSTER_TEMP_DIR (its token is in there)
    user_cpus: float = 1.0
    user_store: int = 8 * 2**20


@pytest.fixture(scope="package")
def hub(os_users: OsUsers) -> Iterator[RealHub]:
    """One JupyterHub for every hub test; its users' servers and kernels stop with it.

    alice and bob each run their own clusters. The hub also runs a shared cluster as its
    service ``nbcluster`` (``hub.shared``), as root; carol, dave, erin and frank attach to
    it with their hub tokens, from servers running as their own accounts (so in client
    mode: the service's node is not theirs to map).
    """
    ensure_installed()  # the users' servers list the nbcluster kernel from this venv
    *ports, service_port, dashboard_port = free_ports(5)
    suffix = os.getpid() % 100000
    service_dir = os_users.root / "service"
    shared = SharedCluster(f"127.0.0.1:{service_port}", [f"carol{suffix}", f"dave{suffix}"],
                           f"erin{suffix}", f"frank{suffix}", service_dir)  # fmt: skip
    service_dir.mkdir(mode=0o700)
    command = [
        str(VENV_BIN / "nbcluster"), "start", "--head", "--block", "--jupyterhub",
        "--port", str(service_port), "--num-cpus", "2", "--object-store-memory", str(2**28),
        "--user-cpus", str(shared.user_cpus), "--user-store", str(shared.user_store),
        "--shared-namespaces", "team", "--admin-users", shared.admin,
    ]  # fmt: skip
    real = RealHub(
        os_users.root / "hub", list(os_users.names), ports,
        shared_users=[*shared.users, shared.outsider, shared.admin],
        shared_env={"NBCLUSTER_ADDRESS": shared.address},
        services=[{"name": "nbcluster", "command": command,
                   "url": f"http://127.0.0.1:{dashboard_port}", "oauth_no_confirm": True,
                   "environment": {"NBCLUSTER_TEMP_DIR": str(service_dir)}}],
        roles=[{"name": "nbcluster-users", "users": [*shared.users, shared.admin],
                "scopes": ["access:services!service=nbcluster"]}],
        server_token_scopes=["users:activity!user", "access:servers!server",
                             "access:services!service=nbcluster"],
    )  # fmt: skip
    real.shared = shared  # type: ignore[attr-defined]
    try:
        real.start()
        yield real
    finally:
        real.stop()

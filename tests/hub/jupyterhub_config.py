# JupyterHub configuration of the hub the tests in tests/hub start (JupyterHub >= 5).
#
# Everything listens on 127.0.0.1. Settings come from the JSON file named by
# NBCLUSTER_TEST_HUB_SETTINGS (written by realhub.RealHub):
#   root, ports {hub, proxy_api, hub_api}, password, service_token, os_users, venv_bin,
#   services (extra c.JupyterHub.services entries), roles (extra load_roles entries),
#   shared_users + shared_env (the users of the shared cluster, and what their servers'
#   environment gets), server_token_scopes.
# Users are real OS accounts: LocalProcessSpawner runs their servers (and so their kernels
# and clusters) under their own uid, so file permissions are real.
import json
import os
import random
import socket

from jupyterhub.spawner import LocalProcessSpawner

S = json.load(open(os.environ["NBCLUSTER_TEST_HUB_SETTINGS"]))  # noqa: SIM115
RUN = os.path.join(S["root"], "run")
c = get_config()  # type: ignore[name-defined]  # noqa: F821

c.JupyterHub.bind_url = f"http://127.0.0.1:{S['ports']['hub']}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{S['ports']['hub_api']}"
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{S['ports']['proxy_api']}"
c.ConfigurableHTTPProxy.command = [os.path.join(S["venv_bin"], "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = os.path.join(RUN, "proxy.pid")
c.JupyterHub.db_url = "sqlite://"  # in memory: every run starts from a clean hub
c.JupyterHub.cookie_secret_file = os.path.join(RUN, "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = os.path.join(RUN, "jupyterhub.pid")

c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = S["password"]
c.Authenticator.allowed_users = set(S["os_users"])


def _port_outside_ephemeral_range() -> int:
    """A free port below the kernel's ephemeral range: the hub's default picks a free port
    and closes it, and on a busy machine a process binding port 0 (a cluster's worker)
    can take it before the server starts ("port is already in use")."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])  # noqa: SIM115
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return 0


class TestSpawner(LocalProcessSpawner):
    """Servers run as their users' own OS accounts, on ports no cluster can take first; the
    shared cluster's users get shared_env (where the service's cluster is)."""

    async def start(self):  # type: ignore[no-untyped-def]
        self.port = _port_outside_ephemeral_range()
        return await super().start()

    def user_env(self, env):  # type: ignore[no-untyped-def]
        env = super().user_env(env)
        if self.user.name in S.get("shared_users", []):
            env.update(S.get("shared_env", {}))
        return env


c.JupyterHub.spawner_class = TestSpawner
c.Spawner.cmd = [os.path.join(S["venv_bin"], "jupyterhub-singleuser")]
c.Spawner.start_timeout = 90
# LocalProcessSpawner enforces neither; it hands them to each server as MEM_LIMIT and
# CPU_LIMIT, which size the user's own clusters (nbcluster.runtime.scheduling.limits).
c.Spawner.mem_limit = "2G"
c.Spawner.cpu_limit = 2.0
c.Spawner.http_timeout = 90
if S.get("server_token_scopes"):  # what a server's JUPYTERHUB_API_TOKEN may do (if the user may)
    c.Spawner.server_token_scopes = S["server_token_scopes"]

c.JupyterHub.services = [
    {"name": "hubtest", "api_token": S["service_token"]},
    *S.get("services", []),
]
c.JupyterHub.load_roles = [
    {
        "name": "hubtest-driver",
        "scopes": ["admin:users", "admin:servers", "tokens", "list:users"],
        "services": ["hubtest"],
    },
    *S.get("roles", []),
]

# JupyterHub configuration of the hub the tests in tests/hub start (JupyterHub >= 5).
#
# Everything listens on 127.0.0.1. Settings come from the JSON file named by
# NBCLUSTER_TEST_HUB_SETTINGS (written by realhub.RealHub):
#   root, ports {hub, proxy_api, hub_api}, password, service_token, os_users, venv_bin,
#   services (extra c.JupyterHub.services entries), roles (extra load_roles entries),
#   shared_users + shared_env (hub-only users whose servers run as the hub's own OS user
#   with shared_env in their environment), server_token_scopes.
# Users in os_users are real OS accounts: LocalProcessSpawner runs their servers (and so
# their kernels and clusters) under their own uid, so file permissions are real.
import json
import os
import pwd
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
c.Authenticator.allowed_users = set(S["os_users"]) | set(S.get("shared_users", []))


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
    """Real OS users run as themselves; shared-cluster users run as the hub's user."""

    async def start(self):  # type: ignore[no-untyped-def]
        self.port = _port_outside_ephemeral_range()
        return await super().start()

    def _shared(self) -> bool:
        return self.user.name in S.get("shared_users", [])

    def make_preexec_fn(self, name):  # type: ignore[no-untyped-def]
        if self._shared():
            return None
        return super().make_preexec_fn(name)

    def user_env(self, env):  # type: ignore[no-untyped-def]
        if not self._shared():
            return super().user_env(env)
        home = os.path.join(S["root"], "home", self.user.name)
        os.makedirs(home, mode=0o700, exist_ok=True)
        env.update(USER=pwd.getpwuid(os.getuid()).pw_name, HOME=home)
        env["NBCLUSTER_TEMP_DIR"] = os.path.join(home, "nbcluster")  # not root's own
        env.update(S.get("shared_env", {}))
        return env


c.JupyterHub.spawner_class = TestSpawner
c.Spawner.cmd = [os.path.join(S["venv_bin"], "jupyterhub-singleuser")]
c.Spawner.args = ["--allow-root"]  # only matters for servers that run as root
c.Spawner.start_timeout = 90
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

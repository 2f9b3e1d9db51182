"""A cluster run as a JupyterHub service: who its users are, and what each may see and do.

``nbcluster start --head --jupyterhub`` (run by the Hub from ``c.JupyterHub.services``)
turns this on for a node and its workers. Users' kernels then log in with their own
JupyterHub API token (``user_auth``); the head asks the Hub whose token it is with
``jupyterhub.services.auth.HubAuth`` (which caches answers) and whether its scopes include
this service's access scope (``access:services!service=<name>``). From then on every
connection of theirs is tagged with their name, and the policies below read that tag:

- **Cluster-only requests** (joining, join tokens, node reports, the head's own dashboard
  and logs...) are refused to users: they make only the requests a driver makes.
- **Namespaces**: a user's named actors live in ``<user>/<namespace>``, so two users may
  both name an actor ``counter``; namespaces an admin lists as shared are common to all.
- **What a user sees** (``hub_views``): the state API and the dashboard list only the
  user's own tasks, actors and objects; nodes and workers are shared. Only the creator (or
  an admin) may kill an actor. The live event stream is for admins.
- **Quotas**: CPUs held at once by a user's tasks on a node (more wait for the user's own
  earlier tasks) and by their actors; object store bytes a user's objects take on a node.
  Asking for more than a quota allows is a ``QuotaExceededError`` that says how much.

The policies wrap the RPC handlers the node registered, by name, so a cluster without
``--jupyterhub`` runs none of this code. Users' tasks run in the service's workers, under
the service's account: the policies keep users' work apart and fair, they are not a wall
between users who run code in the same processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nbcluster.exceptions import QuotaExceededError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.control import hub_views
from nbcluster.runtime.wire.protocol import HELLO, Hello
from nbcluster.runtime.wire.user_auth import LoginRefused

if TYPE_CHECKING:
    from nbcluster.runtime.control.actor_manager import ActorManager
    from nbcluster.runtime.node.node_agent import NodeAgent
    from nbcluster.runtime.wire.transport import Connection, Endpoint

log = logging.getLogger("nbcluster.hub")

#: The requests a user's driver makes; every other request is the cluster's own.
USER_REQUESTS = frozenset((
    "register", "request_lease", "return_lease", "cancel_lease_requests", "kill_worker",
    "ping", "node_stats", "cluster_total", "get_nodes", "cluster_view",
    "store_create", "store_seal", "store_open", "store_release", "store_delete",
    "create_actor", "wait_actor", "get_named_actor", "kill_actor", "terminate_actor",
    "list_actors", "events", "subscribe_events", "unsubscribe_events",
    "state_list", "state_get", "state_summary", "state_timeline", "state_memory",
    "store_write_range", "store_read_range",
    "dash_info", "dash_metrics", "dash_overview", "dash_cells", "dash_timeline",
    "dash_actor_calls",
))  # fmt: skip
#: Environment variables holding the service's own Hub credentials, kept from workers.
SECRET_ENV = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
#: How long a lease request over quota waits before looking again (leases also end
#: without a ``return_lease``: a driver that disconnects, a worker that dies).
QUOTA_RECHECK_S = 0.25


@dataclass
class HubCredentials:
    """The service's own Hub API token and where the Hub API is (from the Hub's env)."""

    api_token: str
    api_url: str
    access_scopes: set[str]
    #: where the Hub proxies /services/<name>/ to (the service's ``url``), if anywhere
    service_url: str = ""


def take_credentials() -> HubCredentials:
    """Read the service's Hub credentials and drop the secret from the environment before
    any worker starts: users' code runs in the workers."""
    import json

    token = ""
    for name in SECRET_ENV:
        token = os.environ.pop(name, "") or token
    if not token:
        raise SystemExit(
            "--jupyterhub: JUPYTERHUB_API_TOKEN is not set; run `nbcluster start --head "
            "--jupyterhub` as a JupyterHub service (c.JupyterHub.services, with a command)"
        )
    scopes_json = os.environ.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
    service = os.environ.get("JUPYTERHUB_SERVICE_NAME") or "nbcluster"
    scopes = set(json.loads(scopes_json)) if scopes_json else set()
    return HubCredentials(
        api_token=token,
        api_url=os.environ.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api",
        access_scopes=scopes or {f"access:services!service={service}"},
        service_url=os.environ.get("JUPYTERHUB_SERVICE_URL") or "",
    )


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


@dataclass
class Users:
    """What a node knows about the users of the cluster."""

    admins: set[str] = field(default_factory=lambda: _names(CONFIG.hub_admin_users))
    shared_namespaces: set[str] = field(default_factory=lambda: _names(CONFIG.shared_namespaces))
    #: driver address -> its user (first claim wins: an address is a live process's)
    by_addr: dict[str, str] = field(default_factory=dict)
    #: object id -> (user, bytes) of objects in this node's store counted against a quota
    stored: dict[bytes, tuple[str, int]] = field(default_factory=dict)

    def claim(self, user: str, addr: str) -> None:
        if not addr:
            return
        current = self.by_addr.setdefault(addr, user)
        if current != user:
            log.warning("user %s claimed the address %s of user %s; ignored", user, addr, current)

    def restricted(self, conn: Connection | None) -> str | None:
        """The user whose view ``conn`` gets, or None for the cluster itself and admins."""
        if conn is None or conn.user is None or conn.user in self.admins:
            return None
        return conn.user

    def namespace(self, user: str, namespace: str | None) -> str:
        ns = namespace or "default"
        return ns if ns in self.shared_namespaces else f"{user}/{ns}"


class HubLogin:
    """Checks a user's Hub token with the Hub (``HubAuth`` caches the answers)."""

    def __init__(self, creds: HubCredentials, users: Users) -> None:
        from jupyterhub.services.auth import HubAuth  # type: ignore[import-untyped]

        self.auth = HubAuth(api_token=creds.api_token, api_url=creds.api_url,
                            access_scopes=creds.access_scopes)  # fmt: skip
        self.users = users

    async def __call__(self, token: str) -> str:
        model = await self.auth.user_for_token(token, sync=False)
        if not model:
            raise LoginRefused("JupyterHub does not accept this API token (expired or revoked?)")
        name = str(model.get("name") or "")
        if model.get("kind", "user") != "user" or not name:
            raise LoginRefused(f"only JupyterHub users may log in, not {model.get('kind')!r}")
        if not self.auth.check_scopes(self.auth.access_scopes, model):
            wanted = " or ".join(sorted(self.auth.access_scopes))
            raise LoginRefused(f"JupyterHub user {name!r} may not use this cluster "
                               f"(their token lacks the scope {wanted})")  # fmt: skip
        if model.get("admin"):
            self.users.admins.add(name)
        log.info("JupyterHub user %s logged in", name)
        return name


# --------------------------------------------------------------------------- installing


def install_node(endpoint: Endpoint, agent: NodeAgent, store: Any) -> Users:
    """Every node of a JupyterHub cluster: accept users, refuse them cluster-only requests,
    learn which driver is whose, and enforce the per-node quotas."""
    users = Users()
    rpc = endpoint.rpc
    for name in [n for n in rpc if n not in USER_REQUESTS]:
        rpc[name] = _cluster_only(name, rpc[name])
    kill_worker = rpc["kill_worker"]

    def kill_own_worker(conn: Connection | None, worker_id: bytes) -> Any:
        if conn is not None and conn.user is not None:  # cancel(force=True) of a user's task
            w = agent.workers.get(worker_id)
            lessee = w.lease[0] if w is not None and w.lease is not None else None
            if lessee is None or lessee.user != conn.user:
                raise PermissionError("that worker runs no task of yours")
        return kill_worker(conn, worker_id)

    rpc["kill_worker"] = kill_own_worker

    register = rpc["register"]

    def register_user(conn: Connection, kind: str, *args: Any) -> Any:
        if conn is not None and conn.user is not None:
            if kind != "driver":
                raise PermissionError("users register drivers only")
            users.claim(conn.user, args[2] if len(args) > 2 else "")
        return register(conn, kind, *args)

    rpc["register"] = register_user
    hello = endpoint.handlers[HELLO]

    def hello_user(conn: Connection, msg: Hello) -> None:
        if conn.user is not None:
            users.claim(conn.user, msg.address)
        hello(conn, msg)

    endpoint.handlers[HELLO] = hello_user
    if "store_read_range" in rpc:
        _client_mode_ranges(rpc)
    if CONFIG.user_cpus > 0:
        _cpu_quota(endpoint, agent)
    if CONFIG.user_store_bytes > 0:
        _store_quota(endpoint, store, users)
    return users


def install_head(
    endpoint: Endpoint, users: Users, creds: HubCredentials, actors: ActorManager
) -> None:
    """The head's part: Hub logins, namespaces, who may kill what, and what each user sees."""
    endpoint.hub_login = HubLogin(creds, users)
    _actor_policies(endpoint, users, actors)
    hub_views.install(endpoint, users, actors)


def serve_dashboard(port: Any, creds: HubCredentials, users: Users) -> None:
    """The dashboard at /services/<name>/ (``dashboard.hub_server``), when the service has
    a URL; started from the head's running loop."""
    if not creds.service_url:
        return

    def start() -> None:
        from nbcluster.dashboard import hub_server

        try:
            hub_server.serve(port, creds.api_token, creds.service_url, users.admins)
        except Exception:
            log.exception("the dashboard for JupyterHub users did not start")

    asyncio.get_event_loop().call_soon(start)


def _cluster_only(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(conn: Connection | None, *args: Any) -> Any:
        if conn is not None and conn.user is not None:
            raise PermissionError(f"{name} is for the cluster's own processes, not users")
        return fn(conn, *args)

    return guarded


def _client_mode_ranges(rpc: dict[str, Any]) -> None:
    """A driver in client mode reads and writes the store's arena by offset
    (``remote_store``): a user only the objects the store gave them (create, open)."""
    ranges: dict[Connection, list[tuple[int, int, bool]]] = {}
    create, open_, write, read = (rpc[n] for n in (
        "store_create", "store_open", "store_write_range", "store_read_range"))  # fmt: skip

    def grant(conn: Connection, offset: int, size: int, writable: bool) -> None:
        for gone in [c for c in ranges if c.closed]:
            del ranges[gone]
        ranges.setdefault(conn, []).append((offset, offset + size, writable))

    def allowed(conn: Connection, lo: int, hi: int, writing: bool) -> bool:
        return any(a <= lo and hi <= b and (w or not writing) for a, b, w in ranges.get(conn, ()))

    def store_create(conn: Connection, oid: bytes, size: int, owner: str) -> Any:
        offset = create(conn, oid, size, owner)
        if conn is not None and conn.user is not None and offset >= 0:
            grant(conn, offset, size, True)
        return offset

    async def store_open(conn: Connection, *args: Any) -> Any:
        got = open_(conn, *args)
        if asyncio.isfuture(got) or asyncio.iscoroutine(got):
            got = await got
        if got is not None and conn is not None and conn.user is not None:
            grant(conn, int(got[0]), int(got[1]), False)
        return got

    def store_write_range(conn: Connection, offset: int, data: bytes) -> Any:
        if conn is not None and conn.user is not None and not allowed(
            conn, offset, offset + len(data), True
        ):
            raise PermissionError("that part of the object store is not an object of yours")
        return write(conn, offset, data)

    def store_read_range(conn: Connection, offset: int, size: int) -> Any:
        if conn is not None and conn.user is not None and not allowed(
            conn, offset, offset + size, False
        ):
            raise PermissionError("that part of the object store is not an object you opened")
        return read(conn, offset, size)

    rpc.update(store_create=store_create, store_open=store_open,
               store_write_range=store_write_range, store_read_range=store_read_range)  # fmt: skip


# --------------------------------------------------------------------------- quotas


def _cpu_quota(endpoint: Endpoint, agent: NodeAgent) -> None:
    rpc = endpoint.rpc
    request, give_back = rpc["request_lease"], rpc["return_lease"]
    quota = CONFIG.user_cpus
    returned = asyncio.Event()

    def held(user: str) -> float:
        return sum(
            w.lease[1].get("CPU", 0.0) for w in agent.workers.values()
            if w.lease is not None and w.lease[0] is not None and w.lease[0].user == user
            and not w.lease[0].closed
        )  # fmt: skip

    async def request_lease(conn: Connection, resources: dict[str, float], *args: Any) -> Any:
        user = conn.user
        cpus = float(resources.get("CPU", 0.0))
        if user is not None:
            if cpus > quota:
                raise QuotaExceededError(
                    f"user {user!r} may use {quota:g} CPUs at once; this task asks for {cpus:g}"
                )
            while held(user) + cpus > quota and not conn.closed:
                returned.clear()
                try:
                    await asyncio.wait_for(returned.wait(), QUOTA_RECHECK_S)
                except asyncio.TimeoutError:
                    pass
        reply = request(conn, resources, *args)
        return await reply if asyncio.isfuture(reply) or asyncio.iscoroutine(reply) else reply

    def return_lease(conn: Connection, *args: Any) -> Any:
        try:
            return give_back(conn, *args)
        finally:
            returned.set()

    rpc["request_lease"] = request_lease
    rpc["return_lease"] = return_lease


def _store_quota(endpoint: Endpoint, store: Any, users: Users) -> None:
    rpc = endpoint.rpc
    create = rpc["store_create"]
    quota = CONFIG.user_store_bytes

    def used(user: str) -> int:
        gone = [oid for oid in users.stored if not store.store.contains(oid)]
        for oid in gone:
            del users.stored[oid]
        return sum(size for u, size in users.stored.values() if u == user)

    def store_create(conn: Connection, oid: bytes, size: int, owner: str) -> Any:
        user = conn.user if conn is not None and conn.user else users.by_addr.get(owner)
        if user is None:
            return create(conn, oid, size, owner)
        in_use = used(user)
        if in_use + size > quota:
            raise QuotaExceededError(
                f"user {user!r} may keep {_mib(quota)} in the object store of this node; "
                f"{_mib(in_use)} are in use and this object needs {_mib(size)}"
            )
        offset = create(conn, oid, size, owner)
        if offset != -1:
            users.stored[oid] = (user, size)
        return offset

    rpc["store_create"] = store_create


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# --------------------------------------------------------------------------- actors


def _actor_policies(endpoint: Endpoint, users: Users, actors: ActorManager) -> None:
    rpc = endpoint.rpc
    create, named, kill, listing = (
        rpc["create_actor"], rpc["get_named_actor"], rpc["kill_actor"], rpc["list_actors"]
    )  # fmt: skip
    terminate = rpc["terminate_actor"]

    def create_actor(conn: Connection, actor_id: bytes, spec: dict[str, Any]) -> Any:
        user = conn.user if conn is not None else None
        if user is not None:
            spec = dict(spec, namespace=users.namespace(user, spec.get("namespace")))
            cpus = float(spec.get("hold", {}).get("CPU", 0.0))
            quota = CONFIG.user_cpus
            if quota > 0:
                held = sum(
                    a.hold.get("CPU", 0.0) for a in actors.actors.values()
                    if a.state != "DEAD" and users.by_addr.get(a.owner) == user
                )  # fmt: skip
                if held + cpus > quota:
                    raise QuotaExceededError(
                        f"user {user!r} may use {quota:g} CPUs at once; their actors hold "
                        f"{held:g} and this one asks for {cpus:g}"
                    )
        return create(conn, actor_id, spec)

    def get_named_actor(conn: Connection, name: str, namespace: str | None) -> Any:
        if conn is not None and conn.user is not None:
            namespace = users.namespace(conn.user, namespace)
        return named(conn, name, namespace)

    def own_actor(conn: Connection, actor_id: bytes) -> None:
        user = users.restricted(conn)
        info = actors.actors.get(actor_id)
        if user is not None and info is not None and users.by_addr.get(info.owner) != user:
            raise PermissionError("the actor belongs to another user")

    def kill_actor(conn: Connection, actor_id: bytes, *args: Any) -> Any:
        own_actor(conn, actor_id)
        return kill(conn, actor_id, *args)

    def terminate_actor(conn: Connection, actor_id: bytes, *args: Any) -> Any:
        own_actor(conn, actor_id)
        return terminate(conn, actor_id, *args)

    def list_actors(conn: Connection) -> Any:
        user = users.restricted(conn)
        items = listing(conn)
        if user is None:
            return items
        mine = {a.actor_id.hex() for a in actors.actors.values()
                if users.by_addr.get(a.owner) == user}  # fmt: skip
        return [a for a in items if a["actor_id"] in mine]

    rpc.update(create_actor=create_actor, get_named_actor=get_named_actor,
               kill_actor=kill_actor, terminate_actor=terminate_actor,
               list_actors=list_actors)  # fmt: skip


# --------------------------------------------------------------------------- command line


def add_start_arguments(parser: Any) -> None:
    """``nbcluster start`` options of a JupyterHub service."""
    g = parser.add_argument_group("JupyterHub service (run by c.JupyterHub.services)")
    g.add_argument("--jupyterhub", action="store_true",
                   help="users log in with their JupyterHub tokens; give it to every node")
    g.add_argument("--user-cpus", type=float, help="CPUs one user may hold at once on a node")
    g.add_argument("--user-store", type=int, metavar="BYTES",
                   help="object store bytes one user may keep on a node")
    g.add_argument("--admin-users", help="comma-separated Hub users who see everyone's work")
    g.add_argument("--shared-namespaces",
                   help="comma-separated actor namespaces common to all users")  # fmt: skip


def configure_from_args(args: Any) -> None:
    """The options reach the node and its workers through the environment they inherit."""
    if not args.jupyterhub:
        return
    env = {"NBCLUSTER_JUPYTERHUB": "1", "NBCLUSTER_USER_CPUS": args.user_cpus,
           "NBCLUSTER_USER_STORE_BYTES": args.user_store,
           "NBCLUSTER_HUB_ADMIN_USERS": args.admin_users,
           "NBCLUSTER_SHARED_NAMESPACES": args.shared_namespaces}  # fmt: skip
    os.environ.update({k: str(v) for k, v in env.items() if v is not None})

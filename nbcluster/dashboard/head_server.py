"""The dashboard served by the head itself, for users outside Jupyter, behind the cluster token.

Started by ``runtime.dashboard_port`` on the head's event loop when the first connection
reaches the dashboard's port. It serves the same page and API as the jupyter-server
extension, with ``/`` as the base URL, for this one cluster.

Who may see it: a request carrying the cluster token (``Authorization: token T`` or
``Bearer T``: scripts, Prometheus), or a browser holding the cookie it got by opening a
one-time login link (``nbcluster dashboard``, ``nc.dashboard_url()``). Anything else gets 403
and a page saying how to get a link. The token is never part of a page or a URL; the cookie is
signed with a key derived from the token, so it dies with the cluster. Requests that change
something (stop) also need the XSRF token, as in Jupyter.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tornado import httpserver, web, websocket

from nbcluster.dashboard import api
from nbcluster.dashboard.client import ClusterClient
from nbcluster.dashboard.handlers import (
    STATIC_DIR,
    ClusterMixin,
    ClustersMixin,
    EventsSocketMixin,
    PageMixin,
    PrometheusMixin,
    StopMixin,
)
from nbcluster.runtime.wire.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from nbcluster.runtime.control.dashboard_port import DashboardPort

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("nbcluster.dashboard")

ID = r"(?P<cluster_id>[0-9a-zA-Z_.-]+)"

NO_LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>nbcluster dashboard: login needed</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto">
<h1>Login needed</h1>
<p id="nbcluster-login-needed">{why} This dashboard shows a cluster's work to those who hold
its token. On the machine that runs the cluster, <code>nbcluster dashboard</code> prints a
login link (in Python: <code>nbcluster.dashboard_url()</code>); each link works once.</p>
</body></html>"""


class HeadSource:
    """The only cluster a head's dashboard shows: its own."""

    def __init__(self, port: DashboardPort) -> None:
        self.port = port
        self.entry = api.ClusterEntry(
            id=port.cluster_id, kind=port.kind, address=port.head_address,
            protocol=PROTOCOL_VERSION, started=port.started,
        )  # fmt: skip
        self._client: ClusterClient | None = None

    async def entries(self, fresh: bool = False) -> list[api.ClusterEntry]:
        return [self.entry]

    def client(self, entry: api.ClusterEntry) -> ClusterClient:
        if self._client is None:
            self._client = ClusterClient(self.port.local_address, self.port.token)
        return self._client

    async def stop(self, entry: api.ClusterEntry) -> dict[str, Any]:
        await self.client(entry).call("dash_stop")
        return {"id": entry.id, "stopped": True}


def _cookie_secret(token: str) -> str:
    return hmac.new(token.encode(), b"nbcluster dashboard cookie", hashlib.sha256).hexdigest()


class HeadAuthMixin(web.RequestHandler):
    """The cluster token (header) or the login cookie; nothing else."""

    def nbc_port(self) -> DashboardPort:
        return self.settings["nbcluster_port"]  # type: ignore[no-any-return]

    def _header_token(self) -> str | None:
        auth = self.request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return None

    def get_current_user(self) -> str | None:
        presented = self._header_token()
        if presented is not None:
            ok = hmac.compare_digest(presented.encode(), self.nbc_port().token.encode())
            return "token" if ok else None
        cookie = self.get_signed_cookie(self.settings["nbcluster_cookie"], max_age_days=31)
        return "cookie" if cookie == self.nbc_port().cluster_id.encode() else None

    def check_xsrf_cookie(self) -> None:
        if self._header_token() is not None:
            return  # a script holding the token: not a browser that could be tricked
        super().check_xsrf_cookie()


def token_required(method: F) -> F:
    """403 (with a page saying how to log in) for requests without the token or cookie."""

    @functools.wraps(method)
    def wrapper(self: HeadAuthMixin, *args: Any, **kwargs: Any) -> Any:
        if not self.current_user:
            raise web.HTTPError(403, "the cluster token or a dashboard login is needed")
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class HeadHandler(HeadAuthMixin):
    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) else None
        if "/api/" in self.request.path or self.request.path.endswith("/metrics"):
            self.set_header("Content-Type", "application/json")
            self.finish({"message": message or self._reason})
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        why = "This link is not valid (it was used already, or it expired)." if (
            self.request.path.endswith("/login")) else ""  # fmt: skip
        if status_code == 403:
            self.finish(NO_LOGIN_PAGE.format(why=why))
        else:
            self.finish(f"<!doctype html><p>{status_code}: {self._reason}</p>")


class LoginHandler(HeadHandler):
    """``/nbcluster/login?token=ONE-TIME``: trade a login link for the cookie."""

    def get(self) -> None:
        tok = self.get_argument("token", "")
        valid = bool(tok) and self.nbc_port().use_login(tok)
        if not valid and self.current_user:  # a link opened again by a logged-in browser
            self.redirect(f"/nbcluster/clusters/{self.nbc_port().cluster_id}/")
            return
        if not valid:
            raise web.HTTPError(403, "invalid or used login link")
        self.set_signed_cookie(
            self.settings["nbcluster_cookie"], self.nbc_port().cluster_id, expires_days=None,
            httponly=True, samesite="Lax",
        )  # fmt: skip
        self.redirect(f"/nbcluster/clusters/{self.nbc_port().cluster_id}/")


class PageHandler(HeadHandler, PageMixin):
    @token_required
    def get(self, cluster_id: str | None = None) -> None:
        self.xsrf_token  # noqa: B018 (sets the _xsrf cookie the page sends back)
        self.nbc_page(cluster_id, {})


class RootHandler(HeadHandler):
    @token_required
    def get(self) -> None:
        self.redirect(f"/nbcluster/clusters/{self.nbc_port().cluster_id}/")


class StaticHandler(HeadAuthMixin, web.StaticFileHandler):
    @token_required
    def get(self, path: str, include_body: bool = True) -> Any:
        return super().get(path, include_body)


class ClustersHandler(HeadHandler, ClustersMixin):
    @token_required
    async def get(self) -> None:
        await self.nbc_get()


class ClusterHandler(HeadHandler, ClusterMixin):
    @token_required
    async def get(self, cluster_id: str, what: str | None = None, item: str | None = None) -> None:
        await self.nbc_get(cluster_id, what, item)


class StopHandler(HeadHandler, StopMixin):
    @token_required
    async def post(self, cluster_id: str) -> None:
        await self.nbc_post(cluster_id)


class PrometheusHandler(HeadHandler, PrometheusMixin):
    @token_required
    async def get(self) -> None:
        await self.nbc_get()


class EventsSocket(HeadAuthMixin, EventsSocketMixin, websocket.WebSocketHandler):
    @token_required
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)


def log_server_errors(handler: web.RequestHandler) -> None:
    """Only server errors reach the node's log (it is the cluster's log, not an access log)."""
    if handler.get_status() >= 500:
        log.warning("%d %s", handler.get_status(), handler._request_summary())


def make_app(port: DashboardPort) -> web.Application:
    p = "/nbcluster"
    api_ = f"{p}/api/clusters"
    return web.Application(
        [
            (r"/", RootHandler),
            (rf"{p}/login", LoginHandler),
            (rf"{p}/?", PageHandler),
            (rf"{p}/clusters/{ID}/?", PageHandler),
            (rf"{p}/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
            (rf"{api_}/?", ClustersHandler),
            (rf"{api_}/{ID}/events", EventsSocket),
            (rf"{api_}/{ID}/stop", StopHandler),
            (rf"{api_}/{ID}(?:/(?P<what>[a-z_]+)(?:/(?P<item>[^/]+))?)?/?", ClusterHandler),
            (rf"{p}/metrics", PrometheusHandler),
            (r"/metrics", PrometheusHandler),
        ],
        cookie_secret=_cookie_secret(port.token),
        xsrf_cookies=True,
        nbcluster_port=port,
        nbcluster_cookie=f"nbcluster-{port.cluster_id[:12]}",
        nbcluster_source=HeadSource(port),
        nbcluster_base_url="/",
        nbcluster_server="head",
        websocket_ping_interval=30,
        log_function=log_server_errors,
    )


def serve(port: DashboardPort, sock: socket.socket) -> httpserver.HTTPServer:
    """Serve the dashboard on ``sock`` from the head's running event loop."""
    server = httpserver.HTTPServer(make_app(port))
    server.add_socket(sock)
    return server

"""The dashboard of a cluster run as a JupyterHub service, at ``/services/<name>/``.

The head of ``nbcluster start --head --jupyterhub`` serves it when the service has a
``url`` in ``c.JupyterHub.services`` (the Hub then proxies ``/services/<name>/`` to it and
gives the head the OAuth client it needs). It is the same page and API as the head's own
dashboard and the jupyter-server extension's, behind JupyterHub's login instead of the
cluster token: a browser goes through the Hub's OAuth, a script sends its Hub token.

Each user sees their own work: the dashboard asks the head as that user (with the user's
key, ``user_auth``), so the head's per-user views (``hub_service``) apply to it exactly as
to the user's kernels. Admins (Hub admins and ``--admin-users``) see everything. Nobody
stops the cluster from here: the Hub runs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlparse

from jupyterhub.services.auth import (  # type: ignore[import-untyped]
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    UserNotAllowed,
)
from tornado import httpserver, web, websocket

from nbcluster.dashboard import api
from nbcluster.dashboard.client import ClusterClient
from nbcluster.dashboard.handlers import (
    STATIC_DIR,
    ClusterMixin,
    ClustersMixin,
    EventsSocketMixin,
    PageMixin,
)
from nbcluster.dashboard.head_server import log_server_errors
from nbcluster.runtime.wire.protocol import PROTOCOL_VERSION
from nbcluster.runtime.wire.user_auth import user_key

if TYPE_CHECKING:
    from nbcluster.runtime.control.dashboard_port import DashboardPort

log = logging.getLogger("nbcluster.dashboard")

ID = r"(?P<cluster_id>[0-9a-zA-Z_.-]+)"
F = TypeVar("F", bound=Callable[..., Any])


def login_required(method: F) -> F:
    """``tornado.web.authenticated``: the Hub's login page for a browser, 403 for the API."""
    return cast(F, web.authenticated(method))


class UserSource:
    """The one cluster this dashboard shows, as one user (or an admin) sees it."""

    def __init__(self, port: DashboardPort, user: str | None) -> None:
        self.port = port
        self.user = user  # None: an admin, who asks with the cluster token
        self.entry = api.ClusterEntry(
            id=port.cluster_id, kind="jupyterhub", address=port.head_address,
            protocol=PROTOCOL_VERSION, started=port.started,
        )  # fmt: skip
        self._client: ClusterClient | None = None

    async def entries(self, fresh: bool = False) -> list[api.ClusterEntry]:
        return [self.entry]

    def client(self, entry: api.ClusterEntry) -> ClusterClient:
        if self._client is None or self._client.closed:
            if self.user is None:
                self._client = ClusterClient(self.port.local_address, self.port.token)
            else:
                self._client = ClusterClient(
                    self.port.local_address, user_key(self.port.token, self.user)
                )
                self._client.endpoint.user = self.user
        return self._client

    async def stop(self, entry: api.ClusterEntry) -> dict[str, Any]:
        raise api.ApiError(403, "this cluster is a JupyterHub service: the Hub starts and stops it")


class HubHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]
    """JupyterHub's login (OAuth cookie or a Hub token); the user's own source."""

    async def prepare(self) -> None:
        # HubAuthenticated asks the Hub synchronously (a thread and a wait); here the head's
        # event loop keeps running while it asks.
        model = await self.hub_auth.get_user(self, sync=False)
        try:
            self._hub_auth_user_cache = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            raise web.HTTPError(
                403, f"{model.get('kind', 'user')} {model.get('name')} may not use this cluster"
            ) from None

    @property
    def nbc_source(self) -> UserSource:
        model = self.current_user
        admin = bool(model.get("admin")) or model["name"] in self.settings["nbcluster_admins"]
        key = None if admin else str(model["name"])
        sources: dict[str | None, UserSource] = self.settings["nbcluster_sources"]
        if key not in sources:
            sources[key] = UserSource(self.settings["nbcluster_port"], key)
        return sources[key]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) else None
        self.set_header("Content-Type", "application/json")
        self.finish({"message": message or self._reason})


class PageHandler(HubHandler, PageMixin):
    @login_required
    def get(self, cluster_id: str | None = None) -> None:
        self.nbc_page(cluster_id or self.settings["nbcluster_port"].cluster_id, {})


class StaticHandler(HubHandler, web.StaticFileHandler):
    @login_required
    def get(self, path: str, include_body: bool = True) -> Any:
        return super().get(path, include_body)


class ClustersHandler(HubHandler, ClustersMixin):
    @login_required
    async def get(self) -> None:
        await self.nbc_get()


class ClusterHandler(HubHandler, ClusterMixin):
    @login_required
    async def get(self, cluster_id: str, what: str | None = None, item: str | None = None) -> None:
        await self.nbc_get(cluster_id, what, item)


class EventsSocket(HubHandler, EventsSocketMixin, websocket.WebSocketHandler):
    @login_required
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)


def make_app(port: DashboardPort, prefix: str, admins: set[str]) -> web.Application:
    p = f"{prefix.rstrip('/')}/nbcluster"
    api_ = f"{p}/api/clusters"
    return web.Application(
        [
            (rf"{prefix.rstrip('/')}/?", PageHandler),
            (rf"{prefix}oauth_callback", HubOAuthCallbackHandler),
            (rf"{p}/?", PageHandler),
            (rf"{p}/clusters/{ID}/?", PageHandler),
            (rf"{p}/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
            (rf"{api_}/?", ClustersHandler),
            (rf"{api_}/{ID}/events", EventsSocket),
            (rf"{api_}/{ID}(?:/(?P<what>[a-z_]+)(?:/(?P<item>[^/]+))?)?/?", ClusterHandler),
        ],
        cookie_secret=os.urandom(32),
        nbcluster_port=port,
        nbcluster_sources={},
        nbcluster_admins=admins,
        nbcluster_base_url=prefix,
        nbcluster_server="jupyterhub",
        websocket_ping_interval=30,
        log_function=log_server_errors,
    )


def serve(port: DashboardPort, api_token: str, service_url: str, admins: set[str]
          ) -> httpserver.HTTPServer:  # fmt: skip
    """Serve on the service's URL from the head's running event loop."""
    # The handlers (JupyterHub's OAuth callback too) use the HubOAuth singleton.
    hub_auth = HubOAuth.instance(api_token=api_token, cache_max_age=60)
    prefix = hub_auth.base_url or os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    url = urlparse(service_url)
    server = httpserver.HTTPServer(make_app(port, prefix, admins), xheaders=True)
    server.listen(url.port or 80, url.hostname or "127.0.0.1")
    log.info("dashboard for JupyterHub users at %s (served on %s)", prefix, service_url)
    return server

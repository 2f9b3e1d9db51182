"""The extension's handlers: the dashboard's API and page behind Jupyter's own login.

Every method carries jupyter-server's authentication (``@web.authenticated`` on REST and
pages, ``@ws_authenticated`` on the WebSocket) and authorization (``@authorized`` on the
resource ``nbcluster``): a handler without them would be open to anyone who can reach the
server. What each one does is shared with the head's own server (``dashboard.handlers``).
"""

from __future__ import annotations

from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from tornado import web, websocket

from nbcluster.dashboard.handlers import (
    STATIC_DIR,
    ClusterMixin,
    ClustersMixin,
    EventsSocketMixin,
    PageMixin,
    PrometheusMixin,
    StopMixin,
)

#: The resource name Jupyter's authorizer sees for everything here.
AUTH_RESOURCE = "nbcluster"
ID = r"(?P<cluster_id>[0-9a-zA-Z_.-]+)"


class ClustersHandler(APIHandler, ClustersMixin):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.nbc_get()


class ClusterHandler(APIHandler, ClusterMixin):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self, cluster_id: str, what: str | None = None, item: str | None = None) -> None:
        await self.nbc_get(cluster_id, what, item)


class StopHandler(APIHandler, StopMixin):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def post(self, cluster_id: str) -> None:
        await self.nbc_post(cluster_id)


class PrometheusHandler(APIHandler, PrometheusMixin):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.nbc_get()


class PageHandler(JupyterHandler, PageMixin):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self, cluster_id: str | None = None) -> None:
        self.xsrf_token  # noqa: B018 (sets the _xsrf cookie the page sends back)
        self.nbc_page(cluster_id, {"labUrl": f"{self.base_url}lab/tree/"})


class StaticHandler(JupyterHandler, web.StaticFileHandler):
    auth_resource = AUTH_RESOURCE

    @web.authenticated
    @authorized
    def get(self, path: str, include_body: bool = True) -> Any:  # type: ignore[override]
        return web.StaticFileHandler.get(self, path, include_body)


class EventsSocket(JupyterHandler, EventsSocketMixin, websocket.WebSocketHandler):
    auth_resource = AUTH_RESOURCE

    async def pre_get(self) -> None:
        allowed = await ensure_async(
            self.authorizer.is_authorized(self, self.current_user, "read", AUTH_RESOURCE)
        )
        if not allowed:
            raise web.HTTPError(403)

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await self.pre_get()
        await websocket.WebSocketHandler.get(self, *args, **kwargs)


def handlers() -> list[tuple[str, Any, dict[str, Any]]]:
    """Routes, relative to Jupyter's base URL (the extension app prefixes it)."""
    p = "nbcluster"
    api = f"{p}/api/clusters"
    return [
        (rf"{p}/?", PageHandler, {}),
        (rf"{p}/clusters/{ID}/?", PageHandler, {}),
        (rf"{p}/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
        (rf"{api}/?", ClustersHandler, {}),
        (rf"{api}/{ID}/events", EventsSocket, {}),
        (rf"{api}/{ID}/stop", StopHandler, {}),
        (rf"{api}/{ID}(?:/(?P<what>[a-z_]+)(?:/(?P<item>[^/]+))?)?/?", ClusterHandler, {}),
        (rf"{p}/metrics", PrometheusHandler, {}),
    ]

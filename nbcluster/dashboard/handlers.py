"""What the dashboard's tornado handlers do, shared by both servers that serve it.

Each server (``extension.handlers`` inside Jupyter, ``head_server`` on the head) subclasses
these mixins with its own base classes and its own authentication on every method; the
mixins hold no decorator, so nothing here is ever reachable on its own. The application's
settings carry ``nbcluster_source`` (the ``api.ClusterSource``), ``nbcluster_base_url`` and
``nbcluster_server`` ("jupyter" or "head").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado import web

from nbcluster.dashboard import api
from nbcluster.dashboard.event_relay import EventRelay

if TYPE_CHECKING:
    _Base = web.RequestHandler
else:
    _Base = object

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


class DashboardMixin(_Base):
    @property
    def nbc_source(self) -> api.ClusterSource:
        return self.settings["nbcluster_source"]  # type: ignore[no-any-return]

    @property
    def nbc_base_url(self) -> str:
        return str(self.settings["nbcluster_base_url"])

    def nbc_args(self) -> dict[str, list[str]]:
        return {
            k: [v.decode("utf-8", "replace") for v in vs]
            for k, vs in self.request.query_arguments.items()
        }

    async def nbc_respond(self, answer: Awaitable[Any]) -> None:
        """Write ``answer`` as JSON, or the API error it raised with its status."""
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        try:
            result = await answer
        except api.ApiError as e:
            self.set_status(e.status)
            self.finish(json.dumps(e.body()))
            return
        self.finish(json.dumps(result, default=str))


class ClustersMixin(DashboardMixin):
    """``GET {base}nbcluster/api/clusters``: every cluster this server can reach."""

    async def nbc_get(self) -> None:
        await self.nbc_respond(api.list_clusters(self.nbc_source, self.nbc_base_url))


class ClusterMixin(DashboardMixin):
    """``GET {base}nbcluster/api/clusters/<id>[/<what>[/<item>]]``."""

    async def nbc_get(self, cluster_id: str, what: str | None, item: str | None) -> None:
        args = self.nbc_args()
        if what == "timeline" and args.get("format", [""])[-1] == "chrome":
            self.set_header("Content-Disposition", 'attachment; filename="timeline.json"')
        await self.nbc_respond(
            api.cluster_resource(self.nbc_source, cluster_id, what, item, args, self.nbc_base_url)
        )


class StopMixin(DashboardMixin):
    """``POST {base}nbcluster/api/clusters/<id>/stop``."""

    async def nbc_post(self, cluster_id: str) -> None:
        await self.nbc_respond(api.stop_cluster(self.nbc_source, cluster_id))


class EventsSocketMixin(DashboardMixin):
    """``WS {base}nbcluster/api/clusters/<id>/events[?from_seq=N&types=TASK_,NODE_]``.

    A server's socket class is ``(its auth base, EventsSocketMixin, WebSocketHandler)``, so
    these ``open``/``on_message``/``on_close`` are the socket's."""

    relay: EventRelay | None = None

    async def nbc_open(self, cluster_id: str) -> None:
        from tornado.websocket import WebSocketHandler

        assert isinstance(self, WebSocketHandler)
        ws = self
        args = self.nbc_args()
        try:
            entry = await api.find(self.nbc_source, cluster_id)
            if entry.state in (api.GONE, api.INCOMPATIBLE):
                raise api.ApiError(410, f"cluster {cluster_id} is {entry.state}")
            from_seq = api._int(args, "from_seq", None)
            types = [t for t in ",".join(args.get("types", [])).split(",") if t] or None
            self.relay = EventRelay(
                self.nbc_source.client(entry), ws.write_message, ws.close, types
            )
            await self.relay.start(from_seq)
        except Exception as e:
            reason = e.message if isinstance(e, api.ApiError) else str(e)
            ws.write_message(json.dumps({"error": reason}))
            ws.close(1011, reason[:120])

    def nbc_close(self) -> None:
        if self.relay is not None:
            self.relay.close()

    # The WebSocket's own methods (a server's class lists this mixin before WebSocketHandler).
    async def open(self, cluster_id: str) -> None:
        await self.nbc_open(cluster_id)

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream goes one way

    def on_close(self) -> None:
        self.nbc_close()


def _asset_version() -> str:
    """A hash of the built assets: their URLs change when they do, so caches never serve
    an old bundle with a new page."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(STATIC_DIR)):
        if name.endswith((".js", ".css")):
            with open(os.path.join(STATIC_DIR, name), "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:12]


_VERSION: list[str] = []


def page(base_url: str, server: str, cluster_id: str | None, extra: dict[str, Any]) -> str:
    """The single page, with what the app needs to know about where it is served."""
    if not _VERSION:
        _VERSION.append(_asset_version())
    with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
        html = f.read()
    config = {"baseUrl": base_url, "server": server, "clusterId": cluster_id, **extra}
    blob = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e")
    static = f"{base_url}nbcluster/static/"
    return (
        html.replace("{{config}}", blob)
        .replace("{{static}}", static)
        .replace("{{version}}", _VERSION[0])
    )


class PageMixin(DashboardMixin):
    """``GET {base}nbcluster/`` (the list) and ``{base}nbcluster/clusters/<id>/``."""

    def nbc_page(self, cluster_id: str | None, extra: dict[str, Any]) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(page(self.nbc_base_url, self.settings["nbcluster_server"], cluster_id, extra))


_NODE_GAUGES = (
    ("cpu_percent", "cpu_percent"), ("memory_used_bytes", "mem_used"),
    ("memory_total_bytes", "mem_total"), ("object_store_used_bytes", "object_store_used"),
    ("object_store_capacity_bytes", "object_store_capacity"),
)  # fmt: skip


async def prometheus_text(source: api.ClusterSource) -> str:
    """Every running cluster's gauges, in Prometheus' text format."""
    lines = [
        "# HELP nbcluster_tasks Tasks the head remembers, by state.",
        "# TYPE nbcluster_tasks gauge",
    ]
    node_lines: list[str] = []
    for entry in await source.entries():
        try:
            ov = await api.ask(source, entry, "dash_overview", None)
        except api.ApiError:
            continue
        cid = entry.id
        for state, n in sorted(ov["tasks"]["by_state"].items()):
            lines.append(f'nbcluster_tasks{{cluster="{cid}",state="{state}"}} {n}')
        for n in ov["nodes"]:
            if n["state"] != "ALIVE":
                continue
            labels = f'cluster="{cid}",node="{n["node_id"]}"'
            for name, key in _NODE_GAUGES:
                if n.get(key) is not None:
                    node_lines.append(f"nbcluster_node_{name}{{{labels}}} {float(n[key]):g}")
        lines.append(f'nbcluster_actors{{cluster="{cid}"}} {ov["actors"]["total"]}')
        lines.append(f'nbcluster_objects{{cluster="{cid}"}} {ov["objects"]["total"]}')
        lines.append(f'nbcluster_object_bytes{{cluster="{cid}"}} {ov["objects"]["bytes"]}')
    return "\n".join(lines + node_lines) + "\n"


class PrometheusMixin(DashboardMixin):
    """``GET {base}nbcluster/metrics``: gauges for sites that scrape with Prometheus."""

    async def nbc_get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(await prometheus_text(self.nbc_source))

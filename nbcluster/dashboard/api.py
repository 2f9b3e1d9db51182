"""The dashboard's JSON API, the same under both servers that serve it.

``{base_url}nbcluster/api/clusters`` lists clusters and ``.../clusters/<id>/<what>`` reads
one (see ``docs/api.md``). This module is the meaning of those URLs, free of any web
framework: a *source* says which clusters exist and hands out a client for each, and
``cluster_resource`` turns a path and its query into requests to that cluster's head. The
jupyter-server extension and the head's own server wrap it in their handlers, each with its
own authentication.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbcluster.dashboard.client import ClusterClient
from nbcluster.exceptions import AuthenticationError, ClusterConnectionError
from nbcluster.runtime.wire.protocol import PROTOCOL_VERSION
from nbcluster.runtime.wire.transport import RemoteCallError

#: The state API's record kinds, each a list (``.../tasks``) and an item (``.../tasks/<id>``).
STATE_KINDS = ("tasks", "actors", "objects", "nodes", "workers")
#: Everything else under ``.../clusters/<id>/``.
VIEWS = ("summary", "overview", "cells", "timeline", "metrics", "memory", "info", "actor_calls",
         "log")
#: Query arguments that are not filters.
RESERVED = frozenset(
    ("limit", "since", "start_ms", "end_ms", "format", "detail", "filter", "offset", "max_bytes",
     "node")
)
#: Default and largest number of records one list answer holds.
DEFAULT_LIMIT = 100
#: How long listing clusters waits for each to say who it is (seconds).
PROBE_TIMEOUT_S = 2.0

RUNNING = "running"
GONE = "gone"  # its processes have exited
UNREACHABLE = "unreachable"  # its processes live but it does not answer
INCOMPATIBLE = "incompatible"  # another nbcluster protocol version


class ApiError(Exception):
    """What the API answers instead of a result: an HTTP status and a sentence."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"message": self.message, **self.extra}


@dataclass
class ClusterEntry:
    """One cluster as a source knows it (``public`` is what the API shows)."""

    id: str
    kind: str  # "kernel" (a notebook kernel's), "standalone" (``nbcluster start``), "driver"
    address: str
    token: str = field(default="", repr=False)
    state: str = RUNNING
    error: str | None = None
    kernel_id: str | None = None
    notebook_path: str | None = None
    kernel_state: str | None = None
    protocol: int | None = None
    version: str | None = None
    pid: int | None = None
    started: float | None = None
    #: what the head said of itself last (``dash_info``)
    info: dict[str, Any] = field(default_factory=dict)

    def public(self, base_url: str) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("token", "info")}
        out["resources"] = self.info.get("resources", {})
        out["resources_available"] = self.info.get("resources_available", {})
        out["nodes"] = self.info.get("nodes")
        out["dashboard_url"] = f"{base_url}nbcluster/clusters/{self.id}/"
        out["api_url"] = f"{base_url}nbcluster/api/clusters/{self.id}"
        return out


class ClusterSource(Protocol):
    """Where a server's clusters come from: the head serves itself, the extension every
    cluster its user runs on this machine."""

    async def entries(self, fresh: bool = False) -> list[ClusterEntry]:
        """Every cluster to list, gone ones included for a while (``fresh``: look again now,
        not at what was found a moment ago)."""
        ...

    def client(self, entry: ClusterEntry) -> ClusterClient:
        """The (cached) client of a running cluster."""
        ...

    async def stop(self, entry: ClusterEntry) -> dict[str, Any]:
        """Stop a cluster (a kernel's: restart the kernel)."""
        ...


# -- listing -----------------------------------------------------------------------------------
async def probe(source: ClusterSource, entry: ClusterEntry) -> None:
    """Ask a cluster who it is; mark it unreachable, or incompatible, when it cannot say."""
    if entry.state in (GONE, INCOMPATIBLE):
        return
    if entry.protocol is not None and entry.protocol != PROTOCOL_VERSION:
        entry.state = INCOMPATIBLE
        entry.error = _incompatible(entry.protocol, entry.version)
        return
    try:
        info = await source.client(entry).call("dash_info", timeout=PROBE_TIMEOUT_S)
    except AuthenticationError as e:
        if "not an nbcluster" in str(e):  # another handshake: another protocol version
            entry.state = INCOMPATIBLE
            entry.error = _incompatible(entry.protocol or "other than ours", entry.version)
        else:
            entry.state, entry.error = UNREACHABLE, str(e)
        return
    except (ClusterConnectionError, RemoteCallError, OSError) as e:
        entry.state, entry.error = UNREACHABLE, str(e)
        return
    except asyncio.TimeoutError:
        entry.state = UNREACHABLE
        entry.error = f"the head did not answer within {PROBE_TIMEOUT_S:g} s"
        return
    entry.info = info
    entry.state, entry.error = RUNNING, None
    entry.protocol = info.get("protocol", entry.protocol)
    entry.version = info.get("version", entry.version)


def _incompatible(protocol: Any, version: str | None = None) -> str:
    from nbcluster import __version__

    theirs = f" (nbcluster {version})" if version else ""
    return (
        f"this cluster speaks nbcluster protocol {protocol}{theirs} and this server protocol "
        f"{PROTOCOL_VERSION} (nbcluster {__version__}): install the same nbcluster version "
        "in the kernel's environment and in Jupyter's"
    )


async def list_clusters(source: ClusterSource, base_url: str) -> dict[str, Any]:
    entries = await source.entries(fresh=True)
    await asyncio.gather(*(probe(source, e) for e in entries))
    return {"clusters": [e.public(base_url) for e in entries]}


async def find(source: ClusterSource, cluster_id: str) -> ClusterEntry:
    for fresh in (False, True):  # a cluster that just started: look again before a 404
        for entry in await source.entries(fresh):
            if entry.id == cluster_id:
                return entry
    raise ApiError(404, f"no cluster {cluster_id!r} here", state="unknown")


# -- one cluster -------------------------------------------------------------------------------
def parse_filters(args: dict[str, list[str]]) -> list[list[str]]:
    """The state API's filters from a query: ``?filter=state=FAILED&filter=name!=f`` or the
    shorthand ``?state=FAILED`` / ``?name!=f`` (any argument that is not reserved)."""
    out: list[list[str]] = []
    for text in args.get("filter", []):
        key, op, value = text.partition("!=") if "!=" in text else text.partition("=")
        if not op or not key:
            raise ApiError(400, f"a filter is KEY=VALUE or KEY!=VALUE, got {text!r}")
        out.append([key.strip(), op, value])
    for key, values in args.items():
        if key in RESERVED:
            continue
        op = "="
        if key.endswith("!"):
            key, op = key[:-1], "!="
        out.extend([key, op, v] for v in values)
    return out


def _int(args: dict[str, list[str]], name: str, default: int | None) -> int | None:
    values = args.get(name)
    if not values or values[-1] == "":
        return default
    try:
        return int(float(values[-1]))
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {values[-1]!r}") from None


def _float(args: dict[str, list[str]], name: str) -> float | None:
    values = args.get(name)
    if not values or values[-1] == "":
        return None
    try:
        return float(values[-1])
    except ValueError:
        raise ApiError(400, f"{name} must be a number, got {values[-1]!r}") from None


async def cluster_resource(
    source: ClusterSource,
    cluster_id: str,
    what: str | None,
    item: str | None,
    args: dict[str, list[str]],
    base_url: str,
) -> Any:
    """The answer to ``GET .../api/clusters/<cluster_id>[/<what>[/<item>]]``."""
    entry = await find(source, cluster_id)
    if what is None:
        await probe(source, entry)
        return entry.public(base_url)
    if what not in STATE_KINDS and what not in VIEWS:
        raise ApiError(404, f"no {what!r} here; expected one of {', '.join(STATE_KINDS + VIEWS)}")
    if item is not None and what not in STATE_KINDS:
        raise ApiError(404, f"{what} has no items")
    method, params = _request(what, item, args)
    result = await ask(source, entry, method, *params)
    if what in STATE_KINDS and item is not None and result is None:
        raise ApiError(404, f"no {what[:-1]} {item!r} in this cluster")
    if what == "timeline" and _last(args, "format") == "chrome":
        from nbcluster.runtime.api.timeline import chrome_trace

        return chrome_trace(result)
    return result


def _last(args: dict[str, list[str]], name: str) -> str | None:
    values = args.get(name)
    return values[-1] if values else None


def _request(what: str, item: str | None, args: dict[str, list[str]]) -> tuple[str, list[Any]]:
    if what in STATE_KINDS:
        if item is not None:
            if what != "nodes" and not _is_hex(item):
                raise ApiError(404, f"{item!r} is not a {what[:-1]} id (hexadecimal)")
            return "state_get", [what, item]
        return "state_list", [what, parse_filters(args), _int(args, "limit", DEFAULT_LIMIT)]
    if what == "timeline":
        if _last(args, "format") == "chrome":  # the export: every task that ran
            return "state_timeline", []
        return "dash_timeline", [
            _int(args, "start_ms", None), _int(args, "end_ms", None), _int(args, "limit", None),
        ]  # fmt: skip
    if what in ("overview", "metrics"):
        return f"dash_{what}", [_float(args, "since")]
    if what == "log":
        node = _last(args, "node")
        where = _int(args, "offset", None), _int(args, "max_bytes", None)
        return ("dash_node_log", [node, *where]) if node else ("dash_log", list(where))
    return {
        "summary": "state_summary", "cells": "dash_cells", "memory": "state_memory",
        "info": "dash_info", "actor_calls": "dash_actor_calls",
    }[what], []  # fmt: skip


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


async def ask(source: ClusterSource, entry: ClusterEntry, method: str, *args: Any) -> Any:
    """One request to a cluster's head, its failures turned into API errors."""
    if entry.state == GONE:
        raise ApiError(410, f"cluster {entry.id} is gone", state=GONE)
    if entry.state == INCOMPATIBLE:
        why = entry.error or _incompatible(entry.protocol, entry.version)
        raise ApiError(409, why, state=INCOMPATIBLE)
    try:
        return await source.client(entry).call(method, *args)
    except LookupError as e:
        raise ApiError(404, str(e).strip("'\"")) from None
    except (ValueError, TypeError) as e:
        raise ApiError(400, str(e)) from None
    except asyncio.TimeoutError:
        why = f"cluster {entry.id} did not answer in time"
        raise ApiError(504, why, state=UNREACHABLE) from None
    except (ClusterConnectionError, AuthenticationError, OSError) as e:
        why = f"cluster {entry.id} cannot be reached: {e}"
        raise ApiError(502, why, state=UNREACHABLE) from None
    except RemoteCallError as e:
        raise ApiError(500, str(e)) from None


async def stop_cluster(source: ClusterSource, cluster_id: str) -> dict[str, Any]:
    entry = await find(source, cluster_id)
    if entry.state == GONE:
        raise ApiError(410, f"cluster {entry.id} is gone already", state=GONE)
    return await source.stop(entry)


def now_ms() -> int:
    return int(time.time() * 1000)

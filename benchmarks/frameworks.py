"""Start and stop each framework, exposing all of them through Ray's API.

nbcluster and Ray are used as they are (the module is the API). Dask gets a thin shim that maps
``remote``/``get``/``put`` onto ``Client.submit``/``gather``/``scatter`` so that the workloads
are written once. Frameworks are imported lazily, inside :func:`open_session`, so that the cold
start measurement includes the import.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

#: The module each framework is imported from (used to tell whether it is installed).
IMPORT_NAMES: dict[str, str] = {"nbcluster": "nbcluster", "ray": "ray", "dask": "distributed"}


class Unsupported(Exception):
    """The framework has no equivalent of the requested feature."""


class RayLike(Protocol):
    """The subset of Ray's module-level API the workloads use."""

    def remote(self, fn: Any) -> Any: ...
    def get(self, refs: Any) -> Any: ...
    def put(self, value: Any) -> Any: ...


@dataclass
class Session:
    """A running framework: its Ray-like API and how to shut it down."""

    framework: str
    version: str
    api: RayLike
    #: Module name a task can import to reach the same API from inside a worker (None: cannot).
    worker_module: str | None
    close: Callable[[], None]


def is_installed(framework: str) -> bool:
    """Whether the framework can be found, without importing it."""
    try:
        return importlib.util.find_spec(IMPORT_NAMES[framework]) is not None
    except (ImportError, ValueError):
        return False


def open_session(framework: str, num_cpus: int) -> Session:
    """Import ``framework`` and start a local cluster with ``num_cpus`` workers."""
    openers: dict[str, Callable[[int], Session]] = {
        "nbcluster": _open_nbcluster,
        "ray": _open_ray,
        "dask": _open_dask,
    }
    return openers[framework](num_cpus)


def _open_nbcluster(num_cpus: int) -> Session:
    nc: Any = importlib.import_module("nbcluster")
    nc.init(num_cpus=num_cpus)
    version = str(getattr(nc, "__version__", "?"))
    return Session("nbcluster", version, nc, "nbcluster", nc.shutdown)


def _open_ray(num_cpus: int) -> Session:
    ray: Any = importlib.import_module("ray")
    ray.init(num_cpus=num_cpus, include_dashboard=False)
    return Session("ray", str(ray.__version__), ray, "ray", ray.shutdown)


def _open_dask(num_cpus: int) -> Session:
    distributed: Any = importlib.import_module("distributed")
    cluster = distributed.LocalCluster(
        n_workers=num_cpus, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)

    def close() -> None:
        client.close()
        cluster.close()

    return Session("dask", str(distributed.__version__), DaskApi(client), None, close)


class _DaskRemoteFunction:
    def __init__(self, client: Any, fn: Callable[..., Any]) -> None:
        self._client = client
        self._fn = fn

    def remote(self, *args: Any) -> Any:
        return self._client.submit(self._fn, *args, pure=False)


class DaskApi:
    """Ray's ``remote``/``get``/``put`` on a ``distributed.Client`` (tasks only, no actors)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def remote(self, fn: Any) -> _DaskRemoteFunction:
        if isinstance(fn, type):
            raise Unsupported("n/a (no actors)")
        return _DaskRemoteFunction(self.client, fn)

    def get(self, refs: Any) -> Any:
        if isinstance(refs, list):
            return self.client.gather(refs)
        return refs.result()

    def put(self, value: Any) -> Any:
        # Scatter a one-element list so that list values are not split into many futures.
        return self.client.scatter([value], hash=False)[0]

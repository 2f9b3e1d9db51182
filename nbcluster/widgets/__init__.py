"""Live notebook widgets: the cluster, the ObjectRef graph, the object store and progress.

``nc.widgets.cluster()``, ``graph(refs=None)``, ``store()`` and ``progress(refs)`` return
widgets that a cell displays; they update by themselves, pushed by the cluster's event
stream (one subscription per kernel, at most ten updates a second each). Without
ipywidgets/anywidget, or in a front end without widget support, each shows as an HTML (or
plain-text) table of the same state instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nbcluster.runtime.ownership.object_ref import ObjectRef


def available() -> bool:
    """Whether live widgets can be shown here (anywidget and ipywidgets are installed)."""
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return False
    return True


class Static:
    """What a widget function returns without ipywidgets: its state as a table, now."""

    def __init__(self, view: Any) -> None:
        self.view = view

    def _repr_html_(self) -> str:
        return str(self.view.html())

    def __repr__(self) -> str:
        return str(self.view.text())


def _open(view: Any, name: str) -> Any:
    """The widget of ``view``, drawn from the head's picture now; it updates itself while
    a browser shows it. Without widgets: a ``Static`` table of that picture."""
    import time

    from nbcluster.widgets.feed import feed

    f = feed()
    payload = f.open(view)
    with f.lock:
        view.on_digest(payload, True)
        view.tick(time.time())
    if not available():
        view.close()
        return Static(view)
    from nbcluster.widgets.live import widget_class

    widget = widget_class(name)(view)
    with f.lock:
        view.widget = widget
        view.show()
    return widget


def _refs(refs: Any) -> list[ObjectRef]:
    if isinstance(refs, ObjectRef):
        return [refs]
    if not isinstance(refs, Sequence) or not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError(f"expected an ObjectRef or a list of ObjectRefs, got {type(refs).__name__}")
    return list(refs)


def progress(refs: Any, title: str = "") -> Any:
    """A progress bar per function for the tasks behind ``refs``, with rate, ETA, the first
    error and a Cancel button that cancels those of them that have not ended."""
    from nbcluster.widgets.progress_view import ProgressView

    return _open(ProgressView(_refs(refs), title), "progress")


def graph(refs: Any = None, *, group_at: int | None = None) -> Any:
    """The live ObjectRef graph: of the work this cell launches (no argument, in a notebook),
    or of the lineage of ``refs``. Click a node for its details. Beyond ``group_at`` nodes
    (2,000) it shows one box per function instead of each node."""
    from nbcluster.widgets.graph_view import GraphView
    from nbcluster.widgets.names import current_cell

    if refs is not None:
        return _open(GraphView(refs=_refs(refs), group_at=group_at), "graph")
    cell, number = current_cell()
    return _open(GraphView(cell=cell, cell_number=number, group_at=group_at), "graph")


def cluster(*, info: dict[str, Any] | None = None) -> Any:
    """The cluster's nodes: CPU, GPU, memory and object store use, live, with sparklines.
    ``info``: a heading (``title``, ``rows`` of (what, how), ``dashboard`` link), as
    ``nc.init()``'s display has it."""
    from nbcluster.widgets.cluster_view import ClusterView

    return _open(ClusterView(info), "cluster")


def store() -> Any:
    """The object stores and their largest objects: who holds each and why; Free a ``put``."""
    from nbcluster.widgets.store_view import StoreView

    return _open(StoreView(), "store")


__all__ = ["Static", "available", "cluster", "graph", "progress", "store"]

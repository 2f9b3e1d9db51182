"""The anywidget side: one model class per widget, talking only over the kernel's comm.

Each widget's front end is one ESM file in ``static/`` (built from ``js/`` by esbuild and
shipped in the wheel: no CDN, no extra port). The Python side holds the state in the
``snapshot`` trait, which a fresh view renders from and a saved notebook keeps; large
widgets (the graph) also send deltas as custom messages, numbered so that a view that missed
one asks for the snapshot again. Each browser view says when it renders and when it goes
(``{"kind": "view"}``), so a widget nobody shows does no work (``FedView.on_views``). Every
widget's display also carries ``text/html`` and
``text/plain`` (see ``html``), so a front end without widgets shows a table, not ``VBox()``.

Messages from the browser (Cancel, Free, a node's details) must be handled while a cell is
blocked in ``nc.get``: JupyterLab sends them on a kernel subshell, which runs on its own
thread, but ipykernel routes a comm's messages back to the subshell that last published on
it (the main shell, for a widget made by a cell). ``_handle_on_frontend_subshell`` keeps the
frontend's choice for our widgets, whose handlers are thread-safe.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anywidget
import traitlets

STATIC = Path(__file__).resolve().parent / "static"
_display_ids = itertools.count(1)


def _handle_on_frontend_subshell(widget: Any) -> None:
    comm = getattr(widget, "comm", None)
    if comm is not None and hasattr(comm, "_reply_subshell_for"):
        comm._reply_subshell_for = lambda _data, default: default


class LiveWidget(anywidget.AnyWidget):
    """Base of the nbcluster widgets: a snapshot trait, numbered deltas, static fallbacks."""

    snapshot = traitlets.Dict().tag(sync=True)

    def __init__(self, owner: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: the view (aggregation) object that feeds this widget and answers its requests
        self.owner = owner
        self.seq = 0
        #: browser views showing this widget now
        self.views = 0
        _handle_on_frontend_subshell(self)
        self.on_msg(self._on_frontend_msg)

    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        if content.get("kind") == "view":
            self.views = max(0, self.views + (1 if content.get("on") else -1))
            self.owner.on_views(self.views)
        else:
            self.owner.on_request(content)

    def close(self) -> None:
        owner = getattr(self, "owner", None)
        if owner is not None:
            owner.close()
        super().close()

    def set_snapshot(self, state: dict[str, Any]) -> None:
        self.seq += 1
        self.snapshot = {**state, "seq": self.seq}

    def send_delta(self, delta: dict[str, Any], buffers: list[bytes] | None = None) -> None:
        self.seq += 1
        self.send({"kind": "delta", "base": self.seq - 1, "seq": self.seq, **delta}, buffers)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.owner.refresh()
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/html"] = self.owner.html()
            data["text/plain"] = self.owner.text()
        return bundle


def widget_class(name: str) -> type[LiveWidget]:
    """The widget class whose front end is ``static/<name>.js``."""
    cls = _CLASSES.get(name)
    if cls is None:
        cls = type(f"{name.title()}Widget", (LiveWidget,), {
            "_esm": STATIC / f"{name}.js",
            "__module__": __name__,
        })  # fmt: skip
        _CLASSES[name] = cls
    return cls


_CLASSES: dict[str, type[LiveWidget]] = {}


def new_display_id() -> str:
    return f"nbcluster-{next(_display_ids)}"

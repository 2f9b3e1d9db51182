"""What ``nbcluster.init()`` returns: the cluster's address, and how to reach it from elsewhere.

A notebook user needs the address and the way to attach from a terminal without reading
files, so the object displays them: as text in a terminal or ``print``, as a small HTML
table in a notebook. It is a dict as well (``info["address"]``, as Ray's context), so code
that indexes it keeps working.

Front ends can draw it their own way: a function in ``ClusterInfo.renderers`` gets the info
and returns a MIME bundle (``{"text/html": ..., "application/vnd.jupyter.widget-view+json":
...}``) or None to pass; the first bundle wins, the text and HTML here are the fallback.
``cluster_resources()`` and ``available_resources()`` return a ``ClusterResources``, a plain
dict as Ray's that front ends may draw the same way (a notebook kernel: the cluster widget).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any, ClassVar

from nbcluster.runtime.scheduling.limits import describe as describe_limits


class ClusterInfo(dict[str, Any]):
    """The cluster this process is connected to (keys: ``address``, ``node_id``,
    ``session_dir``, ``token_file``, ``started_here``, ``resources``, ``limits``: what limits
    this machine's node besides the machine's size, see ``limits``)."""

    #: Alternative displays, tried in order (see the module docstring).
    renderers: ClassVar[list[Callable[[ClusterInfo], dict[str, Any] | None]]] = []

    @property
    def address_info(self) -> dict[str, Any]:
        """Ray's name for the same information."""
        return dict(self)

    @property
    def address(self) -> str:
        return str(self["address"])

    def _how(self) -> list[tuple[str, str]]:
        """(what, how) pairs: the ways to reach this cluster."""
        address = self.address
        rows = [
            ("From a terminal here", f"nbcluster status --address {address}"),
            ("From Python here", f"nbcluster.init(address={address!r})"),
        ]
        if self.get("token_file"):
            rows.append(("Token file", str(self["token_file"])))
        rows.append(("Dashboard", f"nbcluster dashboard --address {address}"))
        return rows

    def dashboard_link(self) -> str | None:
        """The dashboard's URL for a notebook's display (``nc.dashboard_url()``), or None
        when the cluster cannot say (then the text rows still tell how to get one)."""
        from nbcluster.runtime.api.dashboard_link import dashboard_url

        try:
            return dashboard_url(timeout=5)
        except Exception:
            return None

    def _title(self) -> str:
        whose = "started by this process" if self.get("started_here") else "attached"
        res = self.get("resources") or {}
        amounts = ", ".join(f"{v:g} {k}" for k, v in sorted(res.items()) if v)
        limited = describe_limits(self.get("limits") or {})
        about = "; ".join(p for p in (whose, amounts, limited and f"limited to {limited}") if p)
        return f"nbcluster cluster at {self.address} ({about})"

    def __str__(self) -> str:
        width = max(len(what) for what, _ in self._how())
        lines = [self._title()]
        lines += [f"  {what + ':':<{width + 1}}  {how}" for what, how in self._how()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        link = self.dashboard_link()
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(what)}</th>"
            f"<td style='text-align:left'>"
            + (f"<a href='{html.escape(link)}' target='_blank' class='nbcluster-dashboard'>"
               f"open the dashboard</a>" if what == "Dashboard" and link else
               f"<code>{html.escape(how)}</code>")
            + "</td></tr>"
            for what, how in self._how()
        )  # fmt: skip
        return (
            f"<div class='nbcluster-info'><b>{html.escape(self._title())}</b>"
            f"<table>{rows}</table></div>"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        for render in self.renderers:
            bundle = render(self)
            if bundle:
                return bundle
        return {"text/plain": str(self), "text/html": self._repr_html_()}


class ClusterResources(dict[str, float]):
    """Resources by name (``{"CPU": 8.0, ...}``), as Ray's ``cluster_resources()`` returns;
    shown as the dict it is, unless a renderer draws it (``ClusterInfo.renderers``)."""

    renderers: ClassVar[list[Callable[[ClusterResources], dict[str, Any] | None]]] = []

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.pretty(dict(self))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        for render in self.renderers:
            bundle = render(self)
            if bundle:
                return bundle
        return {"text/plain": repr(dict(self))}

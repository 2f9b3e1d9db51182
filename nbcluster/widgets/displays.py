"""The cluster widget as the display of what ``nc.init()``, ``nc.cluster_resources()`` and
``nc.available_resources()`` return, in a notebook kernel (``install``, called by the kernel
extension): evaluating them in a cell shows the cluster live. The bundle keeps each object's
own text (and HTML), so a console or a front end without widgets shows what it always did.
"""

from __future__ import annotations

from typing import Any

from nbcluster.runtime.api.cluster_info import ClusterInfo, ClusterResources


def _bundle(widget: Any) -> dict[str, Any]:
    bundle = widget._repr_mimebundle_()
    return dict(bundle[0] if isinstance(bundle, tuple) else bundle)


def cluster_info_display(info: ClusterInfo) -> dict[str, Any] | None:
    """``nc.init()``'s value: the cluster widget headed by how to reach the cluster."""
    from nbcluster.widgets import available, cluster

    if not available():
        return None
    link = info.dashboard_link()
    head = {"title": info._title(), "rows": [list(r) for r in info._how()], "dashboard": link}
    widget = cluster(info=head)
    data = _bundle(widget)
    data["text/plain"] = str(info)
    data["text/html"] = info._repr_html_() + widget.owner.html()
    return data


def cluster_resources_display(resources: ClusterResources) -> dict[str, Any] | None:
    """``nc.cluster_resources()``'s value: the cluster widget; its text is the dict's."""
    from nbcluster.widgets import available, cluster

    if not available():
        return None
    widget = cluster()
    data = _bundle(widget)
    data["text/plain"] = repr(dict(resources))
    return data


def install() -> None:
    """Draw these objects as the cluster widget from now on (once per process)."""
    if cluster_info_display not in ClusterInfo.renderers:
        ClusterInfo.renderers.append(cluster_info_display)
    if cluster_resources_display not in ClusterResources.renderers:
        ClusterResources.renderers.append(cluster_resources_display)

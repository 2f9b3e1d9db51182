"""The jupyter-server extension: the dashboard of every cluster of this Jupyter server's user.

See ``app``. jupyter-server finds it through ``_jupyter_server_extension_points``; nothing
is imported from jupyter-server until the server loads it.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from nbcluster.extension.app import NbclusterExtension

    return [{"module": "nbcluster.extension.app", "app": NbclusterExtension}]

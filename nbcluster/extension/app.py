"""The nbcluster jupyter-server extension: every cluster of this user, under Jupyter's URL.

Enabled by ``pip install .`` (``jupyter_server_config.d/nbcluster.json``). It serves the
dashboard under ``{base_url}nbcluster/`` with Jupyter's login, so it works wherever the
server does, behind JupyterHub's proxy included, without another port. It also tells the
kernels this server starts its base URL (``NBCLUSTER_JUPYTER_BASE_URL``), so that
``nc.dashboard_url()`` and the widgets link here.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.extension.application import ExtensionApp

from nbcluster.extension.clusters import JupyterClusters
from nbcluster.extension.handlers import handlers


class NbclusterExtension(ExtensionApp):
    name = "nbcluster"
    load_other_extensions = True

    def initialize_settings(self) -> None:
        server: Any = self.serverapp
        base_url = str(server.base_url)
        # Kernels inherit the server's environment: they learn where their dashboard is.
        os.environ["NBCLUSTER_JUPYTER_BASE_URL"] = base_url
        self.clusters = JupyterClusters(server.kernel_manager, server.session_manager)
        self.settings.update(
            nbcluster_source=self.clusters,
            nbcluster_base_url=base_url,
            nbcluster_server="jupyter",
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        clusters = getattr(self, "clusters", None)
        if clusters is not None:
            clusters.close()

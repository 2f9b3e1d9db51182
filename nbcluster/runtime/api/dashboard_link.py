"""``nc.dashboard_url()``: the link to this cluster's dashboard that works in the user's browser.

Inside a Jupyter server that has the nbcluster extension (it tells its kernels its base URL
through ``NBCLUSTER_JUPYTER_BASE_URL``), the link is the extension's page for this cluster:
a path under Jupyter's base URL, behind Jupyter's own login, so it works unchanged behind
JupyterHub's proxy. Elsewhere it is a one-time login link to the head's own dashboard, whose
port the head opens on first request.
"""

from __future__ import annotations

from nbcluster.runtime.config import CONFIG


def dashboard_url(*, jupyter: bool | None = None, timeout: float = 10.0) -> str:
    """This cluster's dashboard: under Jupyter's base URL when the server extension serves it
    (``jupyter=None``: when known), else a one-time login link to the head's dashboard."""
    from nbcluster.runtime.api import session as api

    core = api.current_core()
    base = CONFIG.jupyter_base_url
    if jupyter is None:
        jupyter = bool(base) and api.owns_head()  # a cluster of this kernel's own
    if jupyter:
        if not base:
            raise RuntimeError("not running under a Jupyter server with the nbcluster extension")
        info = core.head_call("dash_info", timeout=timeout)
        return f"{base.rstrip('/')}/nbcluster/clusters/{info['cluster_id']}/"
    return str(core.head_call("dash_login", timeout=timeout)["url"])

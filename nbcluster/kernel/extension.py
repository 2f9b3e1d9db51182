"""``%load_ext nbcluster``: the notebook side of nbcluster, for any IPython kernel.

The nbcluster kernel loads this itself; in a plain ``python3`` kernel ``%load_ext nbcluster``
gives the same magics, the same output routing, the same remote tracebacks and the same
cancel-on-interrupt (only the cluster's start at kernel start and its stop at shutdown
belong to the nbcluster kernel). Nothing here is imported until the extension is loaded, so
``import nbcluster`` stays free of IPython.
"""

from __future__ import annotations

import sys
from typing import Any

#: Shells the extension is already loaded in (loading twice must not stack handlers).
_loaded: dict[int, Any] = {}


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%remote``/``%remote_actors``/``%cluster`` and, in a Jupyter kernel,
    output routing, remote tracebacks, cancel-on-interrupt and progress under cells that
    wait long."""
    if id(ipython) in _loaded:
        return
    from nbcluster.exceptions import NbclusterError
    from nbcluster.kernel import tracebacks
    from nbcluster.kernel.cluster_magic import ClusterMagics
    from nbcluster.kernel.magics import RemoteMagics

    ipython.register_magics(RemoteMagics)
    ipython.register_magics(ClusterMagics)
    ipython.set_custom_exc(  # TaskError is one: a remote error, shown with remote frames
        (NbclusterError, KeyboardInterrupt),
        tracebacks.make_handler(lambda: cell_sources(ipython)),
    )
    kernel = getattr(ipython, "kernel", None)
    router = None
    if kernel is not None:
        from nbcluster.kernel.routing import OutputRouter

        router = OutputRouter(kernel)
        router.install()
        ipython.events.register("post_run_cell", _cancel_on_interrupt(router, kernel))
        from nbcluster.widgets import auto, displays

        auto.install(kernel)
        displays.install()
        ipython.events.register("post_run_cell", _remember_cell_numbers(kernel))
    _loaded[id(ipython)] = router


def cell_sources(ipython: Any) -> Any:
    from nbcluster.kernel.tracebacks import CellSources

    return CellSources(getattr(ipython.compile, "_filename_map", {}))


def _remember_cell_numbers(kernel: Any) -> Any:
    """Widgets name a cell's work ``In[n]``: remember each request's execution count."""
    from nbcluster.widgets.names import CELLS

    def post_run_cell(result: Any) -> None:
        header = kernel.get_parent("shell").get("header") or {}
        count = getattr(result, "execution_count", None)
        if header.get("msg_id") and count is not None:
            CELLS[header["msg_id"]] = count

    return post_run_cell


def _cancel_on_interrupt(router: Any, kernel: Any) -> Any:
    """After a cell ends in KeyboardInterrupt, cancel the tasks that cell submitted (and only
    those: earlier cells' work keeps running)."""

    def post_run_cell(result: Any) -> None:
        if not isinstance(getattr(result, "error_in_exec", None), KeyboardInterrupt):
            return
        header = kernel.get_parent("shell").get("header") or {}
        msg_id = header.get("msg_id")
        if not msg_id:
            return
        try:
            n = router.cancel(msg_id)
        except Exception as e:  # the cluster may be gone; the interrupt itself succeeded
            print(f"nbcluster: could not cancel this cell's tasks: {e}", file=sys.stderr)
            return
        if n:
            s = "" if n == 1 else "s"
            print(f"nbcluster: cancelled {n} task{s} this cell submitted", file=sys.stderr)

    return post_run_cell

"""Progress that appears by itself under a cell whose ``get``/``wait`` blocks for a while.

The kernel registers ``on_long_wait`` with the runtime's long-wait hook
(``nbcluster.runtime.core.long_wait``); the hook runs on the runtime's watcher thread once a call
has blocked ``long_wait_s`` on two refs or more (``%%remote``: on its one). It publishes a
progress widget under the cell that is waiting, with that cell's parent header, and when the
call returns (on the cell's own thread, before the cell ends) it replaces the live widget by
a static HTML snapshot of the final state, which a saved notebook keeps.
``NBCLUSTER_AUTO_PROGRESS=0`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import long_wait


def install(kernel: Any) -> Callable[[], None] | None:
    """Show progress under cells of ``kernel`` that wait long; returns the uninstaller."""
    if not CONFIG.auto_progress:
        return None
    try:
        import anywidget  # noqa: F401
    except ImportError:
        return None
    return long_wait.add_hook(lambda wait: on_long_wait(kernel, wait))


def publish(kernel: Any, header: dict[str, Any], data: dict[str, Any], display_id: str,
            update: bool = False) -> None:  # fmt: skip
    """Send a display (or an update of one) to the cell whose request is ``header``, from any
    thread: IPython's ``display`` would pick whichever cell runs now."""
    msg_type = "update_display_data" if update else "display_data"
    kernel.session.send(
        kernel.iopub_socket, msg_type,
        {"data": data, "metadata": {}, "transient": {"display_id": display_id}},
        parent=header, ident=msg_type.encode(),
    )  # fmt: skip


def on_long_wait(kernel: Any, wait: long_wait.LongWait) -> None:
    header = getattr(wait.tag, "header", None)
    if not header or wait.done.is_set():
        return
    from nbcluster.widgets import _open
    from nbcluster.widgets.live import new_display_id
    from nbcluster.widgets.progress_view import ProgressView

    n = len(wait.refs)
    view = ProgressView(wait.refs, title=f"{wait.kind} on {n} ref{'s' if n != 1 else ''}")
    widget = _open(view, "progress")
    display_id = new_display_id()
    bundle = widget._repr_mimebundle_()
    publish(kernel, header, bundle[0] if isinstance(bundle, tuple) else bundle, display_id)

    def final() -> None:
        view.finish_now()
        publish(kernel, header, {"text/html": view.html(), "text/plain": view.text()},
                display_id, update=True)  # fmt: skip
        widget.close()

    wait.add_done_callback(final)

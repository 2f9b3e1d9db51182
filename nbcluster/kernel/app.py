"""The nbcluster kernel: an IPython kernel whose session owns a cluster.

The head starts in a background thread while the kernel starts, so the kernel answers the
frontend at once and the first cell (which waits for it) finds the cluster ready:
``import nbcluster as nc`` then needs no ``init()``. With ``NBCLUSTER_ADDRESS`` set, ``init``
attaches to that cluster instead. Shutdown and restart stop the cluster before the kernel
exits (jupyter_client allows about 5 s before SIGKILL; the head stops in about one); if the
kernel is killed outright, the head sees its stdin lifeline close and exits too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import Type

import nbcluster as nc

#: How long shutdown waits for a head that is still starting before stopping it.
_STARTING_HEAD_WAIT_S = 2.0


class NbclusterKernel(IPythonKernel):
    """``IPythonKernel`` plus a cluster that lives exactly as long as the kernel."""

    implementation = "nbcluster"
    implementation_version = nc.__version__

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cluster: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._cluster_error_shown = False
        threading.Thread(target=self._start_cluster, name="nbcluster-start", daemon=True).start()

    def _start_cluster(self) -> None:
        try:
            with _children_write_to_log():
                nc.init(_implicit=True)  # a later init(num_cpus=...) restarts it so
        except BaseException as e:
            self.log.error("nbcluster: the cluster did not start: %s", e)
            self._cluster.set_exception(e)
        else:
            self._cluster.set_result(None)

    async def do_execute(
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        """Run a cell once the cluster is up (only the first cells ever wait)."""
        if not self._cluster.done():
            await asyncio.wrap_future(self._cluster)
        error = self._cluster.exception()
        if error is not None and not self._cluster_error_shown:
            self._cluster_error_shown = True
            print(f"nbcluster: the cluster did not start: {error}", file=sys.stderr)
        reply: dict[str, Any] = await super().do_execute(
            code,
            silent,
            store_history,
            user_expressions,
            allow_stdin,
            cell_meta=cell_meta,
            cell_id=cell_id,
        )
        return reply

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:
        """Stop the cluster first: a restarted kernel starts a fresh one."""
        try:
            self._cluster.result(timeout=_STARTING_HEAD_WAIT_S)
        except BaseException:  # failed or still starting: shutdown stops whatever exists
            pass
        nc.shutdown()
        reply: dict[str, Any] = super().do_shutdown(restart)
        return reply


@contextmanager
def _children_write_to_log() -> Iterator[None]:
    """Processes started in here (the head and its workers) inherit the kernel's own
    stdout/stderr (the server's console or log), not ipykernel's capture pipe, which would
    put whatever they print outside any task into whichever cell happens to be running."""
    restore: list[tuple[int, int]] = []
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        original = getattr(stream, "_original_stdstream_copy", None)
        if original is None:
            continue
        restore.append((fd, os.dup(fd)))
        os.dup2(original, fd)
    try:
        yield
    finally:
        for fd, saved in restore:
            os.dup2(saved, fd)
            os.close(saved)


class NbclusterKernelApp(IPKernelApp):
    """``IPKernelApp`` with the nbcluster kernel and the ``nbcluster`` extension loaded."""

    name = "nbcluster-kernel"
    kernel_class = Type(  # type: ignore[assignment]
        NbclusterKernel,
        klass="ipykernel.kernelbase.Kernel",
        config=True,
        help="The kernel class; a subclass of NbclusterKernel to customise it.",
    )

    def init_extensions(self) -> None:
        super().init_extensions()
        if self.shell is not None:
            self.shell.extension_manager.load_extension("nbcluster")


def launch(argv: list[str] | None = None) -> None:
    """Start the kernel (what the kernelspec runs: ``python -m nbcluster.kernel -f FILE``)."""
    NbclusterKernelApp.launch_instance(argv=argv)

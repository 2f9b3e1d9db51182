"""Process names by role (``nbcluster::head``, ``nbcluster::worker``, ``nbcluster::Counter``)
in ``ps``, ``top`` and ``pgrep``, as Ray names its processes.

Every process of a node starts as ``python -m nbcluster.runtime.node.node_main`` (workers are forked
from it), so without this ``ps`` shows a dozen identical lines. Two things carry a name:

- the command line (``ps aux``, ``pgrep -f``): the kernel shows the memory between the
  process's ``arg_start`` and ``arg_end`` (fields 48 and 49 of ``/proc/self/stat``), so the
  title is written there, NUL-padded to its end (``psutil`` then reads it as the first
  argument, followed by empty ones). It must fit: the node's own command line (the
  interpreter's path plus ``-m nbcluster.runtime.node.node_main``) is longer than any title;
- the thread name (``comm``: ``top``, ``ps -o comm``), set with ``prctl(PR_SET_NAME)``, at
  most 15 bytes.

This is Linux-only, as the runtime is (memfd, ``/proc``), and needs no dependency: the
``setproctitle`` package does the same plus moving ``environ`` to make room for titles
longer than the original command line, which nbcluster's short titles never need.
"""

from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger("nbcluster")

_PR_SET_NAME = 15
PREFIX = "nbcluster::"


def _arg_area() -> tuple[int, int] | None:
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[1].split()  # after "pid (comm)": comm may hold spaces
    try:  # fields 48 and 49 of the whole line are 46 and 47 after the comm
        return int(fields[45]), int(fields[46])
    except (IndexError, ValueError):
        return None


@functools.cache
def _libc() -> ctypes.CDLL:
    """The process's own symbols (libc's ``prctl`` among them), loaded once: forked workers
    inherit it, so naming one costs no library lookup."""
    return ctypes.CDLL(None, use_errno=True)


def set_title(role: str) -> None:
    """Show this process as ``nbcluster::<role>`` (best effort: never fails the caller)."""
    title = f"{PREFIX}{role}".encode()
    try:
        _libc().prctl(_PR_SET_NAME, ctypes.c_char_p(title[:15]), 0, 0, 0)
        area = _arg_area()
        if area is None:
            return
        start, end = area
        size = end - start
        if size <= 1:
            return
        text = title[: size - 1]
        ctypes.memmove(start, text + b"\0" * (size - len(text)), size)
    except (OSError, AttributeError, ValueError) as e:
        log.debug("could not set the process title to %s: %s", title, e)

"""A node's log is rotated before it fills the disk: a session can run for weeks.

The log is whatever file the node's stdout is (see ``log_tail``), opened for appending and
shared with every worker the node forked, so it cannot be renamed and reopened under them.
It is rotated the way logrotate's ``copytruncate`` does it: copied to ``<log>.1`` (older
copies shift to ``.2``, ...), then truncated in place; appending writers carry on at the new
end. A few lines written between the copy and the truncation may be lost, which is the
price of never stopping the writers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.observe.log_tail import log_path

log = logging.getLogger("nbcluster.node")

#: How often a node looks at the size of its log (seconds).
CHECK_S = 2.0


def rotate_if_large(path: str, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is larger than ``max_bytes``; whether it was."""
    try:
        if os.stat(path).st_size <= max_bytes:
            return False
        for i in range(backups - 1, 0, -1):
            older = f"{path}.{i}"
            if os.path.exists(older):
                os.replace(older, f"{path}.{i + 1}")
        if backups > 0:
            shutil.copyfile(path, f"{path}.1")
        os.truncate(path, 0)
    except OSError as e:
        log.warning("cannot rotate the log %s: %s", path, e)
        return False
    return True


def schedule(loop: object) -> None:
    """Check this node's log every ``CHECK_S`` on ``loop`` (an asyncio loop), if it is a file
    it appends to (a log opened otherwise would grow holes once truncated)."""
    path = log_path()
    if path is None or CONFIG.log_max_bytes <= 0:
        return
    try:
        appending = fcntl.fcntl(1, fcntl.F_GETFL) & os.O_APPEND
    except OSError:
        return
    if not appending:
        return

    def check() -> None:
        rotate_if_large(path, CONFIG.log_max_bytes, CONFIG.log_backups)
        loop.call_later(CHECK_S, check)  # type: ignore[attr-defined]

    loop.call_later(CHECK_S, check)  # type: ignore[attr-defined]

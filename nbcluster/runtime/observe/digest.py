"""What the head's live views have in common: the digest interface, state codes and ids.

A digest is what a live view shows, kept by the head beside its tables: the progress of a set
of tasks (``digest_progress``), the graph of a scope of tasks and their objects
(``digest_graph``), and the cluster's nodes (``digest_nodes``).

A notebook widget needs far less than the raw event stream: per interval, what changed among
*its* tasks, in the form it draws. Computing that where the tables already are keeps the
kernel (whose GIL also submits the tasks) out of the per-event work: it receives one small
message per interval and forwards it to the browser.

Each digest follows the tables incrementally: ``absorb`` hears which tasks, objects and nodes
changed since the last interval and keeps what its scope needs; ``take`` gives the change to
push (None: nothing new) and ``full`` the whole picture a view that opens, or lost track,
renders from. Payloads are plain msgpack data with ids in hex.
"""

from __future__ import annotations

import re
from typing import Any

from nbcluster.runtime.observe.state_tables import (
    CANCELLED,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SCHEDULED,
)

#: State codes, as views draw them: tasks 0-4, objects 5 (live) and 6 (freed).
STATE_NAMES = ("pending", "running", "finished", "failed", "cancelled", "live", "freed")
CODE = {PENDING: 0, SCHEDULED: 0, RUNNING: 1, FINISHED: 2, FAILED: 3, CANCELLED: 4}
LIVE, FREED = 5, 6
#: Bytes of a task id; an object id is its producer's task id + a 4-byte index.
TASK_ID_BYTES = 16
_MSG_ID = re.compile(r"msg_id='([^']+)'")


def cell_of(tag: Any) -> str | None:
    """The cell (request msg_id) a task's tag names: a kernel tags work with its cell."""
    if isinstance(tag, str):
        m = _MSG_ID.search(tag)
        return m.group(1) if m else tag
    return None


def task_ids(value: Any) -> set[bytes]:
    """Task ids as a spec gives them: one blob of 16-byte ids (compact for 100,000 of them),
    or a list."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) % TASK_ID_BYTES:
            raise ValueError(f"a blob of task ids is a multiple of {TASK_ID_BYTES} bytes long")
        return {bytes(value[i : i + TASK_ID_BYTES]) for i in range(0, len(value), TASK_ID_BYTES)}
    return {bytes(t) for t in value or ()}


def short(name: str) -> str:
    """A function's name without its module, as views label it."""
    return name.rpartition(".")[2] or name


class Digest:
    """The interface every digest has (see the module docstring)."""

    def absorb(self, tasks: set[bytes], objects: set[bytes], nodes: set[str],
               freed: set[bytes]) -> None:  # fmt: skip
        raise NotImplementedError

    def take(self) -> tuple[dict[str, Any], bool] | None:
        """What changed since the last ``take`` (or whole picture pushed), and whether it is
        a whole picture; None if nothing did."""
        raise NotImplementedError

    def full(self) -> dict[str, Any]:
        """The whole picture now (changes nothing: asking is free)."""
        raise NotImplementedError

    def pushed_full(self) -> None:
        """A whole picture was pushed: what was waiting to be sent is in it."""

    def rebuild(self) -> None:
        """Start again from the tables (after a pause, during which nothing was absorbed)."""
        raise NotImplementedError

    #: whether deltas are followed by a whole picture once they stop (what a saved
    #: notebook keeps, for views that draw deltas)
    settles = False

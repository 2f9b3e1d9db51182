"""Identifiers for tasks, objects, workers and nodes.

A task id is the submitting process's 8-byte prefix plus an 8-byte counter, so ids are unique
cluster-wide without coordination and cheap to make on the hot path. An object id is its task
id plus a 4-byte return index (index 0 is reserved for ``put``).
"""

from __future__ import annotations

import itertools
import os
import struct

_PREFIX = os.urandom(8)
_counter = itertools.count(1)
_IDX = struct.Struct(">I")


def reset_after_fork() -> None:
    """Give a forked child its own id space."""
    global _PREFIX, _counter
    _PREFIX = os.urandom(8)
    _counter = itertools.count(1)


def new_task_id() -> bytes:
    return _PREFIX + next(_counter).to_bytes(8, "big")


def object_id(task_id: bytes, index: int) -> bytes:
    return task_id + _IDX.pack(index)


def put_object_id() -> bytes:
    return new_task_id() + _IDX.pack(0)


def task_id_of(oid: bytes) -> bytes:
    return oid[:16]


def random_id(n: int = 16) -> bytes:
    return os.urandom(n)

"""ObjectRef: a future for a value in the cluster, and a node of the dependency graph.

Each live ObjectRef counts as one local reference in its process's reference table; when the
last one goes (and no borrower or containing object holds it), the value is freed everywhere.
A ref pickled into a task argument, a return value or a stored object travels as
(object id, owner address) and registers its new process as a borrower on arrival.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nbcluster.runtime.objects import serialization

# Set by the core worker of this process when it starts, cleared at shutdown.
_core: Any = None


def set_core(core: Any) -> None:
    global _core
    _core = core


def get_core() -> Any:
    return _core


class ObjectRef:
    __slots__ = ("__weakref__", "_core", "_id", "_owner")

    def __init__(self, oid: bytes, owner: str, _add_ref: bool = True) -> None:
        self._id = oid
        self._owner = owner
        core = _core
        self._core = core
        if core is not None and _add_ref:
            core.refs.add_local(oid, owner)

    def __del__(self) -> None:
        # The garbage collector runs this on any thread, possibly one holding the runtime's
        # locks: it only queues the release (``core/release_queue.py``), never blocks.
        core = self._core
        if core is not None and core is _core:
            try:
                core.release_ref(self._id)
            except Exception:  # interpreter shutdown: nothing left to free
                pass

    def binary(self) -> bytes:
        return self._id

    def adopt(self, core: Any) -> None:
        """Count this ref in ``core``, a core that did not exist when it was made (a ref kept
        across a re-init), so that its release goes there."""
        core.refs.add_local(self._id, self._owner)
        self._core = core

    def hex(self) -> str:
        return self._id.hex()

    def owner_address(self) -> str:
        return self._owner

    def task_id(self) -> bytes:
        return self._id[:16]

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __reduce__(self) -> Any:
        serialization.note_contained_ref(self)
        return (_rebuild, (self._id, self._owner))

    def future(self) -> Any:
        """A concurrent.futures.Future resolved with the value (or the error)."""
        core = self._core if self._core is not None else _core
        if core is None:
            raise RuntimeError("nbcluster is not initialized: call nbcluster.init() first")
        return core.future_of(self)

    def as_future(self) -> asyncio.Future[Any]:
        """An asyncio future of the value, in the running event loop (as Ray's): for
        ``asyncio.wait_for``, ``asyncio.gather`` and friends."""
        return asyncio.wrap_future(self.future())

    def __await__(self) -> Any:
        return self.as_future().__await__()


def _rebuild(oid: bytes, owner: str) -> ObjectRef:
    return ObjectRef(oid, owner)

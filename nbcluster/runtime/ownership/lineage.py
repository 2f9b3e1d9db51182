"""Lineage: the tasks an owner keeps so it can rebuild objects lost with a node.

A task whose result went to a node's store stays here (with its arguments pinned) as long as
that result is referenced, so if the node dies the owner can run it again — recursively, as
its arguments may be lost too. Memory is bounded, by count (``max_lineage_tasks``) and, as in
Ray, by bytes (``max_lineage_bytes``: a task's arguments can be large): beyond either the
oldest lineage is evicted, and an object that then needs rebuilding fails with a clear error.
"""

from __future__ import annotations

import collections
from typing import Any

from nbcluster.runtime.config import CONFIG

#: What a kept task costs besides its pickled arguments: the spec and a ref per argument.
SPEC_BYTES = 400
REF_BYTES = 100


def spec_bytes(spec: Any) -> int:
    return SPEC_BYTES + len(spec.args_blob) + REF_BYTES * (len(spec.deps) + len(spec.held))


class Lineage:
    def __init__(self) -> None:
        self._specs: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self._sizes: dict[bytes, int] = {}
        self.bytes = 0
        self.evicted = 0

    def keep(self, spec: Any) -> None:
        tid = spec.task_id
        if tid in self._specs:
            self._specs.move_to_end(tid)
        else:
            self._specs[tid] = spec
            size = self._sizes[tid] = spec_bytes(spec)
            self.bytes += size
        while self._specs and (
            len(self._specs) > CONFIG.max_lineage_tasks or self.bytes > CONFIG.max_lineage_bytes
        ):
            old_id, old = self._specs.popitem(last=False)
            self.bytes -= self._sizes.pop(old_id)
            self._evict(old)

    def _forget(self, spec: Any) -> bool:
        if self._specs.pop(spec.task_id, None) is None:
            return False
        self.bytes -= self._sizes.pop(spec.task_id)
        return True

    def drop(self, spec: Any) -> None:
        """Its results are all freed: nothing can need it again."""
        if self._forget(spec):
            spec.deps = []
            spec.held = []

    def drop_keep(self, spec: Any) -> None:
        """Running again: out of the table until it completes (and is kept anew)."""
        self._forget(spec)

    def _evict(self, spec: Any) -> None:
        self.evicted += 1
        spec.lineage_evicted = True
        spec.deps = []
        spec.held = []

    def __len__(self) -> int:
        return len(self._specs)

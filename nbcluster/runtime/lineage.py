"""Lineage: the tasks an owner keeps so it can rebuild objects lost with a node.

A task whose result went to a node's store stays here (with its arguments pinned) as long as
that result is referenced, so if the node dies the owner can run it again — recursively, as
its arguments may be lost too. Memory is bounded: beyond ``max_lineage_tasks`` the oldest
lineage is evicted, and an object that then needs rebuilding fails with a clear error.
"""

from __future__ import annotations

import collections
from typing import Any

from nbcluster.runtime.config import CONFIG


class Lineage:
    def __init__(self) -> None:
        self._specs: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self.evicted = 0

    def keep(self, spec: Any) -> None:
        self._specs[spec.task_id] = spec
        self._specs.move_to_end(spec.task_id)
        while len(self._specs) > CONFIG.max_lineage_tasks:
            _, old = self._specs.popitem(last=False)
            self._evict(old)

    def drop(self, spec: Any) -> None:
        """Its results are all freed: nothing can need it again."""
        if self._specs.pop(spec.task_id, None) is not None:
            spec.deps = []
            spec.held = []

    def drop_keep(self, spec: Any) -> None:
        """Running again: out of the table until it completes (and is kept anew)."""
        self._specs.pop(spec.task_id, None)

    def _evict(self, spec: Any) -> None:
        self.evicted += 1
        spec.lineage_evicted = True
        spec.deps = []
        spec.held = []

    def __len__(self) -> int:
        return len(self._specs)

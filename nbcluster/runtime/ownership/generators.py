"""``num_returns="dynamic"``: a generator task whose values each become an object, as Ray's.

The task's one return value is a ``DynamicObjectRefGenerator``: iterating it gives one
ObjectRef per value the generator yielded, in order, so a task can return as many objects
as it decides while it runs. The worker that ran the task owns them (it stays alive while
they are referenced, see ``worker_pool``'s idle workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from nbcluster.runtime.ownership.object_ref import ObjectRef


class DynamicObjectRefGenerator:
    """The refs a ``num_returns="dynamic"`` task yielded."""

    def __init__(self, refs: list[ObjectRef]) -> None:
        self._refs = refs

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


def each_value_stored(fn: Any, put: Any) -> Any:
    """``fn`` as a task of dynamic returns: every value it yields is stored with ``put``."""

    def run(*args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        return DynamicObjectRefGenerator([put(value) for value in fn(*args, **kwargs)])

    return run

"""``as_completed`` and ``map_unordered``, as Ray's ``ray.util``: results as they are done.

Both wait for a batch (``chunk_size``) at a time with ``wait``, as Ray's do, so the order is
roughly that of completion; keyword arguments go to ``wait`` (``timeout``, ``fetch_local``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from nbcluster.runtime.api.session import get, wait
from nbcluster.runtime.ownership.object_ref import ObjectRef

#: Ray's defaults.
DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def _batch(
    refs: list[ObjectRef], chunk_size: int, yield_obj_refs: bool, kwargs: dict[str, Any]
) -> tuple[list[Any], list[ObjectRef]]:
    ready, rest = wait(refs, num_returns=min(chunk_size, len(refs)), **kwargs)
    return (ready if yield_obj_refs else get(ready)), rest


def _check(chunk_size: int, kwargs: dict[str, Any]) -> None:
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")


def as_completed(
    refs: Sequence[ObjectRef], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False, **kwargs: Any,
) -> Iterator[Any]:  # fmt: skip
    """The values of ``refs`` (or the refs, ``yield_obj_refs``) as batches of
    ``chunk_size`` of them are done."""
    _check(chunk_size, kwargs)
    pending = list(refs)
    while pending:
        done, pending = _batch(pending, chunk_size, yield_obj_refs, kwargs)
        yield from done


def map_unordered(
    fn: Any, items: Iterable[Any], *, backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False, **kwargs: Any,
) -> Iterator[Any]:  # fmt: skip
    """``fn.remote(item)`` for each item, at most ``backpressure_size`` in flight, the results
    as they are done."""
    if backpressure_size is not None and backpressure_size <= 0:
        raise ValueError("backpressure_size must be positive.")
    _check(chunk_size, kwargs)
    limit = float("inf") if backpressure_size is None else backpressure_size
    refs: list[ObjectRef] = []
    for item in items:
        refs.append(fn.remote(item))
        if len(refs) >= limit:
            done, refs = _batch(refs, chunk_size, yield_obj_refs, kwargs)
            yield from done
    yield from as_completed(refs, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)

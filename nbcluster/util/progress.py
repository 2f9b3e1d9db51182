"""A task's own progress, shown under the progress bar of the cell that launched it.

Inside a task, wrap a loop, or count by hand, tqdm's way::

    from nbcluster.util.progress import progress, tqdm

    @nc.remote
    def train(epochs):
        for epoch in progress(range(epochs), desc="epochs"):   # or tqdm(...), trange(n)
            ...
        with tqdm(total=rows, desc="rows", unit="row") as bar:
            bar.update(1000)

Each bar reaches the head as an event a few times a second at most (``REPORT_S``) and on
close, so a tight loop pays one clock read per step; a notebook progress widget (the one that
appears under a waiting cell, or ``nc.widgets.progress(refs)``) draws it as a sub-bar under
its task's function, and its static snapshot keeps the last values. Outside a task nothing is
reported: the wrapper only iterates, so the same function runs locally unchanged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

from nbcluster.runtime import events as E

#: Seconds between two reports of one bar (the first and the last are always sent).
REPORT_S = 0.2
T = TypeVar("T")
_keys = itertools.count(1)


def _current_task_id() -> bytes | None:
    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()
    task = core.current_task if core is not None else None
    return task.task_id if task is not None else None


class tqdm(Generic[T]):
    """tqdm's interface, and its name, so code written for tqdm runs unchanged: ``iterable``,
    ``total``, ``desc``, ``unit``; ``update``, ``set_description``, ``close``, ``n``; a
    context manager. It reports to the cluster instead of drawing."""

    def __init__(
        self, iterable: Iterable[T] | None = None, desc: str | None = None,
        total: float | None = None, unit: str = "it", **_ignored: Any,
    ) -> None:  # fmt: skip
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.n: float = 0
        self.closed = False
        self._task = _current_task_id()
        self._key = next(_keys)
        self._sent_at = 0.0
        self._report(force=True)

    def _report(self, force: bool = False) -> None:
        if self._task is None:
            return
        now = time.monotonic()
        if force or now - self._sent_at >= REPORT_S:
            self._sent_at = now
            E.task_progress(self._task, self._key, self.desc, self.n, self.total, self.unit)

    def update(self, n: float = 1) -> None:
        self.n += n
        self._report()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""
        self._report(force=True)

    def refresh(self) -> None:
        self._report(force=True)

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Accepted for tqdm compatibility; not shown."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._report(force=True)

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this bar was made without an iterable: call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.n += 1
                self._report()
        finally:
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> tqdm[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(iterable: Iterable[T] | None = None, desc: str | None = None,
             total: float | None = None, unit: str = "it", **kwargs: Any) -> tqdm[T]:  # fmt: skip
    """Report this task's progress through ``iterable`` (or by ``update``), as tqdm does."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, **kwargs)


def trange(*args: int, **kwargs: Any) -> tqdm[int]:
    """``tqdm(range(*args))``."""
    return tqdm(range(*args), **kwargs)


__all__ = ["REPORT_S", "progress", "tqdm", "trange"]

"""Keeps a node from running out of memory by killing the newest task that pushed it over.

The agent samples the machine's memory every ``memory_monitor_interval_s``. Above the
threshold (``memory_usage_threshold`` as a fraction of RAM, or ``memory_limit_bytes`` when
set) it kills the worker of the most recently leased task — the newest work is the cheapest
to lose and the likeliest cause — after telling that task's owner why, so the owner retries
it or raises ``OutOfMemoryError`` instead of a plain crash. Actors are never chosen; one kill
at a time, then a grace period for the memory to come back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

from nbcluster.runtime.config import CONFIG

log = logging.getLogger("nbcluster.memory")

GRACE_S = 1.0


def memory_limit() -> int:
    if CONFIG.memory_limit_bytes > 0:
        return CONFIG.memory_limit_bytes
    return int(psutil.virtual_memory().total * CONFIG.memory_usage_threshold)


def used_memory() -> int:
    vm = psutil.virtual_memory()
    return int(vm.total - vm.available)


class MemoryMonitor:
    def __init__(
        self,
        loop: Any,
        candidates: Callable[[], Iterable[Any]],
        kill: Callable[[Any, str], None],
    ) -> None:
        self.loop = loop
        self._candidates = candidates  # leased task workers, with a .lease_time
        self._kill = kill
        self._quiet_until = 0.0
        self.kills = 0
        loop.call_later(CONFIG.memory_monitor_interval_s, self._sample)

    def _sample(self) -> None:
        try:
            self.check()
        finally:
            self.loop.call_later(CONFIG.memory_monitor_interval_s, self._sample)

    def check(self) -> None:
        now = time.monotonic()
        if now < self._quiet_until:
            return
        used, limit = used_memory(), memory_limit()
        if used <= limit:
            return
        victims = sorted(self._candidates(), key=lambda w: w.lease_time, reverse=True)
        if not victims:
            return
        victim = victims[0]
        why = (
            f"the node ran low on memory: {used / 2**30:.2f} GiB used, over the limit of "
            f"{limit / 2**30:.2f} GiB, so its newest task (worker pid {victim.pid}) was killed"
        )
        log.warning("%s", why)
        self.kills += 1
        self._quiet_until = now + GRACE_S
        self._kill(victim, why)

"""Keeps a node from running out of memory by killing the newest task that pushed it over.

The agent samples memory every ``memory_monitor_interval_s``, against this user's limits
(``limits``), each counted the way it is enforced:

* the bound the kernel enforces: a cgroup's memory limit, measured by the cgroup's own use
  (what the kernel's OOM killer looks at), or else the machine's RAM, measured by the
  machine's use;
* a tighter limit that nothing enforces (the spawner's ``MEM_LIMIT``, the site's
  ``mem_limit``), measured by what this node itself holds: its processes' private memory and
  its object store.

Past ``memory_usage_threshold`` of a limit (or ``memory_limit_bytes`` of the enforced one,
when set) it kills the worker of the most recently leased task — the newest work is the
cheapest to lose and the likeliest cause — after telling that task's owner why, so the owner
retries it or raises ``OutOfMemoryError`` instead of a plain crash, and the kernel's OOM
killer never has to choose (it would take the user's notebook kernel as readily as a task).
Actors are never chosen; one kill at a time, then a grace period for the memory to come back.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.scheduling import limits as limits_mod
from nbcluster.runtime.scheduling.limits import CGROUP, MACHINE, Limit, Limits
from nbcluster.status_report import format_bytes

log = logging.getLogger("nbcluster.memory")

GRACE_S = 1.0
#: Past this share of a threshold the monitor samples five times as often: reading the use
#: costs microseconds, and a task filling memory at a few hundred MB/s would otherwise pass
#: a small cgroup's last 5% between two samples and meet the kernel's OOM killer instead.
NEAR = 0.8


@dataclass(frozen=True)
class Check:
    """One limit the monitor holds the node under, and how to measure use against it."""

    limit: Limit
    #: kill past this many bytes in use
    threshold: int
    used: Callable[[], int]
    #: the threshold is ``memory_limit_bytes``, not a share of the limit
    explicit: bool = False

    def what(self) -> str:
        """The line crossed, for the message a killed task's owner gets."""
        if self.explicit:
            return f"the memory monitor's limit ({CONFIG.origin('memory_limit_bytes')})"
        size = format_bytes(self.limit.amount)
        share = f"{CONFIG.memory_usage_threshold:.0%} of"
        if self.limit.kind == MACHINE:
            return f"{share} the machine's {size} of RAM"
        return f"{share} this user's memory limit of {size} ({self.limit.source})"


def checks(limits: Limits, own_use: Callable[[], int]) -> list[Check]:
    """What to watch: the enforced bound always, the user's own limit when it is tighter."""
    enforced = limits.enforced_memory
    group = enforced.cgroup
    if enforced.kind == CGROUP and group is not None:
        used: Callable[[], int] = functools.partial(limits_mod.cgroup_memory_used, group)
    else:
        used = limits_mod.machine_memory_used
    explicit = CONFIG.memory_limit_bytes > 0
    threshold = CONFIG.memory_limit_bytes if explicit else _threshold(enforced)
    out = [Check(enforced, threshold, used, explicit)]
    if limits.memory != enforced:
        out.append(Check(limits.memory, _threshold(limits.memory), own_use))
    return out


def _threshold(limit: Limit) -> int:
    return int(limit.amount * CONFIG.memory_usage_threshold)


def private_memory(pids: Iterable[int]) -> int:
    """Memory these processes hold for themselves: resident, less pages shared with others
    (libraries, the object store's shared memory, which the caller counts once)."""
    total = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_info()
        except psutil.Error:
            continue  # gone meanwhile
        total += max(0, int(info.rss) - int(getattr(info, "shared", 0)))
    return total


class MemoryMonitor:
    def __init__(
        self,
        loop: Any,
        candidates: Callable[[], Iterable[Any]],
        kill: Callable[[Any, str], None],
        limits: Limits,
        own_use: Callable[[], int],
    ) -> None:
        self.loop = loop
        self._candidates = candidates  # leased task workers, with a .lease_time
        self._kill = kill
        self.checks = checks(limits, own_use)
        self._quiet_until = 0.0
        self.kills = 0
        loop.call_later(CONFIG.memory_monitor_interval_s, self._sample)

    def _sample(self) -> None:
        interval = CONFIG.memory_monitor_interval_s
        try:
            if self.check() > NEAR:
                interval /= 5  # close to the limit: memory can grow a lot in one interval
        finally:
            self.loop.call_later(interval, self._sample)

    def check(self) -> float:
        """Kill a task if a limit is passed; how close the nearest one is (1.0: at it)."""
        now = time.monotonic()
        if now < self._quiet_until:
            return 0.0
        nearest = 0.0
        for check in self.checks:
            used = check.used()
            nearest = max(nearest, used / max(1, check.threshold))
            if used > check.threshold:
                break
        else:
            return nearest
        victims = sorted(self._candidates(), key=lambda w: w.lease_time, reverse=True)
        if not victims:
            return nearest
        victim = victims[0]
        why = (
            f"the node ran low on memory: {format_bytes(used)} in use, over the limit of "
            f"{format_bytes(check.threshold)}, {check.what()}, so its newest task "
            f"(worker pid {victim.pid}) was killed"
        )
        log.warning("%s", why)
        self.kills += 1
        self._quiet_until = now + GRACE_S
        self._kill(victim, why)
        return nearest

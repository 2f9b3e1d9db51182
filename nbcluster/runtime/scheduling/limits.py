"""What this user's processes may use on this machine, CPUs and memory, and who says so.

On a shared host (a JupyterHub with many users) each user gets a share, said in up to three
places: the cgroup the spawner put them in (SystemdSpawner's ``CPUQuota``/``MemoryMax``, a
container's limits), the ``CPU_LIMIT``/``MEM_LIMIT`` environment variables JupyterHub's
spawners set when ``cpu_limit``/``mem_limit`` are configured (even the spawners that do not
enforce them), and ``cpu_limit``/``mem_limit`` in nbcluster's own configuration (a site's
config file, see ``config``). The smallest wins, as in Ray and Dask: a node started with the
defaults takes that many CPUs (so that many workers), its object store takes
``object_store_fraction`` of that memory, and the memory monitor keeps the node under it,
counting memory the way the limit counts it (``memory_monitor``).

Both cgroup versions are read, through ``/proc/self/cgroup`` and the cgroup mounts in
``/proc/self/mountinfo`` (so a container that mounts only its own part of the tree is read
right); a limit on an ancestor of the process's cgroup applies too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from nbcluster.runtime.config import CONFIG, Config
from nbcluster.status_report import format_bytes

#: Kinds of limit, from the least to the most binding for the kernel.
MACHINE, CONFIGURED, SPAWNER, CGROUP = "machine", "config", "spawner", "cgroup"


@dataclass(frozen=True)
class Limit:
    """One bound: CPUs or bytes, of a ``kind``, described for a person by ``source``."""

    amount: float
    kind: str
    #: e.g. "cgroup quota", "MEM_LIMIT", "mem_limit in /etc/nbcluster/config.json"
    source: str
    #: For a cgroup's memory limit: the cgroup (its directory) whose use the kernel holds
    #: to it, so the memory monitor reads the same figure.
    cgroup: Cgroup | None = None


@dataclass(frozen=True)
class Limits:
    """What this user's processes may use here (``detect``)."""

    cpus: Limit
    memory: Limit
    #: The memory bound the kernel enforces: the tightest cgroup limit, else the machine's RAM.
    #: ``memory`` is tighter when the spawner's or the site's limit is (nothing enforces those).
    enforced_memory: Limit

    def applied(self) -> dict[str, dict[str, Any]]:
        """The limits other than the machine's own size, as nodes report them (``nodes()``'s
        ``Limits``): ``{"CPU": {"amount": 2.0, "source": "cgroup quota"}, "memory": ...}``."""
        out = {}
        for name, limit in (("CPU", self.cpus), ("memory", self.memory)):
            if limit.kind != MACHINE:
                out[name] = {"amount": limit.amount, "source": limit.source}
        return out


def describe(applied: Mapping[str, Mapping[str, Any]]) -> str:
    """``Limits.applied()`` for a person: "2 CPUs (cgroup quota), 1.0 GiB memory (cgroup
    limit)"; empty when nothing but the machine limits the node."""
    parts = []
    cpu = applied.get("CPU")
    if cpu:
        n = cpu["amount"]
        parts.append(f"{n:g} CPU{'' if n == 1 else 's'} ({cpu['source']})")
    memory = applied.get("memory")
    if memory:
        parts.append(f"{format_bytes(memory['amount'])} memory ({memory['source']})")
    return ", ".join(parts)


def detect(
    env: Mapping[str, str] | None = None, config: Config | None = None, root: str = "/"
) -> Limits:
    """This process's limits, read now (cheap: a few small files).

    ``root`` is where ``/proc`` and ``/sys`` are found (tests give a made-up tree).
    """
    env = os.environ if env is None else env
    config = CONFIG if config is None else config
    cpus = [Limit(float(_machine_cpus()), MACHINE, "this machine")]
    quota = _cpu_quota(root)
    if quota is not None:
        cpus.append(Limit(_whole_cpus(quota), CGROUP, "cgroup quota"))
    spawner = _env_number(env, "CPU_LIMIT", "a number of CPUs")
    if spawner:
        cpus.append(Limit(_whole_cpus(spawner), SPAWNER, "CPU_LIMIT"))
    if config.cpu_limit > 0:
        cpus.append(Limit(_whole_cpus(config.cpu_limit), CONFIGURED, config.origin("cpu_limit")))

    enforced = Limit(float(psutil.virtual_memory().total), MACHINE, "this machine")
    cgroup = _memory_limit(root)
    if cgroup is not None and cgroup[1] < enforced.amount:
        enforced = Limit(float(cgroup[1]), CGROUP, "cgroup limit", cgroup[0])
    memory = [enforced]
    spawner = _env_number(env, "MEM_LIMIT", "a number of bytes")
    if spawner:
        memory.append(Limit(float(int(spawner)), SPAWNER, "MEM_LIMIT"))
    if config.mem_limit > 0:
        memory.append(Limit(float(config.mem_limit), CONFIGURED, config.origin("mem_limit")))
    return Limits(_tightest(cpus), _tightest(memory), enforced)


def _tightest(limits: list[Limit]) -> Limit:
    """The smallest; among equals the one the kernel enforces (a cgroup's) first."""
    order = (CGROUP, SPAWNER, CONFIGURED, MACHINE)
    return min(limits, key=lambda lim: (lim.amount, order.index(lim.kind)))


def _whole_cpus(amount: float) -> float:
    """A fractional share rounded up, as Dask does (1.5 CPUs run two workers, each slowed a
    little, rather than one and half a CPU idle), and never less than one."""
    return float(max(1, math.ceil(amount - 1e-9)))


def _machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _env_number(env: Mapping[str, str], name: str, what: str) -> float | None:
    """A positive number from the spawner's environment variable ``name``, if set."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} in the environment is not {what} (JupyterHub's spawners set it "
            "from c.Spawner.cpu_limit / mem_limit)"
        ) from None
    return value if value > 0 and math.isfinite(value) else None


# -- cgroups ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cgroup:
    """This process's cgroup in one hierarchy: its directory, then its ancestors' up to the
    top of the mount."""

    version: int
    dirs: tuple[str, ...]

    @property
    def path(self) -> str:
        return self.dirs[0]


def own_cgroups(controller: str, root: str = "/") -> list[Cgroup]:
    """This process's cgroups that ``controller`` ("memory", "cpu") may limit: the v1
    hierarchy that has it and the v2 one, where mounted."""
    memberships = _memberships(root)
    out = []
    for mount_root, mount_point, version, controllers in _mounts(root):
        if version == 1:
            if controller not in controllers:
                continue
            path = next((p for cs, p in memberships if controller in cs), None)
        else:
            path = next((p for cs, p in memberships if cs == ("",)), None)
        if path is None:
            continue
        if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
            rel = path[len(mount_root.rstrip("/")) :].strip("/")
        else:  # a cgroup namespace, or a mount of another part of the tree: its top is ours
            rel = ""
        here = os.path.join(root, mount_point.lstrip("/"))
        dirs = [here]
        for part in rel.split("/") if rel else []:
            here = os.path.join(here, part)
            dirs.append(here)
        out.append(Cgroup(version, tuple(reversed(dirs))))
    return out


def _memberships(root: str) -> list[tuple[tuple[str, ...], str]]:
    """(controllers, path) of each line of /proc/self/cgroup; v2's controllers are ("",)."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((tuple(parts[1].split(",")), parts[2]))
    return out


def _mounts(root: str) -> list[tuple[str, str, int, set[str]]]:
    """(root within the hierarchy, mount point, version, controllers) of each cgroup mount,
    the first mount of each hierarchy only."""
    try:
        with open(os.path.join(root, "proc/self/mountinfo")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out, seen = [], set()
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        version = 2 if tail[0] == "cgroup2" else 1
        controllers = set(tail[2].split(",")) if version == 1 else set()
        key = (version, frozenset(controllers))
        if key in seen:
            continue
        seen.add(key)
        out.append((_unescape(fields[3]), _unescape(fields[4]), version, controllers))
    return out


def _unescape(path: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        path = path.replace(code, char)
    return path


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_quota(root: str) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroups and their ancestors."""
    best: float | None = None
    for group in own_cgroups("cpu", root):
        for d in group.dirs:
            if group.version == 2:
                parts = (_read(os.path.join(d, "cpu.max")) or "max").split()
                quota, period = parts[0], parts[1] if len(parts) > 1 else "100000"
            else:
                quota = _read(os.path.join(d, "cpu.cfs_quota_us")) or "-1"
                period = _read(os.path.join(d, "cpu.cfs_period_us")) or "100000"
            try:
                cpus = int(quota) / int(period)
            except (ValueError, ZeroDivisionError):
                continue  # "max", or unreadable
            if cpus > 0 and (best is None or cpus < best):
                best = cpus
    return best


def _memory_limit(root: str) -> tuple[Cgroup, int] | None:
    """The tightest memory limit on this process's cgroups and their ancestors, and the
    cgroup (trimmed to the one that sets it) whose use counts against it."""
    best: tuple[Cgroup, int] | None = None
    for group in own_cgroups("memory", root):
        name = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
        for i, d in enumerate(group.dirs):
            try:
                limit = int(_read(os.path.join(d, name)) or "max")
            except ValueError:
                continue  # "max": none here
            # v1 writes "no limit" as a huge number (2**63 rounded to pages): the caller's
            # comparison with RAM drops it
            if best is None or limit < best[1]:
                best = (Cgroup(group.version, group.dirs[i:]), limit)
    return best


def cgroup_memory_used(group: Cgroup) -> int:
    """What the kernel counts against ``group``'s memory limit, less the page cache it can
    drop before it kills anything (inactive file pages), as Ray's memory monitor counts it."""
    if group.version == 2:
        used, inactive = "memory.current", "inactive_file"
    else:
        used, inactive = "memory.usage_in_bytes", "total_inactive_file"
    total = int(_read(os.path.join(group.path, used)) or 0)
    for line in (_read(os.path.join(group.path, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == inactive:
            return max(0, total - int(value))
    return total


def machine_memory_used() -> int:
    vm = psutil.virtual_memory()
    return int(vm.total - vm.available)

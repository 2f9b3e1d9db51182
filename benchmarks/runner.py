"""Run children (see ``child.py``) and collect what they stream back.

Every process a child starts carries a tag in its environment so that, whatever the framework
leaves behind (daemons, worker pools, detached or not), it can be terminated once the child is
done without touching anyone else's processes. A child that stops
answering within a timeout is killed; the workload it was on is reported as an error and the
remaining ones continue in a fresh child.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from benchmarks.child import MARKER

ROOT = Path(__file__).resolve().parent.parent
Result = dict[str, Any]
OnResult = Callable[[str, Result], None]
TAG_VARIABLE = "NBBENCH_CHILD"
_children = itertools.count()


@dataclass(frozen=True)
class Limits:
    """Seconds a child may stay silent: while starting, and per workload."""

    init_s: float = 120.0
    workload_s: float = 180.0
    shutdown_s: float = 60.0


@dataclass
class ChildOutcome:
    """Results streamed by one child, its framework version, and why it stopped early."""

    results: dict[str, Result] = field(default_factory=dict)
    version: str | None = None
    failure: str | None = None
    ready: bool = False


def child_env(tag: str, root: Path) -> dict[str, str]:
    """``root`` first on PYTHONPATH, so that workers import ``benchmarks`` and nbcluster from
    it, and a tag that every process the child starts inherits (see :func:`kill_leftovers`)."""
    env = dict(os.environ)
    env[TAG_VARIABLE] = tag
    paths = [str(root), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        if line.startswith(MARKER):
            lines.put(line[len(MARKER) :])
    lines.put(None)


def _tail(stderr: IO[str], lines: int = 3, limit: int = 300) -> str:
    """The last few lines the child wrote to stderr (usually the exception), on one line."""
    stderr.seek(0)
    last = [line.strip() for line in stderr.read().splitlines() if line.strip()][-lines:]
    text = " | ".join(last)
    return text if len(text) <= limit else "..." + text[-limit:]


def kill_leftovers(tag: str, sid: int) -> int:
    """Terminate what the child left behind; return how many processes that was.

    A process is the child's if it is in the child's session (the child is started with
    ``setsid``) or carries ``tag`` in its environment (inherited by everything the child
    starts, so found even in processes that detach into their own session, as nbcluster's
    head does). Either test alone misses some: Ray's agents rewrite their environment area
    for their process titles. Nobody else's processes match either test.
    """
    found = 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = sorted(set(_tagged(tag)) | set(_in_session(sid)))
        found = found or len(pids)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        _wait_gone(pids, 3.0)
    return found


def _proc_entries() -> list[int]:
    me = os.getpid()
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and int(e.name) != me]


def _tagged(tag: str) -> list[int]:
    needle = f"{TAG_VARIABLE}={tag}".encode()
    pids = []
    for pid in _proc_entries():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(pid)
    return pids


def _in_session(sid: int) -> list[int]:
    pids = []
    for pid in _proc_entries():
        try:
            if os.getsid(pid) == sid and not _is_zombie(pid):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _wait_gone(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_is_zombie(pid) for pid in pids):
        time.sleep(0.05)


def run_child(
    framework: str,
    names: list[str],
    *,
    quick: bool,
    num_cpus: int,
    limits: Limits,
    on_result: OnResult | None = None,
    root: Path = ROOT,
    cluster: bool = False,
) -> ChildOutcome:
    """Run ``names`` on ``framework`` in one fresh child process, then clean up after it.
    ``cluster``: on a two-node cluster the child starts (see ``cross_node.py``)."""
    tag = f"{os.getpid()}-{next(_children)}"
    cmd = [sys.executable, "-m", "benchmarks.child", "--framework", framework]
    cmd += ["--workloads", ",".join(names), "--num-cpus", str(num_cpus)]
    cmd += ["--quick"] if quick else []
    cmd += ["--cluster"] if cluster else []
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=child_env(tag, root),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        try:
            outcome = _collect(proc, names, limits, on_result)
            _finish(proc, outcome, limits)
            if outcome.failure and "exited" in outcome.failure:
                outcome.failure += f": {_tail(stderr)}"
        finally:
            leftovers = kill_leftovers(tag, proc.pid)
            proc.wait()
    if leftovers:
        print(f"  ({framework}: killed {leftovers} leftover process(es))", file=sys.stderr)
    return outcome


def _collect(
    proc: subprocess.Popen[str], names: list[str], limits: Limits, on_result: OnResult | None
) -> ChildOutcome:
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
    outcome = ChildOutcome()
    while True:
        timeout = limits.workload_s if outcome.ready else limits.init_s
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            outcome.failure = f"timeout: no answer within {timeout:.0f} s (child killed)"
            return outcome
        if line is None:
            if len(outcome.results) < len(names):
                outcome.failure = "child exited early"
            return outcome
        message = json.loads(line)
        event = message.pop("event")
        if event == "ready":
            outcome.ready = True
            outcome.version = message.get("version")
        elif event == "result":
            name = message.pop("name")
            outcome.results[name] = message
            if on_result is not None:
                on_result(name, message)
        elif event == "fatal":
            outcome.failure = message["error"]
        elif event == "done":
            return outcome


def _finish(proc: subprocess.Popen[str], outcome: ChildOutcome, limits: Limits) -> None:
    if outcome.failure and outcome.failure.startswith("timeout"):
        return
    try:
        code = proc.wait(timeout=limits.shutdown_s)
    except subprocess.TimeoutExpired:
        return
    if code != 0 and outcome.failure in (None, "child exited early"):
        outcome.failure = f"child exited with code {code}"

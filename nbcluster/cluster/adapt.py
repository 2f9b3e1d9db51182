"""Adaptive scaling: add nodes while work waits for resources, remove them once idle.

``nc.cluster.adapt(minimum=0, maximum=20, backend="slurm", cpus=8, ...)`` starts a loop in
the driver that reads what the head knows — the lease requests every node holds that do not
fit yet (``pending_demand``, sampled each second) and which nodes are idle — and each
``interval``:

* grows by as many nodes (of ``cpus`` each) as the waiting CPU demand needs (queued lease
  requests, or tasks not yet running), counting nodes still starting, up to ``maximum``;
* when nothing waits, removes (drains, then cancels) nodes it started that have been idle for
  ``idle_timeout``, down to ``minimum``.

Each node is its own one-node group (``NodeGroup``), so shrinking ends exactly the idle ones,
and they show in ``%cluster status`` like any other. A node that fails to start is reported
(``last_error``, and the log) and the loop waits ``backoff`` before asking again, so a broken
backend is not hammered. ``adapt`` again replaces the running loop; ``stop()`` or the
driver's shutdown ends it (the nodes go with the driver's other groups).
"""

from __future__ import annotations

import ast
import logging
import math
import threading
import time
from typing import Any

from nbcluster.cluster.group import REMOVED, NodeGroup, _idle
from nbcluster.cluster.launcher import DONE, FAILED, LaunchError

log = logging.getLogger("nbcluster.adapt")

_current: Adaptive | None = None
_lock = threading.Lock()


class Adaptive:
    def __init__(
        self,
        backend: str,
        minimum: int,
        maximum: int,
        interval: float,
        idle_timeout: float,
        backoff: float,
        options: dict[str, Any],
    ) -> None:
        if minimum < 0 or maximum < minimum:
            raise ValueError(f"adapt needs 0 <= minimum <= maximum, got {minimum}, {maximum}")
        self.backend = backend
        self.minimum = minimum
        self.maximum = maximum
        self.interval = interval
        self.idle_timeout = idle_timeout
        self.backoff = backoff
        self.options = options
        self.groups: list[NodeGroup] = []
        self.last_error: str | None = None
        self._idle_since: dict[str, float] = {}
        self._quiet_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nbcluster-adapt", daemon=True)

    # -- what the user sees -------------------------------------------------------------------
    @property
    def nodes(self) -> list[dict[str, Any]]:
        return [n for g in self.live for n in g.nodes]

    @property
    def live(self) -> list[NodeGroup]:
        return [g for g in self.groups if g.state != REMOVED]

    def status(self) -> dict[str, Any]:
        return {"backend": self.backend, "minimum": self.minimum, "maximum": self.maximum,
                "nodes": len(self.live), "joined": len(self.nodes),
                "last_error": self.last_error}  # fmt: skip

    def __repr__(self) -> str:
        s = self.status()
        return (f"<Adaptive {s['backend']} {s['minimum']}..{s['maximum']}: {s['joined']} "
                f"joined of {s['nodes']}>")  # fmt: skip

    def stop(self) -> None:
        """Stop adapting; the nodes it started stay until removed or the driver ends."""
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=60)

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.step()
            except Exception as e:  # the cluster may be going away; try again next time
                log.warning("adaptive scaling step failed: %s", e)

    def step(self) -> None:
        from nbcluster.cluster.manager import add_nodes
        from nbcluster.util.state import list_nodes, summarize_tasks

        self._forget_failed()
        live = self.live
        states = list_nodes(limit=None)
        cpus = float(self.options.get("cpus") or 1.0)
        # What waits: lease requests nobody can serve yet (with their shapes), and tasks not
        # yet running (owners pipeline tasks onto the workers they hold, so a backlog may
        # show as queued tasks rather than as lease requests; counted as one CPU each).
        waiting = max(
            _waiting_cpus(s.pending_demand for s in states if s.state == "ALIVE"),
            float(_queued_tasks(summarize_tasks()["cluster"]["summary"])),
        )
        joined = {n["NodeID"] for g in live for n in g.nodes}
        starting = sum(1 for g in live if not any(n["NodeID"] in joined for n in g.nodes))
        want = len(live)
        if waiting > 0:
            want += math.ceil(max(0.0, waiting - starting * cpus) / cpus)
        want = max(self.minimum, min(self.maximum, want))
        if want > len(live) and time.monotonic() >= self._quiet_until:
            for _ in range(want - len(live)):
                try:
                    self.groups.append(add_nodes(1, backend=self.backend, **self.options))
                except LaunchError as e:
                    self._failed(str(e))
                    break
            log.info("adapt: %d node(s) asked for (%g CPUs waiting)", want - len(live), waiting)
            return
        if waiting > 0:
            self._idle_since.clear()
            return
        self._shrink(live)

    def _shrink(self, live: list[NodeGroup]) -> None:
        from nbcluster.runtime.api.session import nodes

        now = time.monotonic()
        by_id = {n["NodeID"]: n for n in nodes() if n["Alive"]}
        keep = len(live)
        for group in live:
            ids = group.node_ids
            if keep <= self.minimum or not ids:
                continue
            if all(_idle(by_id[i]) for i in ids if i in by_id):
                since = self._idle_since.setdefault(group.id, now)
                if now - since >= self.idle_timeout:
                    group.remove(drain_timeout=self.idle_timeout)
                    self._idle_since.pop(group.id, None)
                    keep -= 1
            else:
                self._idle_since.pop(group.id, None)

    def _forget_failed(self) -> None:
        for group in self.live:
            if group.node_ids:
                continue
            for job, st in zip(group.jobs, group.job_statuses(), strict=True):
                if st.state in (FAILED, DONE):
                    self._failed(group._failure(job, st, 0))
                    group.cancel()
                    break

    def _failed(self, why: str) -> None:
        self.last_error = why
        log.warning("adapt: %s; asking again in %g s", why, self.backoff)
        self._quiet_until = time.monotonic() + self.backoff


def _queued_tasks(summary: dict[str, Any]) -> int:
    """Tasks submitted but not running yet (actor method calls wait for their actor: more
    nodes would not help them)."""
    return sum(
        entry["state_counts"].get(state, 0)
        for entry in summary.values()
        if entry.get("type") != "ACTOR_TASK"
        for state in ("PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER")
    )


def _waiting_cpus(demands: Any) -> float:
    """CPUs the queued lease requests ask for, summed over every node."""
    total = 0.0
    for demand in demands:
        for shape, count in (demand or {}).items():
            try:
                resources = ast.literal_eval(shape)
            except (ValueError, SyntaxError):
                continue
            total += float(resources.get("CPU", 0.0)) * int(count)
    return total


def adapt(
    minimum: int = 0,
    maximum: int = 10,
    backend: str = "local",
    *,
    interval: float = 1.0,
    idle_timeout: float = 60.0,
    backoff: float = 30.0,
    **options: Any,
) -> Adaptive:
    """Keep between ``minimum`` and ``maximum`` nodes of ``backend``, following demand.

    ``options`` are ``add_nodes``'s (``cpus``, ``memory``, ``partition``...). Replaces the
    adaptive loop already running, if any.
    """
    global _current
    from nbcluster.cluster.manager import _hook_shutdown
    from nbcluster.runtime.api.session import core_for_submit

    core_for_submit()
    _hook_shutdown()
    adaptive = Adaptive(backend, minimum, maximum, interval, idle_timeout, backoff, options)
    with _lock:
        previous, _current = _current, adaptive
    if previous is not None:
        previous.stop()
    adaptive._thread.start()
    return adaptive


def stop() -> None:
    """Stop the adaptive loop (at shutdown, before the groups are cancelled)."""
    global _current
    with _lock:
        current, _current = _current, None
    if current is not None:
        current.stop()

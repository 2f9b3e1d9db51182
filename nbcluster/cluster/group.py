"""A node group: the nodes one ``add_nodes`` call asked a backend for, and their jobs.

The group is how a user follows and ends what they started: ``wait`` returns when every node
joined, or raises with the reason one did not (the scheduler's words, the node's own last
output) — it never waits past its timeout; ``nodes`` lists the members that joined (the head
knows them by the group label they joined with); ``remove`` drains them, then cancels the
jobs. The same object backs ``nc.cluster``, the ``%cluster`` magic and the widgets.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from nbcluster.cluster.launcher import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    Job,
    JobStatus,
    Launcher,
    LaunchError,
)

GROUP_LABEL = "nbcluster.io/group"
#: How often ``wait`` looks at the head and (at most) asks the backend about its jobs.
POLL_S = 0.1
BACKEND_POLL_S = 1.0
#: A removed node's resources must be idle this long... or ``drain_timeout`` runs out.
DRAIN_POLL_S = 0.1
#: How long ``remove`` lets nodes asked to leave end by themselves before cancelling.
LEAVE_WAIT_S = 10.0
#: How long ``remove`` waits for cancelled nodes to be reported gone by the head.
GONE_WAIT_S = 15.0

STARTING = "starting"
READY = "ready"
REMOVED = "removed"


class LaunchTimeoutError(LaunchError, TimeoutError):
    """Not every node of a group joined within the timeout; the message says where each is."""


def _nodes() -> list[dict[str, Any]]:
    from nbcluster.runtime.api.session import nodes

    return nodes()


class NodeGroup:
    """Nodes started together by one backend, with one join token."""

    def __init__(
        self,
        group_id: str,
        launcher: Launcher,
        count: int,
        jobs: list[Job],
        on_removed: Any = None,
    ) -> None:
        self.id = group_id
        self.launcher = launcher
        self.backend = launcher.name
        self.count = count
        self.jobs = jobs
        self.state = STARTING
        self.created = time.time()
        self._on_removed = on_removed
        self._statuses: list[JobStatus] = [JobStatus(PENDING)] * len(jobs)
        self._polled = 0.0

    # -- what the user reads ------------------------------------------------------------------
    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The group's live nodes, as ``nc.nodes()`` entries."""
        return [
            n for n in _nodes() if n["Alive"] and n.get("Labels", {}).get(GROUP_LABEL) == self.id
        ]

    @property
    def node_ids(self) -> list[str]:
        return [n["NodeID"] for n in self.nodes]

    def job_statuses(self, fresh: bool = False) -> list[JobStatus]:
        """What the backend says about each job (asked at most once a second)."""
        if fresh or time.monotonic() - self._polled >= BACKEND_POLL_S:
            self._statuses = self.launcher.poll(self.jobs)
            self._polled = time.monotonic()
        return self._statuses

    def status(self) -> dict[str, Any]:
        """One row for status displays."""
        joined = len(self.nodes) if self.state != REMOVED else 0
        statuses = self.job_statuses() if self.state != REMOVED else []
        return {
            "group": self.id,
            "backend": self.launcher.describe(),
            "state": self.state,
            "nodes": f"{joined}/{self.count}",
            "jobs": _summary(statuses),
        }

    def __repr__(self) -> str:
        s = self.status()
        return f"<NodeGroup {self.id}: {s['nodes']} nodes joined, {s['state']}, jobs {s['jobs']}>"

    # -- waiting ------------------------------------------------------------------------------
    def wait(self, timeout: float | None = 300.0) -> list[dict[str, Any]]:
        """Return the group's nodes once all joined; raise ``LaunchError`` as soon as a job
        failed, and ``LaunchTimeoutError`` when ``timeout`` seconds pass first."""
        if self.state == REMOVED:
            raise LaunchError(f"node group {self.id} was removed")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            joined = self.nodes
            if len(joined) >= self.count:
                self.state = READY
                return joined
            ended = [
                (job, st)
                for job, st in zip(self.jobs, self.job_statuses(), strict=True)
                if st.state in (FAILED, DONE)
            ]
            if ended:
                joined = self.nodes  # the last node may have joined since we looked
                if len(joined) >= self.count:
                    continue
                raise LaunchError(self._failure(*ended[0], len(joined)))
            if deadline is not None and time.monotonic() >= deadline:
                raise LaunchTimeoutError(self._timeout(len(joined), timeout or 0.0))
            time.sleep(POLL_S)

    def _failure(self, job: Job, st: JobStatus, joined: int) -> str:
        what = "ended before its node joined" if st.state == DONE else f"failed: {st.reason}"
        text = (
            f"node group {self.id} ({self.launcher.describe()}): {job.name} {what} "
            f"({joined} of {self.count} nodes joined)"
        )
        tail = self.launcher.output_tail(job)
        return f"{text}\nits output ends with:\n{tail}" if tail else text

    def _timeout(self, joined: int, timeout: float) -> str:
        statuses = self.job_statuses(fresh=True)
        where = "; ".join(
            f"{job.name}: {st.state}" + (f" ({st.reason})" if st.reason else "")
            for job, st in zip(self.jobs, statuses, strict=True)
        )
        text = (
            f"node group {self.id} ({self.launcher.describe()}): {joined} of {self.count} "
            f"nodes joined within {timeout:g} s; {where}"
        )
        running = [j for j, st in zip(self.jobs, statuses, strict=True) if st.state == RUNNING]
        tail = self.launcher.output_tail(running[0]) if running else ""
        return f"{text}\n{running[0].name}'s output ends with:\n{tail}" if tail else text

    # -- removing -----------------------------------------------------------------------------
    def remove(self, drain_timeout: float = 30.0) -> None:
        """Stop sending the group's nodes work, let what runs there finish (up to
        ``drain_timeout`` seconds), then cancel the jobs. Safe to call twice."""
        if self.state == REMOVED:
            return
        from nbcluster.runtime.api.session import current_core

        core = current_core()
        members = self.nodes
        for n in members:
            core.head_call("drain_node", n["NodeID"], timeout=30)
        deadline = time.monotonic() + drain_timeout
        ids = {n["NodeID"] for n in members}
        while ids and time.monotonic() < deadline:
            busy = [n for n in _nodes() if n["NodeID"] in ids and n["Alive"] and not _idle(n)]
            if not busy:
                break
            time.sleep(DRAIN_POLL_S)
        # Ask the nodes to leave: they stop cleanly (their files and jobs end with them),
        # then cancel whatever has not ended (a job still queued, a node that hangs).
        for n in members:
            core.head_call("stop_node", n["NodeID"], timeout=30)
        deadline = time.monotonic() + LEAVE_WAIT_S
        while time.monotonic() < deadline and any(
            n["Alive"] for n in _nodes() if n["NodeID"] in ids
        ):
            time.sleep(DRAIN_POLL_S)
        self.cancel()
        deadline = time.monotonic() + GONE_WAIT_S
        while time.monotonic() < deadline and (
            any(n["Alive"] for n in _nodes() if n["NodeID"] in ids)
            or any(st.state in (PENDING, RUNNING) for st in self.job_statuses(fresh=True))
        ):
            time.sleep(DRAIN_POLL_S)

    def cancel(self) -> None:
        """Cancel the jobs now, without draining (kernel shutdown does this)."""
        if self.state == REMOVED:
            return
        self.state = REMOVED
        try:
            self.launcher.cancel(self.jobs)
        finally:
            if self._on_removed is not None:
                self._on_removed(self)


def _idle(node: dict[str, Any]) -> bool:
    total, free = node["Resources"], node["Available"]
    return all(free.get(k, 0.0) >= v - 1e-9 for k, v in total.items())


def _summary(statuses: list[JobStatus]) -> str:
    if not statuses:
        return "-"
    counts = Counter(
        st.state + (f" ({st.reason})" if st.reason and st.state != RUNNING else "")
        for st in statuses
    )
    return ", ".join(f"{n} {what}" for what, n in counts.items())

"""The ``local`` backend: more nodes on this machine, each its own ``nbcluster start``.

For testing what a multi-node cluster does, and for a large machine where one node per
socket or per GPU set is the better shape. Nodes are child processes in their own session
(a Ctrl-C meant for the notebook does not reach them), with their output in the group's
log directory.
"""

from __future__ import annotations

import os
import signal
import sys

from nbcluster.cluster.launcher import (
    Job,
    JobStatus,
    JoinCommand,
    Launcher,
    LaunchError,
    process_status,
    start_process,
    stop_processes,
)

STOP_WAIT_S = 5.0


class LocalLauncher(Launcher):
    name = "local"
    remote = False

    def start(self, command: JoinCommand, count: int, group: str, log_dir: str) -> list[Job]:
        jobs: list[Job] = []
        # Workers here import what the driver imports, as the head's own workers do.
        path = os.pathsep.join(p for p in (*sys.path, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, **command.env, "NBCLUSTER_TOKEN": command.token}
        for i in range(count):
            log_path = os.path.join(log_dir, f"{group}-{i}.log")
            try:
                proc = start_process(list(command.argv), log_path, env)
            except LaunchError:
                self.cancel(jobs)
                raise
            jobs.append(Job(f"pid {proc.pid}", proc, log_path))
        return jobs

    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        return [process_status(job.handle) for job in jobs]

    def cancel(self, jobs: list[Job]) -> None:
        # SIGTERM: the CLI stops its node cleanly; SIGKILL to the session it leads, if not
        stop_processes([j.handle for j in jobs], STOP_WAIT_S,
                       kill=lambda p: os.killpg(p.pid, signal.SIGKILL))  # fmt: skip

    def describe(self) -> str:
        return "local processes"

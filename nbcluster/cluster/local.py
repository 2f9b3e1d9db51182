"""The ``local`` backend: more nodes on this machine, each its own ``nbcluster start``.

For testing what a multi-node cluster does, and for a large machine where one node per
socket or per GPU set is the better shape. Nodes are child processes in their own session
(a Ctrl-C meant for the notebook does not reach them), with their output in the group's
log directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from nbcluster.cluster.launcher import (
    DONE,
    FAILED,
    RUNNING,
    Job,
    JobStatus,
    JoinCommand,
    Launcher,
    LaunchError,
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
            with open(log_path, "ab") as log:
                try:
                    proc = subprocess.Popen(
                        list(command.argv), stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, env=env, start_new_session=True,
                    )  # fmt: skip
                except OSError as e:
                    self.cancel(jobs)
                    raise LaunchError(f"cannot run {command.argv[0]}: {e}") from None
            jobs.append(Job(f"pid {proc.pid}", proc, log_path))
        return jobs

    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        out = []
        for job in jobs:
            code = job.handle.poll()
            if code is None:
                out.append(JobStatus(RUNNING))
            elif code == 0:
                out.append(JobStatus(DONE))
            else:
                out.append(JobStatus(FAILED, f"exit code {code}"))
        return out

    def cancel(self, jobs: list[Job]) -> None:
        live = [j.handle for j in jobs if j.handle.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)  # the CLI stops its node cleanly
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in live:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the CLI leads its own session
                except ProcessLookupError:
                    pass
                proc.wait()

    def describe(self) -> str:
        return "local processes"

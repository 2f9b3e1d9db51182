"""The ``slurm`` backend: one batch job per node (``sbatch``), or, inside an allocation, one
job step per node (``srun``).

Each job runs ``nbcluster start --address HEAD --block``; the node's resources follow the
request (``cpus`` is ``--cpus-per-task`` and the node's CPU count). The join token reaches the
job through its environment (Slurm copies the submitter's), never through the script or a
command line. The scheduler's own words come back: a rejected submission raises at once with
``sbatch``'s error, a pending job shows its reason (``Resources``, ``Priority``,
``BeginTime``...), a failed one its state and reason. ``squeue`` answers for live and recently
ended jobs, ``sacct`` (when accounting is on) for older ones.

When the driver itself runs inside an allocation (``SLURM_JOB_ID`` is set, as under
``salloc`` or in a batch job) nodes are started as steps of that allocation with ``srun``,
which needs no queueing; ``inside_allocation=False`` submits new jobs instead.

Options: ``partition``, ``account``, ``qos``, ``walltime``, ``memory``, ``cpus``, ``gpus``
(``--gres=gpu:N``), ``sbatch_options`` / ``srun_options`` (extra arguments), ``job_name``.
Job output files go to the group's log directory, which must be visible from the compute
nodes (a shared home or scratch, as on any Slurm cluster) for error messages to quote them.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from nbcluster.cluster.launcher import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    Job,
    JobStatus,
    JoinCommand,
    Launcher,
    LaunchError,
    NodeSpec,
    process_status,
    start_process,
    stop_processes,
)

COMMAND_TIMEOUT_S = 30.0
STOP_WAIT_S = 10.0
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"}
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "STOPPED"}


def _run(argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """A Slurm command's stdout; LaunchError with its stderr when it fails."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
            env=env, check=False,
        )  # fmt: skip
    except FileNotFoundError:
        raise LaunchError(f"{argv[0]} is not installed here (backend='slurm' needs it)") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        raise LaunchError(f"{' '.join(argv[:1])} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout


class SlurmLauncher(Launcher):
    name = "slurm"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        o = spec.options
        self.partition = o.get("partition")
        self.account = o.get("account")
        self.qos = o.get("qos")
        self.job_name = str(o.get("job_name", "nbcluster"))
        self.sbatch_options = [str(x) for x in o.get("sbatch_options", [])]
        self.srun_options = [str(x) for x in o.get("srun_options", [])]
        inside = o.get("inside_allocation", "SLURM_JOB_ID" in os.environ)
        self.allocation = os.environ.get("SLURM_JOB_ID") if _truthy(inside) else None

    def describe(self) -> str:
        if self.allocation:
            return f"slurm steps in job {self.allocation}"
        return f"slurm partition {self.partition}" if self.partition else "slurm"

    def reach_host(self) -> str | None:
        """The address of a node of the partition (or of the allocation)."""
        argv = ["sinfo", "-h", "-N", "-o", "%o"]
        if self.allocation:
            nodes = os.environ.get("SLURM_JOB_NODELIST", "")
            argv += ["-n", nodes] if nodes else []
        for extra in ([["-p", str(self.partition)]] if self.partition else []) + [[]]:
            try:  # an unknown partition: any node will do (sbatch will name the mistake)
                addrs = _run(argv + extra).split()
            except LaunchError:
                continue
            if addrs:
                return addrs[0]
        return None

    # -- resources ----------------------------------------------------------------------------
    def _resources(self) -> list[str]:
        s = self.spec
        args = ["--nodes=1", "--ntasks=1"]
        if s.cpus is not None:
            args.append(f"--cpus-per-task={max(1, int(s.cpus + 0.999))}")
        if s.memory:
            args.append(f"--mem={s.memory}")
        if s.gpus:
            args.append(f"--gres=gpu:{int(s.gpus + 0.999)}")
        if s.walltime:
            args.append(f"--time={s.walltime}")
        return args

    # -- starting -----------------------------------------------------------------------------
    def start(self, command: JoinCommand, count: int, group: str, log_dir: str) -> list[Job]:
        env = {**os.environ, **command.env, "NBCLUSTER_TOKEN": command.token}
        if self.allocation:
            return self._start_steps(command, count, group, log_dir, env)
        jobs: list[Job] = []
        try:
            for i in range(count):
                out = os.path.join(log_dir, f"{group}-{i}-%j.out")
                argv = ["sbatch", "--parsable", f"--job-name={self.job_name}-{group}",
                        f"--output={out}", *self._resources()]  # fmt: skip
                for flag, value in (("partition", self.partition), ("account", self.account),
                                    ("qos", self.qos)):  # fmt: skip
                    if value:
                        argv.append(f"--{flag}={value}")
                argv += self.sbatch_options
                script = f"#!/bin/sh\nexec {command.shell()}\n"
                job_id = _run(argv, stdin=script, env=env).strip().split(";")[0]
                jobs.append(Job(f"job {job_id}", job_id, out.replace("%j", job_id)))
        except LaunchError as e:
            self.cancel(jobs)
            raise LaunchError(f"Slurm refused the job: {e}") from None
        return jobs

    def _start_steps(
        self, command: JoinCommand, count: int, group: str, log_dir: str, env: dict[str, str]
    ) -> list[Job]:
        jobs: list[Job] = []
        for i in range(count):
            log_path = os.path.join(log_dir, f"{group}-{i}.log")
            argv = ["srun", "--exact", f"--job-name={self.job_name}-{group}",
                    *self._resources(), *self.srun_options, *command.argv]  # fmt: skip
            try:
                proc = start_process(argv, log_path, env)
            except LaunchError:
                self.cancel(jobs)
                raise
            jobs.append(Job(f"step {i} of job {self.allocation}", proc, log_path))
        return jobs

    # -- watching -----------------------------------------------------------------------------
    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        if not jobs:
            return []
        if isinstance(jobs[0].handle, subprocess.Popen):
            return [_step_status(j) for j in jobs]
        ids = [str(j.handle) for j in jobs]
        states = self._squeue(ids)
        missing = [i for i in ids if i not in states]
        if missing:
            states.update(self._sacct(missing))
        return [states.get(i, JobStatus(DONE, "no longer known to Slurm")) for i in ids]

    def _squeue(self, ids: list[str]) -> dict[str, JobStatus]:
        try:
            out = _run(["squeue", "-h", "--states=all", "-j", ",".join(ids), "-o", "%i|%T|%r"])
        except LaunchError:
            return {}  # every id is gone (squeue says "Invalid job id")
        states = {}
        for line in out.splitlines():
            job_id, _, rest = line.strip().partition("|")
            state, _, reason = rest.partition("|")
            states[job_id] = _status(state, reason)
        return states

    def _sacct(self, ids: list[str]) -> dict[str, JobStatus]:
        try:
            fields = "JobID,State,ExitCode"
            out = _run(["sacct", "-n", "-X", "-P", "-j", ",".join(ids), "-o", fields])
        except LaunchError:
            return {}  # accounting is off
        states = {}
        for line in out.splitlines():
            parts = line.strip().split("|")
            if len(parts) >= 3:
                states[parts[0]] = _status(parts[1].split()[0], f"exit code {parts[2]}")
        return states

    def jobs_for_the_head(self, jobs: list[Job]) -> list[str]:
        return [str(j.handle) for j in jobs if not isinstance(j.handle, subprocess.Popen)]

    def cancel(self, jobs: list[Job]) -> None:
        steps = [j.handle for j in jobs if isinstance(j.handle, subprocess.Popen)]
        ids = [str(j.handle) for j in jobs if not isinstance(j.handle, subprocess.Popen)]
        if ids:
            try:
                _run(["scancel", *ids])
            except LaunchError:
                pass  # already gone
        stop_processes(steps, STOP_WAIT_S)  # srun cancels its step on SIGTERM


def _status(state: str, reason: str) -> JobStatus:
    reason = "" if reason in ("None", "(null)") else reason
    if state in _RUNNING:
        return JobStatus(RUNNING)
    if state in _PENDING:
        return JobStatus(PENDING, reason)
    if state == "COMPLETED":
        return JobStatus(DONE)
    return JobStatus(FAILED, f"{state}{f' ({reason})' if reason else ''}")


def _step_status(job: Job) -> JobStatus:
    return process_status(job.handle, lambda code: f"srun exit code {code}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


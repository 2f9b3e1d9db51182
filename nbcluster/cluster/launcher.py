"""The launcher plugin interface: how a backend starts, watches and stops worker nodes.

A backend (``local``, ``ssh``, ``slurm``, ``kubernetes``, or a third party's) is a subclass of
``Launcher`` registered under the entry point group ``nbcluster.launchers``. It knows one
thing: how to run the join command (``JoinCommand``) somewhere, report what became of each
run (``JobStatus``: pending, running, failed with the manager's reason, done), and cancel it.
Everything else — join tokens, waiting for nodes, draining, cancelling at kernel shutdown,
adaptive scaling — lives in ``NodeGroup`` and ``manager``, the same for every backend.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import shlex
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from nbcluster.exceptions import NbclusterError

ENTRY_POINT_GROUP = "nbcluster.launchers"

PENDING = "pending"
RUNNING = "running"
FAILED = "failed"
DONE = "done"


class LaunchError(NbclusterError):
    """A node group could not be started, or its nodes did not join; the message says why
    (the scheduler's reason, the node's own error output)."""


@dataclass
class NodeSpec:
    """What each node of a group offers and where it runs; backends read what they need."""

    cpus: float | None = None
    gpus: float | None = None
    #: Memory to ask the scheduler for (Slurm ``--mem``, a pod's request): "16G", "512M".
    memory: str | None = None
    #: Custom resources the node offers, e.g. {"bigmem": 1}.
    resources: dict[str, float] = field(default_factory=dict)
    object_store_memory: int | None = None
    #: The Python interpreter on the target that has nbcluster (default: this one's path).
    python: str = sys.executable
    #: Scheduler time limit, "HH:MM:SS" or "D-HH:MM:SS".
    walltime: str | None = None
    #: Environment variables for the node (never the token: that travels separately).
    env: dict[str, str] = field(default_factory=dict)
    #: Backend-specific options (``partition``, ``account``, ``image``, ``hosts``...).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JoinCommand:
    """The command that makes one node join the head. The token is not in ``argv``: a
    launcher hands it to the node as ``NBCLUSTER_TOKEN`` in the node's environment, or on
    its standard input when it cannot set the environment (``stdin_token``)."""

    argv: tuple[str, ...]
    token: str
    env: dict[str, str]

    def shell(self) -> str:
        """``argv`` as one shell command line."""
        return " ".join(shlex.quote(a) for a in self.argv)

    def shell_reading_token(self) -> str:
        """A POSIX shell line that reads the token from the first line of stdin, puts it in
        the environment and runs the node: for ssh, where the environment is the remote
        sshd's business and the command line is visible to every user of the host."""
        env = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        run = " ".join(["exec", *(["env", *env] if env else []), self.shell()])
        return f"IFS= read -r NBCLUSTER_TOKEN && export NBCLUSTER_TOKEN && {run}"


@dataclass
class Job:
    """One launched node (a process, an ssh session, a Slurm job, a pod)."""

    name: str
    #: The backend's own handle: a Popen, a Slurm job id, a pod name.
    handle: Any = None
    #: Where its output goes, when the backend can read it back.
    log_path: str | None = None
    #: The host it runs on, when the backend chose it.
    host: str = ""


@dataclass(frozen=True)
class JobStatus:
    state: str
    #: The manager's words: "Resources", "exit code 127", "ImagePullBackOff: ...".
    reason: str = ""


def start_process(argv: list[str], log_path: str, env: dict[str, str]) -> Any:
    """Run a node's command (or srun) in its own session, output to ``log_path``, no stdin
    (a Ctrl-C meant for the notebook must not reach it); LaunchError if it cannot start."""
    import subprocess

    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            raise LaunchError(f"cannot run {argv[0]}: {e}") from None


def process_status(proc: Any, failed: Any = None) -> JobStatus:
    """A job that is one local process (a node, an ssh client, an srun step): running while
    it runs, done on exit code 0, else failed with ``failed(code)`` (default: the code)."""
    code = proc.poll()
    if code is None:
        return JobStatus(RUNNING)
    if code == 0:
        return JobStatus(DONE)
    return JobStatus(FAILED, failed(code) if failed is not None else f"exit code {code}")


def stop_processes(procs: list[Any], timeout: float, terminate: bool = True,
                   kill: Any = None) -> None:  # fmt: skip
    """SIGTERM each live process (unless ``terminate`` is False: they end by themselves),
    wait ``timeout`` seconds in all, then ``kill`` (default ``proc.kill``) what is left."""
    import subprocess
    import time

    live = [p for p in procs if p.poll() is None]
    if terminate:
        for proc in live:
            proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                (kill or (lambda p: p.kill()))(proc)
            proc.wait()


def node_args(spec: NodeSpec, head_address: str, group: str) -> list[str]:
    """``nbcluster start`` arguments for a node of this spec joining ``head_address``."""
    args = ["-m", "nbcluster", "start", "--address", head_address, "--block", "--group", group]
    if spec.cpus is not None:
        args += ["--num-cpus", f"{spec.cpus:g}"]
    if spec.gpus is not None:
        args += ["--num-gpus", f"{spec.gpus:g}"]
    if spec.resources:
        import json

        args += ["--resources", json.dumps(spec.resources)]
    if spec.object_store_memory is not None:
        args += ["--object-store-memory", str(int(spec.object_store_memory))]
    return [spec.python, *args]


class Launcher(abc.ABC):
    """A backend. One instance serves one node group."""

    #: The name users give as ``backend=``.
    name: ClassVar[str] = ""
    #: True when nodes run on other machines, so the head must listen on the network.
    remote: ClassVar[bool] = True

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec

    def default_count(self) -> int:
        """How many nodes ``add_nodes`` starts when not told (ssh: one per host)."""
        raise ValueError(f"add_nodes(count, backend={self.name!r}) needs a count")

    def reach_host(self) -> str | None:
        """A host the nodes will run on (or one next to them), so the head listens on the
        interface that routes there; None when that is not known yet."""
        return None

    @abc.abstractmethod
    def start(self, command: JoinCommand, count: int, group: str, log_dir: str) -> list[Job]:
        """Start ``count`` nodes running ``command``; return at once (no waiting to join)."""

    @abc.abstractmethod
    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        """The state of each job, in order."""

    @abc.abstractmethod
    def cancel(self, jobs: list[Job]) -> None:
        """Stop these jobs (running or still queued); quick, and safe to call twice."""

    def jobs_for_the_head(self, jobs: list[Job]) -> list[str]:
        """Slurm batch job ids among ``jobs``: the head cancels them if it stops while the group
        still exists. A kernel killed outright cannot cancel its own, and a job still queued
        would start later for a cluster that is gone (running ones end with the head)."""
        return []

    def output_tail(self, job: Job, lines: int = 20) -> str:
        """The end of a job's output, for error messages ("" when unavailable)."""
        if not job.log_path:
            return ""
        try:
            with open(job.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def describe(self) -> str:
        """A short line for status displays."""
        return self.name


def available() -> dict[str, Any]:
    """Registered backends: name -> entry point."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load(name: str) -> type[Launcher]:
    """The launcher class registered as ``name``."""
    found = available()
    if name not in found:
        raise ValueError(
            f"no nbcluster launcher named {name!r}; installed: {', '.join(sorted(found)) or '-'}"
            f" (launchers register under the entry point group {ENTRY_POINT_GROUP!r})"
        )
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Launcher)):
        raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not a Launcher class")
    return cls


def spec_from(kwargs: dict[str, Any]) -> NodeSpec:
    """A NodeSpec from ``add_nodes`` keywords: known fields by name, the rest as options."""
    known = {f.name for f in dataclasses.fields(NodeSpec)} - {"options"}
    spec = NodeSpec(**{k: v for k, v in kwargs.items() if k in known and v is not None})
    spec.options.update({k: v for k, v in kwargs.items() if k not in known and v is not None})
    return spec

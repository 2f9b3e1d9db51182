"""The ``ssh`` backend: one node per host (or more), started with the system ``ssh`` client.

Using the user's own ``ssh`` means their ``~/.ssh/config``, keys, agent, ``ProxyJump`` and
known hosts all apply, exactly as when they log in by hand. Each node is one ``ssh HOST sh -c
...`` session that runs ``nbcluster start --address HEAD --block``; the join token travels on
the session's standard input, so it appears on no command line, local or remote. The remote
shell first prints its process id, which is what ``cancel`` signals over a second ``ssh``.

Options: ``hosts`` (names as ``ssh`` understands them), ``python`` (the interpreter on the
hosts), ``ssh`` (the client, default ``ssh``), ``ssh_options`` (extra arguments, e.g.
``["-F", "my_config"]``), ``connect_timeout`` (seconds, default 10).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from typing import Any

from nbcluster.cluster.launcher import (
    Job,
    JobStatus,
    JoinCommand,
    Launcher,
    LaunchError,
    NodeSpec,
    process_status,
    stop_processes,
)

PID_MARK = "nbcluster-remote-pid"
#: How long cancelling waits for the remote ``kill`` and for the local client to end.
CANCEL_WAIT_S = 10.0


class SSHLauncher(Launcher):
    name = "ssh"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        hosts: Any = spec.options.get("hosts") or []
        if isinstance(hosts, str):
            hosts = [h.strip() for h in hosts.split(",")]
        self.hosts = [str(h) for h in hosts if str(h).strip()]
        if not self.hosts:
            raise ValueError("backend='ssh' needs hosts=[...] (names as ssh understands them)")
        self.ssh = str(spec.options.get("ssh", "ssh"))
        self.ssh_options = [str(o) for o in spec.options.get("ssh_options", [])]
        self.connect_timeout = float(spec.options.get("connect_timeout", 10))

    def default_count(self) -> int:
        return len(self.hosts)

    def describe(self) -> str:
        return f"ssh {', '.join(self.hosts)}"

    def _ssh(self, host: str, *remote: str) -> list[str]:
        return [
            self.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout:g}",
            *self.ssh_options, host, *remote,
        ]  # fmt: skip

    def reach_host(self) -> str | None:
        """The address ``ssh`` really connects to for the first host (aliases resolved)."""
        host = self.hosts[0]
        try:
            done = subprocess.run(
                [self.ssh, "-G", *self.ssh_options, host],
                capture_output=True, text=True, timeout=10, check=False,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return host
        found = re.search(r"^hostname (\S+)$", done.stdout, flags=re.M)
        return found.group(1) if found else host

    def start(self, command: JoinCommand, count: int, group: str, log_dir: str) -> list[Job]:
        script = f"echo {PID_MARK} $$; {command.shell_reading_token()}"
        jobs: list[Job] = []
        for i in range(count):
            host = self.hosts[i % len(self.hosts)]
            log_path = f"{log_dir}/{group}-{i}.log"
            with open(log_path, "ab") as log:
                try:
                    proc = subprocess.Popen(
                        self._ssh(host, "sh", "-c", shlex.quote(script)),
                        stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                except OSError as e:
                    self.cancel(jobs)
                    raise LaunchError(f"cannot run {self.ssh}: {e}") from None
            assert proc.stdin is not None
            try:
                proc.stdin.write(command.token.encode() + b"\n")
                proc.stdin.close()
            except OSError:
                pass  # ssh already gave up; poll reports why
            jobs.append(Job(f"node {i} on {host}", proc, log_path, host))
        return jobs

    def poll(self, jobs: list[Job]) -> list[JobStatus]:
        return [process_status(job.handle, lambda code, j=job: self._why(j, code)) for job in jobs]

    def _why(self, job: Job, code: int) -> str:
        if code == 255:
            return f"ssh to {job.host} failed: {self._last_line(job)}"
        if code in (126, 127):
            return f"cannot run {self.spec.python} on {job.host} (exit code {code}: not found?)"
        return f"exit code {code} on {job.host}"

    def _last_line(self, job: Job) -> str:
        lines = [ln for ln in self.output_tail(job, 5).splitlines() if ln.strip()]
        return lines[-1] if lines else "no output"

    def output_tail(self, job: Job, lines: int = 20) -> str:
        tail = super().output_tail(job, lines + 1)
        return "\n".join(ln for ln in tail.splitlines() if not ln.startswith(PID_MARK))

    def _remote_pid(self, job: Job) -> int | None:
        try:
            with open(job.log_path or "", errors="replace") as f:
                found = re.search(rf"^{PID_MARK} (\d+)$", f.read(4096), flags=re.M)
        except OSError:
            return None
        return int(found.group(1)) if found else None

    def cancel(self, jobs: list[Job]) -> None:
        live = [j for j in jobs if j.handle.poll() is None]
        killers = []
        for job in live:
            pid = self._remote_pid(job)
            if pid is not None:  # the remote CLI stops its node on SIGTERM
                killers.append(subprocess.Popen(
                    self._ssh(job.host, "kill", "-TERM", str(pid)),
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                ))  # fmt: skip
        # the ssh sessions end with their remote command; the kills end by themselves
        stop_processes([*killers, *(j.handle for j in live)], CANCEL_WAIT_S, terminate=False)

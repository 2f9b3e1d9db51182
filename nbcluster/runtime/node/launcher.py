"""Starting a node process (a head, or a node joining one) and waiting until it listens.

The head is a child of the driver with stdin as its lifeline (see ``head``). It reports its
address on a dedicated pipe, so its stdout and stderr (and those of its workers) stay the
driver's: what a task prints shows up where the driver's output goes.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass

from nbcluster.exceptions import ClusterConnectionError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.node import sessions
from nbcluster.runtime.wire.addresses import choose
from nbcluster.runtime.wire.auth import new_token


@dataclass
class HeadProcess:
    proc: subprocess.Popen[bytes]
    address: str
    token: str
    session_dir: str

    @property
    def token_file(self) -> str:
        return os.path.join(self.session_dir, "token")

    def stop(self, timeout: float = 2.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the lifeline: the head shuts down cleanly
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The node removes its own files when it stops cleanly; these are for when it did not.
        sessions.remove_record(self.proc.pid)
        sessions.remove_session_dir(self.session_dir)


def start_head(
    resources: dict[str, float],
    object_store_memory: int,
    host: str | None = None,
    port: int = 0,
    token: str | None = None,
    head_address: str | None = None,
    lifeline: bool = True,
    log_path: str | None = None,
    inherit_output: bool = False,
    node_ip: str | None = None,
    interface: str | None = None,
    labels: dict[str, str] | None = None,
    dashboard_port: int | None = None,
    dashboard_host: str = "127.0.0.1",
    kind: str = "driver",
    cli: bool = False,
) -> HeadProcess:
    """Start a node process: the head, or (with ``head_address``) a node joining it.

    With ``lifeline`` the node exits when this process does; without it (``nbcluster
    start`` in the background) it runs until ``nbcluster stop``. ``host``, ``node_ip`` and
    ``interface`` pick where it listens and what it advertises (see ``addresses``). A head
    with a ``dashboard_port`` (0: any free one) serves its dashboard there (``dashboard_port``).
    The node publishes its session record (``sessions``) saying who started it: ``cli`` for
    ``nbcluster start``, else this script or notebook kernel.
    """
    try:
        where = choose(host, node_ip or CONFIG.node_ip or None, interface, head_address)
    except ValueError as e:
        raise ClusterConnectionError(str(e)) from None
    if head_address and token:  # a join token becomes the cluster token here
        from nbcluster.runtime.node.join import exchange_token

        token = exchange_token(head_address, token, where.advertise)
    token = token or new_token()
    sessions.live_records()  # reading them removes what crashed clusters left behind
    session_dir = sessions.new_session_dir()
    sessions.write_token(session_dir, token)
    ready_r, ready_w = os.pipe()
    cfg = {
        "token": token,
        "resources": resources,
        "object_store_memory": object_store_memory,
        "session_dir": session_dir,
        "sys_path": [p for p in sys.path if p],
        "cwd": os.getcwd(),
        "bind": where.bind,
        "advertise": where.advertise,
        "port": port,
        "ready_fd": ready_w,
        "head_address": head_address,
        "lifeline": lifeline,
        "labels": labels or {},
        "dashboard_port": dashboard_port,
        "dashboard_host": dashboard_host,
        "kind": kind,
        "record": sessions.starter_fields(cli),
    }
    # The node's own output (and that of its workers outside any task) goes to a log in the
    # session, not into the driver's streams: inside a kernel those are a cell's output.
    if log_path is None and not inherit_output:
        log_path = os.path.join(session_dir, "node.log")
    log_file = open(log_path, "ab") if log_path else None  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbcluster.runtime.node.node_main"],
        stdin=subprocess.PIPE,
        stdout=log_file,
        stderr=log_file,
        pass_fds=(ready_w,),
        start_new_session=True,
    )
    if log_file is not None:
        log_file.close()
    os.close(ready_w)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(cfg).encode() + b"\n")
    proc.stdin.flush()
    try:
        address = _read_ready(ready_r, proc, log_path)
    except BaseException:
        proc.kill()
        proc.wait()
        sessions.remove_record(proc.pid)
        sessions.remove_session_dir(session_dir)
        raise
    finally:
        os.close(ready_r)
    return HeadProcess(proc, address, token, session_dir)


def _read_ready(fd: int, proc: subprocess.Popen[bytes], log_path: str | None) -> str:
    deadline = time.monotonic() + CONFIG.startup_timeout_s
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClusterConnectionError("the head process did not start in time")
        r, _, _ = select.select([fd], [], [], min(left, 0.5))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ClusterConnectionError(
                    f"the node process exited during startup (code {proc.poll()}): "
                    f"{_tail(log_path)}"
                )
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if line.startswith("ERROR "):
        raise ClusterConnectionError(line[len("ERROR ") :])
    if not line.startswith("READY "):
        raise ClusterConnectionError(f"unexpected head startup message: {line!r}")
    return line.split()[1]


def _tail(log_path: str | None, lines: int = 20) -> str:
    if not log_path:
        return "see its output above"
    try:
        with open(log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).strip() or f"(empty log {log_path})"
    except OSError:
        return f"(no log at {log_path})"

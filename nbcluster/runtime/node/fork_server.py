"""Starts worker processes in milliseconds by forking a preloaded interpreter.

The head forks this server once, before it starts any thread or event loop, so forking is
safe. Workers are its children; each asks the kernel to SIGKILL it when its parent dies, and
the server does the same with the head, so killing the head (even with SIGKILL) leaves no
worker behind.

Pipe protocol: the head writes ``s`` (spawn) or ``k<pid>\n`` (kill) or ``q`` (quit); the server
answers ``s <pid>\n`` when it forked and ``x <pid> <status>\n`` when a child exited.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent exits."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class ForkServer:
    def __init__(self, pid: int, cmd_w: int, ev_r: int) -> None:
        self.pid = pid
        self.cmd_w = cmd_w
        self.ev_r = ev_r
        self._buf = b""

    @classmethod
    def start(cls, worker_main: Callable[[], Any], close_fds: list[int]) -> ForkServer:
        cmd_r, cmd_w = os.pipe()
        ev_r, ev_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(cmd_w)
                os.close(ev_r)
                for fd in close_fds:
                    os.close(fd)
                from nbcluster.runtime.execute.proctitle import set_title

                set_title("fork_server")
                _serve(cmd_r, ev_w, worker_main)
            finally:
                os._exit(0)
        os.close(cmd_r)
        os.close(ev_w)
        os.set_blocking(ev_r, False)
        return cls(pid, cmd_w, ev_r)

    def spawn(self) -> None:
        os.write(self.cmd_w, b"s")

    def kill(self, pid: int) -> None:
        os.write(self.cmd_w, b"k%d\n" % pid)

    def read_events(self) -> list[tuple[str, int, int]]:
        """Drain what the server reported: ("s", pid, 0) or ("x", pid, status)."""
        try:
            chunk = os.read(self.ev_r, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            return [("eof", 0, 0)]
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            parts = line.split()
            out.append((parts[0].decode(), int(parts[1]), int(parts[2]) if len(parts) > 2 else 0))
        return out

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the server to kill every worker and exit; force it after ``timeout``."""
        import time

        try:
            os.write(self.cmd_w, b"q")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)  # its workers die with it (PDEATHSIG)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.01)


def _serve(cmd_r: int, ev_w: int, worker_main: Callable[[], Any]) -> None:
    die_with_parent()
    # Load what a worker runs once, here, so every worker forked from us starts warm (and
    # this happens while the node process goes on with its own start-up).
    import nbcluster.runtime.execute.worker_main  # noqa: F401
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    children: set[int] = set()

    def reap(*_: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            try:
                os.write(ev_w, b"x %d %d\n" % (pid, os.waitstatus_to_exitcode(status)))
            except OSError:
                pass

    signal.signal(signal.SIGCHLD, reap)
    buf = b""
    quitting = False
    while not quitting:
        try:
            chunk = os.read(cmd_r, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        buf += chunk
        while buf:
            if buf[:1] == b"s":
                buf = buf[1:]
                pid = os.fork()
                if pid == 0:
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.close(cmd_r)
                    os.close(ev_w)
                    _run_child(worker_main)
                children.add(pid)
                os.write(ev_w, b"s %d\n" % pid)
            elif buf[:1] == b"k":
                line, sep, rest = buf.partition(b"\n")
                if not sep:
                    break
                buf = rest
                target = int(line[1:])
                if target in children:
                    try:
                        os.kill(target, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            elif buf[:1] == b"q":
                quitting = True
                break
            else:
                buf = buf[1:]
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for pid in list(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def first_for_oom_killer() -> None:
    """Offer this process first to the kernel's OOM killer (``worker_oom_score_adj``): a task
    that outgrows memory faster than the memory monitor samples then costs a worker, not the
    node or the user's notebook kernel. Raising it needs no privilege; failing is harmless."""
    from nbcluster.runtime.config import CONFIG

    if CONFIG.worker_oom_score_adj:
        try:
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write(str(CONFIG.worker_oom_score_adj))
        except OSError:
            pass


def _run_child(worker_main: Callable[[], Any]) -> None:
    code = 0
    try:
        die_with_parent()
        first_for_oom_killer()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from nbcluster.runtime import ids

        ids.reset_after_fork()
        worker_main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

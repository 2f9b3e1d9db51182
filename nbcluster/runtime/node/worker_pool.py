"""This node's worker processes: started from the fork server, registered, idle, reaped.

The pool keeps ``pool_size`` workers for tasks (one per CPU) so a lease rarely waits for a
process to start, and lets the lease table (``leases``) start more when CPUs are lent back by
blocked workers, up to ``max_workers``. Extra workers that stay idle are asked to go again;
one that owns objects someone still references refuses and stays, as in Ray.

The pool does not decide who gets a worker: it tells its owner (``on_free``) when a worker may
serve a waiting request, and (``on_gone``) when one's process is gone, so its lease is freed.
Workers are the fork server's children: the pool never signals a pid itself.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.node.fork_server import ForkServer
from nbcluster.runtime.wire.transport import Connection

log = logging.getLogger("nbcluster.agent")


class WorkerInfo:
    """One worker process of this node, and the lease it is under (if any)."""

    __slots__ = (
        "actor", "addr", "blocked", "conn", "gpu_parts", "idle_since", "lease", "lease_time", "pid",
        "worker_id",
    )  # fmt: skip

    def __init__(self, worker_id: bytes, pid: int, addr: str, conn: Connection) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.addr = addr
        self.conn = conn
        self.lease: tuple[Connection | None, dict[str, float]] | None = None
        self.gpu_parts: dict[int, float] = {}  # GPU id -> the fraction of it this lease holds
        self.actor: bytes | None = None  # set for a worker dedicated to an actor
        self.lease_time = 0.0
        self.blocked = False
        self.idle_since = time.monotonic()


class WorkerPool:
    """The workers of this node, by id, connection and pid, and the idle ones in order."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fork_server: ForkServer, pool_size: int
    ) -> None:
        self.loop = loop
        self.fork_server = fork_server
        self.pool_size = pool_size
        self.max_workers = CONFIG.max_workers or max(32, 8 * self.pool_size)
        self.workers: dict[bytes, WorkerInfo] = {}
        self.by_conn: dict[Connection, WorkerInfo] = {}
        self.pids: dict[int, WorkerInfo | None] = {}
        #: workers forked but not registered yet
        self.starting = 0
        self._asked_to_exit = 0  # idle workers asked whether they may go, not answered yet
        self.idle: collections.deque[WorkerInfo] = collections.deque()
        #: set when the node stops: workers that go are not replaced, nothing is granted
        self.closing = False
        #: a worker may serve a waiting request now (registered, kept, or one freed resources)
        self.on_free: Callable[[], None] = lambda: None
        #: a worker's process is gone (called after it left the pool, before it is replaced)
        self.on_gone: Callable[[WorkerInfo], None] = lambda w: None
        self.loop.add_reader(fork_server.ev_r, self._on_fork_events)
        self.loop.call_later(1.0, self._reap_extra_workers)

    def start(self) -> None:
        for _ in range(self.pool_size):
            self.spawn()

    def spawn(self) -> None:
        """Fork one more worker; it joins the pool when it registers (``add``)."""
        self.starting += 1
        self.fork_server.spawn()

    def add(self, worker_id: bytes, pid: int, addr: str, conn: Connection) -> None:
        """A worker registered: it is idle until leased."""
        w = WorkerInfo(worker_id, pid, addr, conn)
        self.workers[worker_id] = w
        self.by_conn[conn] = w
        if pid in self.pids:
            self.pids[pid] = w
            self.starting = max(0, self.starting - 1)
        self.idle.append(w)
        self.loop.call_soon(self.on_free)

    def _on_fork_events(self) -> None:
        for kind, pid, status in self.fork_server.read_events():
            if kind == "s":
                self.pids.setdefault(pid, None)
            elif kind == "x":
                w = self.pids.pop(pid, None)
                if w is None:  # died before it registered
                    self.starting = max(0, self.starting - 1)
                    if not self.closing:
                        log.warning("worker pid %d exited with %d before starting", pid, status)
                        self.on_free()
                else:
                    self.worker_gone(w)
            elif kind == "eof":
                self.loop.remove_reader(self.fork_server.ev_r)

    def worker_gone(self, w: WorkerInfo) -> None:
        """``w``'s process exited or its connection closed: it leaves the pool, once."""
        if self.workers.pop(w.worker_id, None) is None:
            return
        self.by_conn.pop(w.conn, None)
        try:
            self.idle.remove(w)
        except ValueError:
            pass
        self.on_gone(w)
        if not self.closing:
            self.replenish()
            self.on_free()

    def _task_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.actor is None)

    def replenish(self) -> None:
        """Keep ``pool_size`` workers for tasks, so actors never starve the task pool."""
        while self._task_workers() + self.starting < self.pool_size:
            self.spawn()

    def _reap_extra_workers(self) -> None:
        """Stop extra workers idle for ``idle_worker_timeout_s``, keeping ``pool_size``. A
        worker is only asked to go: one that owns objects someone still references refuses
        (its objects would be lost with it) and stays in the pool, as in Ray."""
        if self.closing:
            return
        now = time.monotonic()
        excess = self._task_workers() - self.pool_size - self._asked_to_exit
        for w in list(self.idle):
            if excess <= 0 or now - w.idle_since < CONFIG.idle_worker_timeout_s:
                break
            self.idle.remove(w)
            excess -= 1
            self._ask_to_exit(w)
        self.loop.call_later(min(1.0, CONFIG.idle_worker_timeout_s), self._reap_extra_workers)

    def _ask_to_exit(self, w: WorkerInfo) -> None:
        self._asked_to_exit += 1

        def answered(f: asyncio.Future[Any]) -> None:
            self._asked_to_exit -= 1
            if f.cancelled() or f.exception() is not None:
                return  # its connection closed: it is gone already
            if f.result() and not self.closing:
                self._stop_idle_worker(w)
            elif w.worker_id in self.workers and w.lease is None:
                w.idle_since = time.monotonic()
                self.idle.append(w)  # it owns objects: still a worker of the pool
                self.on_free()

        w.conn.call("may_exit").add_done_callback(answered)

    def _stop_idle_worker(self, w: WorkerInfo) -> None:
        """Stop a worker that may go, once it has shipped its events (the tasks it ran and
        submitted would otherwise show unfinished for ever); a worker that does not answer
        within ``node_timeout_s`` is stopped all the same."""
        if w.conn.closed:
            self.fork_server.kill(w.pid)
            return
        self.kill_after(w, w.conn.call("flush_events"), CONFIG.node_timeout_s)

    def kill_after(
        self, w: WorkerInfo, answer: asyncio.Future[Any], timeout: float,
        then: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """Kill ``w`` once ``answer`` comes (whatever it says) or ``timeout`` passes, once;
        ``then`` runs just before."""
        done = False

        def kill(_: Any = None) -> None:
            nonlocal done
            if not done:
                done = True
                if then is not None:
                    then()
                self.fork_server.kill(w.pid)

        answer.add_done_callback(kill)
        self.loop.call_later(timeout, kill)

    def kill_worker(self, conn: Connection, worker_id: bytes) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            self.fork_server.kill(w.pid)

    async def end_actors(self, grace: float) -> None:
        """The node is stopping: ask the actors here to end gracefully (their atexit handlers
        run, as when a Ray driver shuts down), and give them ``grace`` seconds to."""
        hosts = [w for w in self.workers.values() if w.actor is not None and not w.conn.closed]
        for w in hosts:
            w.conn.notify("exit_actor", False)
        deadline = self.loop.time() + grace
        while any(w.worker_id in self.workers for w in hosts) and self.loop.time() < deadline:
            await asyncio.sleep(0.02)  # their exits arrive as fork server events

"""Calls to actors: one queue per actor, sent in submission order to wherever it lives.

The head knows where each actor runs (``wait_actor``, answered once it is alive, restarted or
dead). A caller connects to the actor's worker and pushes its calls there directly, in order;
when that connection drops, calls in flight are retried by ``max_task_retries`` once the head
says where the actor lives again, or fail with ``ActorDiedError``.

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.submit.push import push
from nbcluster.runtime.submit.task_spec import TaskSpec
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class ActorQueue:
    """The calls one caller has for one actor, sent in submission order."""

    __slots__ = (
        "actor_id", "addr", "blocked", "conn", "dead", "gpus", "inflight", "last_used", "node",
        "queue", "resolving",
    )  # fmt: skip

    def __init__(self, actor_id: bytes) -> None:
        self.actor_id = actor_id
        self.queue: collections.deque[TaskSpec] = collections.deque()
        self.inflight: dict[bytes, TaskSpec] = {}
        self.conn: Connection | None = None
        self.addr = ""
        self.resolving = False
        self.dead: bytes | None = None
        self.blocked = False
        self.last_used = 0.0
        self.gpus: list[int] = []
        self.node = ""  # the agent address of the node it runs on


class ActorSubmitter:
    """This process's queues of calls, one per actor it calls."""

    def __init__(self, core: CoreWorker, table: TaskTable) -> None:
        self.core = core
        self.table = table
        self.actor_queues: dict[bytes, ActorQueue] = {}

    def actor_queue(self, actor_id: bytes) -> ActorQueue:
        aq = self.actor_queues.get(actor_id)
        if aq is None:
            aq = self.actor_queues[actor_id] = ActorQueue(actor_id)
        return aq

    def actor_dead(self, actor_id: bytes, death: bytes) -> None:
        """The actor is dead for good (we killed it): its queued and later calls fail."""
        aq = self.actor_queue(actor_id)
        aq.dead = death
        self.dispatch(aq)

    def dispatch(self, aq: ActorQueue) -> None:
        """Send the calls at the head of the queue whose arguments are ready, in order."""
        if aq.dead is not None:
            while aq.queue:
                self.table.fail_raw(aq.queue.popleft(), aq.dead)
            if not aq.inflight and self.actor_queues.get(aq.actor_id) is aq:
                # Forget it: a later call asks the head again, and fails the same way.
                del self.actor_queues[aq.actor_id]
            return
        if aq.conn is None or aq.conn.closed:
            self._resolve_actor(aq)
            return
        queue = aq.queue
        while queue and queue[0].pending_deps == 0:
            spec = queue.popleft()
            if spec.cancelled:
                self.table.fail(spec, exc.TaskCancelledError(f"call {spec.fn.name} was cancelled"))
                continue
            if self.table.failed_dep(spec):
                continue
            push(self.core.refs, spec, aq)

    def _resolve_actor(self, aq: ActorQueue) -> None:
        """Ask the head where the actor lives (after creation, or again after a failure)."""
        if aq.resolving:
            return
        aq.resolving = True
        fut = self.core.head.call("wait_actor", aq.actor_id, aq.addr)

        def answered(f: Any) -> None:
            if f.cancelled() or f.exception() is not None:
                aq.resolving = False
                if not self.core.closed:
                    from nbcluster.runtime.objects.serialization import error_bytes

                    aq.dead = error_bytes(
                        exc.ActorDiedError(f"cannot locate the actor: {f.exception()}")
                    )
                    self.dispatch(aq)
                return
            state, addr, death, node = f.result()
            aq.node = node
            if state != "ALIVE":
                aq.resolving = False
                aq.dead = death
                self.dispatch(aq)
                return
            self.core.loop.create_task(self._connect_actor(aq, addr))

        fut.add_done_callback(answered)

    async def _connect_actor(self, aq: ActorQueue, addr: str) -> None:
        try:
            conn = await self.core.connect(addr)
        except Exception:
            aq.resolving = False
            aq.addr = addr
            self._resolve_actor(aq)  # it died meanwhile: wait for its restart or death
            return
        aq.resolving = False
        aq.conn = conn
        aq.addr = addr
        self.dispatch(aq)

    def on_conn_closed(self, conn: Connection) -> None:
        """The connection to an actor's worker dropped: its process died."""
        for aq in self.actor_queues.values():
            if aq.conn is conn:
                self._actor_conn_lost(aq)

    def _actor_conn_lost(self, aq: ActorQueue) -> None:
        aq.conn = None
        retry = []
        for spec in list(aq.inflight.values()):
            spec.lease = None
            if not spec.cancelled and (spec.max_retries == -1 or spec.attempt < spec.max_retries):
                spec.attempt += 1
                if ev.ENABLED:
                    ev.task_retried(spec, "the actor's process died")
                retry.append(spec)
            else:
                self.table.fail(
                    spec,
                    exc.ActorDiedError(
                        f"The actor died while running {spec.fn.name} (its process exited); "
                        "the call was not retried (max_task_retries)"
                    ),
                )
        aq.inflight.clear()
        aq.queue.extendleft(reversed(retry))
        self._resolve_actor(aq)

    def on_node_dead(self, agent_address: str) -> None:
        """Cut the connections to actors on that node (-> ``on_conn_closed``)."""
        for aq in self.actor_queues.values():
            if aq.conn is not None and aq.node == agent_address and aq.conn.transport:
                aq.conn.transport.abort()

    def forget(self) -> None:
        self.actor_queues.clear()

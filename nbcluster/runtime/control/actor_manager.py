"""The head's actor directory: where each actor lives, its name, and its restarts.

Creating an actor goes through the head once: it places the actor on a dedicated worker,
sends it the creation task and records its address. Callers ask the head for that address
(once, and again after a failure) and then send calls straight to the actor's process.

When an actor's process dies the head restarts it (re-running the constructor with the same
arguments) while ``max_restarts`` allows, otherwise marks it dead with the reason, which
callers turn into ``ActorDiedError``. Non-detached actors die with their owner.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.scheduling.placement import Unschedulable, route
from nbcluster.runtime.scheduling.resources import fits
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection, Endpoint, parse_address

if TYPE_CHECKING:
    from nbcluster.runtime.control.node_directory import NodeDirectory, NodeRecord
    from nbcluster.runtime.node.node_agent import NodeAgent

log = logging.getLogger("nbcluster.actors")

PLACE_RETRY_S = 0.5

PENDING = "PENDING_CREATION"
ALIVE = "ALIVE"
RESTARTING = "RESTARTING"
DEAD = "DEAD"


class ActorWorker:
    """Where an actor runs: a dedicated worker on some node."""

    __slots__ = ("addr", "gpus", "node_id", "pid", "worker_id")

    def __init__(self, node_id: str, worker_id: bytes, pid: int, addr: str, gpus: list[int]):
        self.node_id = node_id
        self.worker_id = worker_id
        self.pid = pid
        self.addr = addr
        self.gpus = gpus


class ActorInfo:
    __slots__ = (
        "actor_id", "addr", "class_name", "create", "death", "detached", "hold", "max_restarts",
        "max_task_retries", "name", "namespace", "owner", "restarts", "sched", "state",
        "strategy", "waiters", "worker",
    )  # fmt: skip

    def __init__(self, actor_id: bytes, spec: dict[str, Any], owner: str) -> None:
        self.actor_id = actor_id
        self.name: str | None = spec.get("name")
        self.namespace: str = spec.get("namespace") or "default"
        self.detached = bool(spec.get("detached"))
        self.sched: dict[str, float] = spec["sched"]
        #: ``placement.encode_strategy`` of its scheduling_strategy (None: the default)
        self.strategy: Any = spec.get("strategy")
        if isinstance(self.strategy, list):
            self.strategy = tuple(self.strategy)
        self.hold: dict[str, float] = spec["hold"]
        self.max_restarts = int(spec.get("max_restarts") or 0)
        self.max_task_retries = int(spec.get("max_task_retries") or 0)
        #: The constructor call, replayed on each restart.
        self.create = P.PushTask(*spec["create"])
        self.class_name: str = spec.get("class_name", "Actor")
        self.owner = owner
        self.restarts = 0
        self.state = PENDING
        self.addr = ""
        self.worker: ActorWorker | None = None
        self.death: bytes | None = None
        self.waiters: list[tuple[str, asyncio.Future[Any]]] = []


class ActorManager:
    def __init__(
        self, endpoint: Endpoint, agent: NodeAgent, directory: NodeDirectory, address: str
    ) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.agent = agent
        self.directory = directory
        self.address = address
        self.actors: dict[bytes, ActorInfo] = {}
        self.names: dict[tuple[str, str], bytes] = {}
        self.creating: dict[bytes, ActorInfo] = {}  # creation task id -> actor
        self.conns: dict[str, Connection] = {}
        self._dead: collections.deque[bytes] = collections.deque()  # oldest death first
        for name in (
            "create_actor", "wait_actor", "get_named_actor", "kill_actor", "terminate_actor",
            "actor_exiting",
            "list_actors", "actor_worker_gone", "owner_gone",
        ):  # fmt: skip
            endpoint.rpc[name] = getattr(self, name)
        endpoint.on(P.TaskDone, self._on_create_done)
        endpoint.on(P.Output, self._on_output)
        agent.on_actor_worker_gone = lambda w: self.actor_worker_gone(None, w.worker_id)
        agent.on_owner_gone = lambda owner: self.owner_gone(None, owner)
        directory.on_node_dead.append(self._on_node_dead)
        directory.listeners.append(self._on_view)
        self._unplaced: list[ActorInfo] = []
        #: called with the address of a driver or worker that left (its groups go too)
        self.owner_listeners: list[Callable[[str], None]] = []

    def _on_view(self, view: dict[str, Any]) -> None:
        """Nodes changed: actors no node could host may fit now."""
        pending, self._unplaced = self._unplaced, []
        for info in pending:
            self._place(info)

    # -- RPCs ---------------------------------------------------------------------------------
    def create_actor(self, conn: Connection, actor_id: bytes, spec: dict[str, Any]) -> Any:
        """Register and start an actor; with a name already taken, return the existing one
        when ``get_if_exists``, else refuse."""
        owner = conn.info.get("addr", "")
        name = spec.get("name")
        if name:
            key = (spec.get("namespace") or "default", name)
            existing = self.names.get(key)
            if existing is not None and self.actors[existing].state != DEAD:
                if spec.get("get_if_exists"):
                    info = self.actors[existing]
                    return [existing, False, info.owner]
                raise ValueError(f"an actor named {name!r} already exists in namespace {key[0]!r}")
            self.names[key] = actor_id
        info = ActorInfo(actor_id, spec, owner)
        self.actors[actor_id] = info
        ev.actor_state(info)
        self._place(info)
        return [actor_id, True, owner]

    def wait_actor(self, conn: Connection, actor_id: bytes, not_addr: str) -> Any:
        """The actor's address once it is alive (and not at ``not_addr``), or why it died."""
        info = self.actors.get(actor_id)
        if info is None:
            return [DEAD, "", _err(exc.ActorDiedError("the actor is unknown to the cluster")), ""]
        if info.state == DEAD:
            return [DEAD, "", info.death, ""]
        if info.state == ALIVE and info.addr != not_addr:
            return [ALIVE, info.addr, None, self._node_address(info)]
        fut: asyncio.Future[Any] = self.loop.create_future()
        info.waiters.append((not_addr, fut))
        return fut

    def get_named_actor(self, conn: Connection, name: str, namespace: str | None) -> Any:
        actor_id = self.names.get((namespace or "default", name))
        if actor_id is None:
            return None
        info = self.actors[actor_id]
        if info.state == DEAD:
            return None
        methods = (info.create.extra or {}).get("methods", {})
        return [actor_id, info.owner, info.class_name, methods, info.max_task_retries]

    def kill_actor(self, conn: Connection, actor_id: bytes, no_restart: bool) -> bytes | None:
        """Kill the actor's process; with ``no_restart``, it is dead for good: the answer is
        why, so the caller fails its later calls at once, not once the process is gone."""
        info = self.actors.get(actor_id)
        if info is None or info.state == DEAD:
            return info.death if info is not None else None
        if no_restart:
            self._mark_dead(info, exc.ActorDiedError("the actor was killed by nbcluster.kill()"))
        self._kill_worker(info)
        return info.death if no_restart else None

    def _kill_worker(self, info: ActorInfo) -> None:
        w = info.worker
        if w is None:
            return
        if w.node_id == self.agent.node_id:
            self.agent.kill_worker(None, w.worker_id)  # type: ignore[arg-type]
            return
        rec = self.directory.nodes.get(w.node_id)
        if rec is not None and rec.conn is not None and not rec.conn.closed:
            rec.conn.notify("kill_worker", w.worker_id)

    def actor_exiting(self, conn: Connection, actor_id: bytes) -> None:
        info = self.actors.get(actor_id)
        if info is not None:
            self._mark_dead(info, exc.ActorDiedError("the actor exited via exit_actor()"))

    def list_actors(self, conn: Connection) -> Any:
        return [
            {
                "actor_id": a.actor_id.hex(),
                "class_name": a.class_name,
                "name": a.name or "",
                "namespace": a.namespace,
                "state": a.state,
                "pid": a.worker.pid if a.worker else None,
                "restarts": a.restarts,
            }
            for a in self.actors.values()
        ]

    # -- placement and creation ----------------------------------------------------------------
    def _pick_node(self, info: ActorInfo) -> str | None:
        """Where the actor goes, as a task of its shape and strategy would (``placement.route``:
        NodeAffinity, SPREAD, else this node when it fits now, else the node with the most
        room); None if no node ever could. Raises ``Unschedulable`` for a hard NodeAffinity to
        a node that is not alive."""
        me, sched = self.agent.node_id, info.sched
        view = self.directory.view()
        if not any(fits(v["total"], sched) for v in view.values()):
            return None
        agent = self.agent
        target = route(me, view, agent.total, agent.available, sched, info.strategy, False)
        return me if target is None else target

    def _place(self, info: ActorInfo) -> None:
        if info.state == DEAD:
            return
        try:
            node_id = self._pick_node(info)
        except Unschedulable as e:
            self._mark_dead(info, exc.ActorUnschedulableError(
                f"The actor {info.class_name} cannot be scheduled: {e}"))  # fmt: skip
            return
        if node_id is None:  # placed when a node that fits joins (see _on_view)
            if info not in self._unplaced:
                self._unplaced.append(info)
            return
        rec = self.directory.nodes.get(node_id)
        if node_id == self.agent.node_id or rec is None or rec.conn is None:
            node_id = self.agent.node_id
            fut = self.agent.lease_actor_worker(None, info.actor_id, info.sched, info.hold)
        else:
            fut = rec.conn.call("lease_actor_worker", info.actor_id, info.sched, info.hold)
        fut.add_done_callback(lambda f: self._placed(info, node_id, f))

    def _placed(self, info: ActorInfo, node_id: str, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            if not fut.cancelled() and info.state != DEAD:
                # The node it was going to went away first: not a restart, place it again.
                log.warning("placing actor %s failed (%s); retrying", info.class_name,
                            fut.exception())  # fmt: skip
                self.loop.call_later(PLACE_RETRY_S, self._place, info)
            return
        worker_id, pid, addr, gpus = fut.result()
        info.worker = ActorWorker(node_id, worker_id, pid, addr, gpus)
        if info.state == DEAD:
            self._kill_worker(info)
            return
        self.loop.create_task(self._send_create(info, info.worker))

    async def _send_create(self, info: ActorInfo, w: ActorWorker) -> None:
        try:
            conn = await self._connect(w.addr)
        except Exception as e:
            log.warning("cannot reach the worker for actor %s: %s", info.class_name, e)
            self._kill_worker(info)
            return
        self.creating[info.create.task_id] = info
        conn.post(info.create._replace(extra={**(info.create.extra or {}), "gpus": w.gpus,
                                              "res": info.hold}))  # fmt: skip

    async def _connect(self, addr: str) -> Connection:
        conn = self.conns.get(addr)
        if conn is not None and not conn.closed:
            return conn
        host, port = parse_address(addr)
        conn = await self.endpoint.connect(host, port)
        conn.post(P.Hello(self.address, "head", b"", 0))
        self.conns[addr] = conn
        return conn

    def _on_create_done(self, conn: Connection, msg: P.TaskDone) -> None:
        task_id, status, results = msg.task_id, msg.status, msg.results
        info = self.creating.pop(task_id, None)
        if info is None or info.state == DEAD:
            return
        if status == P.DONE_OK:
            assert info.worker is not None
            info.state = ALIVE
            info.addr = info.worker.addr
            ev.actor_state(info)
            self._wake(info)
            return
        cause = pickle.loads(results[0][1]) if results and results[0][1] else None
        tb = getattr(cause, "traceback_str", "") or str(cause)
        self._mark_dead(
            info,
            exc.ActorDiedError(
                f"The actor {info.class_name} died because of an error raised in its "
                f"creation task:\n{tb}"
            ),
        )
        self._kill_worker(info)

    def _on_output(self, conn: Connection, msg: P.Output) -> None:
        stream, text, where = msg.stream, msg.text, msg.where
        from nbcluster.runtime.core.output import deliver

        deliver(None, stream, text, where)

    # -- failures -----------------------------------------------------------------------------
    def actor_worker_gone(self, conn: Connection | None, worker_id: bytes) -> None:
        for info in self.actors.values():
            if info.worker is not None and info.worker.worker_id == worker_id:
                self._worker_gone(info)
                return

    def _on_node_dead(self, rec: NodeRecord) -> None:
        for info in list(self.actors.values()):
            if info.worker is not None and info.worker.node_id == rec.node_id:
                self._worker_gone(info)

    def _worker_gone(self, info: ActorInfo) -> None:
        w = info.worker
        assert w is not None
        info.worker = None
        self.conns.pop(w.addr, None)
        if info.state == DEAD:
            return
        if info.max_restarts == -1 or info.restarts < info.max_restarts:
            info.restarts += 1
            info.state = RESTARTING
            info.addr = ""
            ev.actor_state(info)
            log.info("restarting actor %s (restart %d)", info.class_name, info.restarts)
            self._place(info)
        else:
            self._mark_dead(
                info,
                exc.ActorDiedError(
                    f"The actor {info.class_name} died: its worker process (pid {w.pid}) "
                    f"exited and no restarts are left (max_restarts={info.max_restarts})"
                ),
            )

    def owner_gone(self, conn: Connection | None, owner: str) -> None:
        """A driver or worker that owned actors disconnected: its actors go too."""
        for info in list(self.actors.values()):
            if info.owner == owner and not info.detached and info.state != DEAD:
                self.terminate_actor(None, info.actor_id, "its owner is gone")
        for fn in self.owner_listeners:
            fn(owner)

    def kill_where(self, placed_by: Callable[[dict[str, float]], bool], err: BaseException) -> None:
        """Kill for good every live actor whose placement resources ``placed_by`` selects
        (those of a placement group being removed), alive or still waiting for a node."""
        for info in list(self.actors.values()):
            if info.state != DEAD and placed_by(info.sched):
                self._mark_dead(info, err)
                self._kill_worker(info)

    def terminate_actor(self, conn: Connection | None, actor_id: bytes, why: str) -> None:
        """End an actor gracefully, as Ray does when its handles are gone: the calls already
        sent to it finish and its atexit handlers run; past ``actor_exit_grace_s`` it is
        killed."""
        info = self.actors.get(actor_id)
        if info is None or info.state == DEAD:
            return
        self._mark_dead(info, exc.ActorDiedError(f"The actor {info.class_name} ended: {why}"))
        w = info.worker
        if w is None:
            return

        async def ask() -> None:
            try:
                conn = await self._connect(w.addr)
                conn.notify("exit_actor", False)
            except Exception:
                pass

        self.loop.create_task(ask())
        self.loop.call_later(CONFIG.actor_exit_grace_s, self._kill_if_still, info, w)

    def _kill_if_still(self, info: ActorInfo, w: ActorWorker) -> None:
        if info.worker is w:
            self._kill_worker(info)

    def _mark_dead(self, info: ActorInfo, err: BaseException) -> None:
        if info.state == DEAD:
            return
        info.state = DEAD
        info.death = _err(err)
        info.addr = ""
        ev.actor_state(info)
        if info.name and self.names.get((info.namespace, info.name)) == info.actor_id:
            del self.names[(info.namespace, info.name)]
        self._wake(info)
        # Remember the dead for a while (why they died is what later calls report), but not
        # forever: a long session creates actors without end. Ray prunes them the same way.
        self._dead.append(info.actor_id)
        while len(self._dead) > CONFIG.max_dead_actors:
            old = self.actors.get(self._dead.popleft())
            if old is not None and old.state == DEAD:
                del self.actors[old.actor_id]

    def _node_address(self, info: ActorInfo) -> str:
        rec = self.directory.nodes.get(info.worker.node_id) if info.worker else None
        return rec.address if rec is not None else ""

    def _wake(self, info: ActorInfo) -> None:
        keep = []
        for not_addr, fut in info.waiters:
            if fut.done():
                continue
            if info.state == DEAD:
                fut.set_result([DEAD, "", info.death, ""])
            elif info.state == ALIVE and info.addr != not_addr:
                fut.set_result([ALIVE, info.addr, None, self._node_address(info)])
            else:
                keep.append((not_addr, fut))
        info.waiters = keep


def _err(e: BaseException) -> bytes:
    return pickle.dumps(e)

"""The owner's side of running tasks, as one object the core worker builds and routes to.

A task's way through its owner, one module a step:

- ``dependency_resolver``: a submitted task waits until its ObjectRef arguments are ready;
- ``lease_scheduler``: a normal task joins its scheduling class; the owner leases workers of
  that shape from its node agent and pushes tasks straight to them (``push``);
- ``actor_submitter``: an actor call joins its actor's queue and goes to where the actor lives;
- ``task_manager``: the worker's reply resolves the results, or the task is retried or fails
  (``task_table`` holds the pending tasks, their lineage, and how a task ends);
- ``streams``: the values a streaming generator task yields, as they come;
- ``recovery``: what died with a node is rebuilt from lineage or fetched again;
- ``cancel``: cancelling tasks this process submitted.

``Submitter`` builds them, wires them together, and is the one face the rest of the runtime
sees (``CoreWorker.submitter``). Everything runs on the event loop thread, except ``submit``
and ``submit_task``, which user threads call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events as ev
from nbcluster.runtime.core import output
from nbcluster.runtime.ids import new_task_id, object_id
from nbcluster.runtime.ownership.generators import ObjectRefGenerator, StreamFeed
from nbcluster.runtime.ownership.lineage import Lineage
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.submit.actor_submitter import ActorQueue, ActorSubmitter
from nbcluster.runtime.submit.cancel import Canceller
from nbcluster.runtime.submit.dependency_resolver import DependencyResolver
from nbcluster.runtime.submit.lease_requests import SchedClass, warn_workers_capped
from nbcluster.runtime.submit.lease_scheduler import LeaseScheduler
from nbcluster.runtime.submit.recovery import Recovery
from nbcluster.runtime.submit.streams import StreamReceiver
from nbcluster.runtime.submit.task_manager import TaskManager
from nbcluster.runtime.submit.task_spec import FunctionDescriptor, TaskSpec, encode_args
from nbcluster.runtime.submit.task_table import TaskTable
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class Submitter:
    """The owner's side of running tasks: builds the parts, wires them, faces the core."""

    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        self.table = TaskTable(core)
        self.recovery = Recovery(core, self.table, self._submit_again)
        self.leases = LeaseScheduler(core, self.table, self.recovery)
        self.actors = ActorSubmitter(core, self.table)
        self.resolver = DependencyResolver(
            core, self.table, self.recovery, self.leases, self.actors
        )
        self.manager = TaskManager(core, self.table, self.leases, self.resolver)
        self.canceller = Canceller(self.table, self.actors)
        self.streams = StreamReceiver(core, self.table)
        # What the core worker and the API call, bound once here so that a reply or an actor
        # call costs no extra call on its way in. ``submit`` takes a task built elsewhere (an
        # actor call); any thread.
        self.submit = self.resolver.submit
        self.on_task_done = self.manager.on_task_done
        self.on_requeue = self.leases.on_requeue
        self.on_output = self.table.on_output
        self.on_generator_item = self.streams.on_item
        self.on_lease_queued = self.leases.on_lease_queued
        self.on_leases_wanted = self.leases.on_leases_wanted
        self.on_worker_oom = self.leases.on_worker_oom
        self.on_workers_capped = lambda agent, cap: warn_workers_capped(core, agent, cap)
        self.on_return_dropped = self.table.on_return_dropped
        self.reconstruct = self.recovery.reconstruct
        self.lost_dep = self.recovery.lost_dep
        self.actor_dead = self.actors.actor_dead
        self.cancel = self.canceller.cancel
        self.cancel_children = self.canceller.cancel_children
        self.cancel_tagged = self.canceller.cancel_tagged
        self.return_all_leases = self.leases.return_all_leases

    def start(self) -> None:
        self.leases.start()

    # -- what other parts of the runtime read (sizes, snapshots, whether a worker may exit) --
    @property
    def tasks(self) -> dict[bytes, TaskSpec]:
        return self.table.tasks

    @property
    def lineage(self) -> Lineage:
        return self.table.lineage

    @property
    def classes(self) -> dict[tuple[Any, ...], SchedClass]:
        return self.leases.classes

    @property
    def actor_queues(self) -> dict[bytes, ActorQueue]:
        return self.actors.actor_queues

    @property
    def dead_agents(self) -> dict[str, None]:
        return self.recovery.dead_agents

    # -- submission (user threads) ----------------------------------------------------------
    def submit_task(
        self,
        fn: FunctionDescriptor,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: int | str,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: Any,
        strategy: Any = None,
        max_calls: int = 0,
        runtime_env: dict[str, Any] | None = None,
        namespace: str | None = None,
    ) -> list[Any]:
        """Submit a task: its return refs, or ``[ObjectRefGenerator]`` for a streaming one."""
        core = self.core
        dynamic = num_returns == "dynamic"  # one return: the generator of the values' refs
        streaming = num_returns == "streaming"  # one return: settles when the task ends
        n = 1 if dynamic or streaming else int(num_returns)
        blob, deps, held = encode_args(args, kwargs, fn.name, core.put_serialized)
        task_id = new_task_id()
        return_ids = [object_id(task_id, i + 1) for i in range(n)]
        spec = TaskSpec(
            task_id, fn, blob, deps, held, n, resources, max_retries,
            retry_exceptions, return_ids,
        )  # fmt: skip
        spec.tag = output.current_tag()
        spec.strategy = strategy
        spec.max_calls = max_calls
        spec.dynamic = dynamic
        spec.runtime_env, spec.namespace = runtime_env, namespace
        parent = core.current_task
        spec.parent = parent.task_id if parent is not None else None
        for oid in return_ids:
            core.refs.create_owned(oid, spec)
        refs: list[Any] = [ObjectRef(oid, core.address) for oid in return_ids]
        if streaming:
            refs = [open_stream(core, spec, refs[0])]
        self.resolver.submit(spec)
        return refs

    def _submit_again(self, spec: TaskSpec) -> None:
        """A task rebuilt from lineage goes through dependency resolution again."""
        self.resolver.submit(spec)

    # -- processes and nodes lost (loop) -------------------------------------------------------
    def on_conn_closed(self, conn: Connection) -> None:
        """A leased worker's or an actor's connection dropped: its process died."""
        self.actors.on_conn_closed(conn)
        self.manager.on_worker_lost(conn)

    def on_node_dead(self, agent_address: str) -> None:
        """A node died: retry what ran there and rebuild what only it held."""
        self.recovery.note_dead(agent_address)
        self.leases.on_node_dead(agent_address)
        self.actors.on_node_dead(agent_address)
        self.recovery.rebuild_lost(agent_address)

    def forget_everything(self) -> None:
        """This process left the cluster: nothing here can run or be rebuilt any more."""
        self.table.forget()
        self.leases.forget()
        self.resolver.forget()
        self.actors.forget()


def open_stream(core: CoreWorker, spec: TaskSpec, completion: ObjectRef) -> ObjectRefGenerator:
    """Make ``spec`` a streaming task whose values go to the generator returned."""
    gen = ObjectRefGenerator(completion, core)
    spec.stream = StreamFeed(gen, ev.call_site() if ev.ENABLED else "")
    return gen


__all__ = ["Submitter", "open_stream"]

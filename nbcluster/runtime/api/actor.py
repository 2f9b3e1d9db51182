"""Actors as the user sees them: ``@remote`` classes, handles, methods — Ray's API.

``Cls.remote(...)`` registers the actor with the head (which places and starts it) and returns
a handle at once. Calls on a handle go straight from the caller to the actor's process, in
submission order, batched like tasks.

A handle's lifetime is reference counted exactly like an ObjectRef's: each handle holds a ref
to a per-actor object owned by the creator, so handles passed to tasks and other actors keep
the actor alive (and so does a call, until it is done), and when the last one anywhere is gone
the owner asks the head to destroy the actor (unless it is ``lifetime="detached"``).
"""

from __future__ import annotations

import inspect
import pickle
import threading
from typing import Any

from nbcluster.runtime.api import job_scope, runtime_env
from nbcluster.runtime.api.options import (
    ACTOR,
    METHOD,
    check_num_returns,
    default_num_returns,
    validate,
)
from nbcluster.runtime.api.remote_function import Exportable, check_function_size
from nbcluster.runtime.api.signatures import Binder, method_params, params_of
from nbcluster.runtime.core import output
from nbcluster.runtime.ids import new_task_id, object_id, random_id
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.ownership.object_ref import ObjectRef, get_core
from nbcluster.runtime.ownership.reference_table import KIND_INLINE, PENDING, READY
from nbcluster.runtime.scheduling.bundles import apply_strategy
from nbcluster.runtime.scheduling.placement import encode_strategy
from nbcluster.runtime.scheduling.resources import task_resources
from nbcluster.runtime.submit.submitter import open_stream
from nbcluster.runtime.submit.task_spec import FunctionDescriptor, TaskSpec, encode_args
from nbcluster.runtime.wire import protocol as P

_METHOD_ATTR = "__nbcluster_method_options__"
_HANDLE_SUFFIX = b"\xff\xff\xff\xff"


def method(*args: Any, **options: Any) -> Any:
    """``@nbcluster.method(num_returns=2)`` on an actor method sets its default options
    (``num_returns``, ``concurrency_group``, ...)."""
    if args:
        raise TypeError("@method takes keyword options only, e.g. @method(num_returns=2)")
    validate(options, METHOD, "actor methods")

    def wrap(fn: Any) -> Any:
        check_num_returns(options.get("num_returns"), fn)
        setattr(fn, _METHOD_ATTR, options)
        return fn

    return wrap


#: Methods every actor has, as in Ray: readiness, a function run with the instance, and a
#: graceful exit after the calls before it.
BUILTIN_METHODS = ("__ray_ready__", "__ray_call__", "__ray_terminate__")


def _method_table(cls: type) -> dict[str, list[Any]]:
    """name -> [num_returns, parameters (``signatures``), concurrency group]: what callers
    need to call each method, and what travels with handles."""
    table: dict[str, list[Any]] = {}
    for name, fn in inspect.getmembers(cls, callable):
        if name.startswith("__") and name != "__call__":
            continue
        opts = getattr(fn, _METHOD_ATTR, {})
        table[name] = [default_num_returns(opts.get("num_returns"), fn), method_params(cls, name),
                       opts.get("concurrency_group")]  # fmt: skip
    table["__ray_ready__"] = [1, [], None]
    table["__ray_call__"] = [1, None, None]
    table["__ray_terminate__"] = [1, [], None]
    return table


class ActorClass(Exportable):
    """What ``@remote`` makes of a class: ``.remote(...)`` creates an actor."""

    def __init__(self, *args: Any) -> None:
        if len(args) == 3 and isinstance(args[1], tuple):  # ``class B(SomeActor)``
            name, bases = args[0], args[1]
            base: Any = next(b for b in bases if isinstance(b, ActorClass))
            raise TypeError(
                f"Attempted to define subclass '{name}' of actor class '{base._cls.__name__}'. "
                "Inheriting from actor classes is not currently supported. You can instead "
                "inherit from a non-actor base class and make the derived class an actor "
                "class (with @remote)."
            )
        cls, options = args
        validate(options, ACTOR, "actors")
        self._cls = cls
        self._options = options
        self._methods = _method_table(cls)
        self._init = Binder(f"{cls.__name__}.__init__", params_of(cls))
        self._descriptor: FunctionDescriptor | None = None
        self._lock = threading.Lock()
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Use {self._cls.__name__}.remote() instead."
        )

    def __getattr__(self, name: str) -> Any:
        """The class's own attributes (constants, static and class methods, along its MRO)
        read through the actor class, as Ray allows."""
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls, name)

    def options(self, **options: Any) -> ActorClass:
        validate(options, ACTOR, "actors", in_options=True)
        merged = {**self._options, **options}
        validate(merged, ACTOR, "actors")
        new = ActorClass.__new__(ActorClass)
        new.__dict__.update(self.__dict__)
        new._options = merged
        return new

    def _desc(self) -> FunctionDescriptor:
        with self._lock:
            if self._descriptor is None:
                import hashlib

                data = ser.dumps_function(self._cls)
                fid = hashlib.blake2b(data, digest_size=16).digest()
                self._descriptor = FunctionDescriptor(fid, data, self._cls.__name__)
            return self._descriptor

    def _check_size(self) -> None:
        check_function_size(self._desc(), "actor class")

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        from nbcluster.runtime.api.session import core_for_submit

        self._init.check(args, kwargs)
        self._check_size()
        core = core_for_submit()
        o = self._options
        lifetime = o.get("lifetime")
        name = o.get("name")
        hold = task_resources(o.get("num_cpus"), o.get("num_gpus"), o.get("resources"), 0.0)
        sched = task_resources(o.get("num_cpus"), o.get("num_gpus"), o.get("resources"), 1.0)
        desc = self._desc()
        strategy, what = o.get("scheduling_strategy"), f"actor {desc.name}"
        hold = apply_strategy(hold, strategy, what)[0]
        sched, placement = apply_strategy(sched, strategy, what, creation=True)
        blob, deps, held = encode_args(args, kwargs, f"{desc.name}.__init__", core.put_serialized)
        if deps:  # creation arguments must be ready: the head replays them on restart
            entries = [core.entry_of(r) for r in deps]
            pending = [e for e in entries if e.state == PENDING]
            if pending:  # waiting for more entries than were passed would never end
                core.wait_entries(pending, len(pending), None)
            for e in entries:
                if e.state != READY:
                    core.value_of(e)  # raises the argument's error
        actor_id = random_id()
        env = job_scope.env_for_submit(core, runtime_env.normalize(o.get("runtime_env")))
        job_ns = job_scope.namespace(core)
        create = P.PushTask(
            new_task_id(), desc.fn_id, desc.fn_bytes, f"{desc.name}.__init__", blob,
            [[e.oid, e.kind, e.data, e.size] for e in (core.entry_of(r) for r in deps)], 1,
            {"create": actor_id, "max_concurrency": o.get("max_concurrency"),
             "methods": self._methods, "groups": _groups(o.get("concurrency_groups")),
             "owner": core.address, "job": core.job_id,
             "max_task_retries": o.get("max_task_retries", 0), "env": env, "ns": job_ns},
        )  # fmt: skip
        spec = {
            "name": name,
            "namespace": o.get("namespace") or job_ns,
            "get_if_exists": bool(o.get("get_if_exists")),
            "detached": lifetime == "detached",
            "sched": sched,
            "strategy": encode_strategy(placement),
            "hold": hold,
            "max_restarts": o.get("max_restarts", 0),
            "max_task_retries": o.get("max_task_retries", 0),
            "class_name": desc.name,
            "create": create,
        }
        # The handle's object exists before the head hears of the actor: another thread of
        # this process asking for the same name (``get_if_exists``) may get its id back
        # before this call returns, and must find the object it owns already here.
        mine = core.refs.create_owned(actor_id + _HANDLE_SUFFIX)
        mine.state, mine.kind, mine.data = READY, KIND_INLINE, pickle.dumps(None)
        mine.contained = [*deps, *held]
        core.owned_actors[mine.oid] = lifetime == "detached"
        try:
            got_id, created, owner = core.head_call("create_actor", actor_id, spec)
        except BaseException:
            core.refs.forget_unreferenced(mine)
            core.owned_actors.pop(mine.oid, None)
            raise
        if not created:  # an existing actor of that name: ours is never made
            core.refs.forget_unreferenced(mine)
            core.owned_actors.pop(mine.oid, None)
        handle_oid = got_id + _HANDLE_SUFFIX
        return ActorHandle(
            got_id, desc.name, self._methods, o.get("max_task_retries", 0),
            ObjectRef(handle_oid, owner),
        )  # fmt: skip


class ActorHandle:
    """A reference to an actor. Pass it anywhere: tasks, other actors, stored objects."""

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, list[Any]],
        max_task_retries: int,
        ref: ObjectRef,
    ) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._method_table = methods
        self._max_task_retries = max_task_retries
        self._ref = ref
        self._method_cache: dict[str, ActorMethod] = {}

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("_") and name not in BUILTIN_METHODS:
            raise AttributeError(name)
        m = self._method_cache.get(name)
        if m is None:
            info = self._method_table.get(name)
            if info is None:
                raise AttributeError(f"actor {self._class_name!r} has no method {name!r}")
            num_returns, params, group = info
            m = ActorMethod(self._actor_id, self._ref, self._class_name, name, num_returns,
                            self._max_task_retries, group,
                            Binder(f"{self._class_name}.{name}", params))  # fmt: skip
            self._method_cache[name] = m
        return m

    def __reduce__(self) -> Any:
        return (
            ActorHandle,
            (self._actor_id, self._class_name, self._method_table, self._max_task_retries,
             self._ref),
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    @property
    def actor_id(self) -> str:
        return self._actor_id.hex()


class ActorMethod:
    """``handle.method``: what ``.remote()`` needs of the handle, not the handle itself.

    The handle caches its methods, so a method pointing back at its handle would make a
    reference cycle: a handle passed to a task would then live on in the worker until the
    cyclic garbage collector ran (in an idle worker, never), and the actor with it. The
    method holds the handle's ref instead, which keeps the actor alive just as the handle
    does (``m = a.f; del a; m.remote()`` works, as in Ray)."""

    __slots__ = (
        "_actor_id", "_binder", "_class_name", "_desc", "_group", "_max_task_retries", "_name",
        "_num_returns", "_ref",
    )  # fmt: skip

    def __init__(
        self, actor_id: bytes, ref: ObjectRef, class_name: str, name: str, num_returns: int | str,
        max_task_retries: int, group: str | None = None, binder: Binder | None = None,
    ) -> None:  # fmt: skip
        self._actor_id = actor_id
        self._ref = ref
        self._class_name = class_name
        self._name = name
        self._num_returns = num_returns
        self._max_task_retries = max_task_retries
        self._group = group
        self._binder = binder or Binder(name, None)
        self._desc = FunctionDescriptor(b"", b"", f"{class_name}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Actor methods cannot be called directly. Use .{self._name}.remote().")

    def options(self, **options: Any) -> ActorMethod:
        validate(options, METHOD, "actor methods", in_options=True)
        m = ActorMethod(
            self._actor_id, self._ref, self._class_name, self._name,
            options.get("num_returns", self._num_returns),
            options.get("max_task_retries", self._max_task_retries),
            options.get("concurrency_group", self._group), self._binder,
        )  # fmt: skip
        # ``name`` names the task (state API, timeline, its errors), as in Ray.
        m._desc = FunctionDescriptor(b"", b"", options["name"]) if "name" in options else self._desc
        return m

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        from nbcluster.runtime.api.session import core_for_submit

        self._binder.check(args, kwargs)
        core = core_for_submit()
        blob, deps, held = encode_args(args, kwargs, self._desc.name, core.put_serialized)
        # The call holds its handle until it is done, as in Ray: ``A.remote().m.remote()``
        # drops the only handle at once, and the actor must not end before the call ran.
        held = [*held, self._ref]
        task_id = new_task_id()
        streaming = self._num_returns == "streaming"
        n = 1 if streaming else int(self._num_returns)
        return_ids = [object_id(task_id, i + 1) for i in range(n)]
        spec = TaskSpec(
            task_id, self._desc, blob, deps, held, n, {}, self._max_task_retries, False,
            return_ids,
        )  # fmt: skip
        spec.actor = self._actor_id
        spec.extra = {"actor": self._actor_id, "method": self._name}
        if self._group is not None:
            spec.extra["group"] = self._group
        spec.tag = output.current_tag()
        for oid in return_ids:
            core.refs.create_owned(oid, spec)
        refs = [ObjectRef(oid, core.address) for oid in return_ids]
        if streaming:  # the values it yields, as they come
            gen = open_stream(core, spec, refs[0])
            core.submitter.submit(spec)
            return gen
        core.submitter.submit(spec)
        if n == 1:
            return refs[0]
        return None if n == 0 else refs


def _groups(groups: Any) -> dict[str, int] | None:
    """Concurrency groups as the actor's process takes them: name -> calls at once."""
    if not groups:
        return None
    if isinstance(groups, dict):
        return {str(k): int(v) for k, v in groups.items()}
    return {str(g): 1 for g in groups}


def handle_of(
    actor_id: bytes, class_name: str, methods: dict[str, list[Any]], max_task_retries: int,
    owner: str,
) -> ActorHandle:  # fmt: skip
    """A handle to an existing actor (its handle object is owned by ``owner``)."""
    ref = ObjectRef(actor_id + _HANDLE_SUFFIX, owner)
    return ActorHandle(actor_id, class_name, methods, max_task_retries, ref)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The live actor named ``name``; ValueError if there is none."""
    from nbcluster.runtime.api.session import core_for_submit

    core = core_for_submit()
    namespace = namespace or job_scope.namespace(core)
    got = core.head_call("get_named_actor", name, namespace, timeout=30)
    if got is None:
        raise ValueError(f"Failed to look up actor with name {name!r}")
    actor_id, owner, class_name, methods, max_task_retries = got
    return handle_of(actor_id, class_name, methods, max_task_retries, owner)


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill the actor's process now; pending and later calls fail with ActorDiedError."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}")
    core = get_core()
    if core is None:
        raise RuntimeError("nbcluster is not initialized")
    death = core.head_call("kill_actor", actor._actor_id, no_restart, timeout=30)
    if death is not None:  # calls made from now on fail, even before the process is gone
        core.call_soon(core.submitter.actor_dead, actor._actor_id, death)


def list_named_actors(all_namespaces: bool = False) -> list[Any]:
    """The names of the live named actors in this job's namespace; with ``all_namespaces``,
    ``{"name": ..., "namespace": ...}`` for every one (as Ray)."""
    core = get_core()
    if core is None:
        return []
    live = [a for a in core.head_call("list_actors", timeout=30)
            if a["name"] and a["state"] != "DEAD"]  # fmt: skip
    if all_namespaces:
        return [{"name": a["name"], "namespace": a["namespace"]} for a in live]
    ns = job_scope.namespace(core) or job_scope.DEFAULT_NAMESPACE
    # A JupyterHub service keeps a user's namespace as ``<user>/<namespace>`` and lists
    # only that user's actors.
    return [a["name"] for a in live if a["namespace"] == ns or a["namespace"].endswith("/" + ns)]


__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "get_actor",
    "kill",
    "list_named_actors",
    "method",
]

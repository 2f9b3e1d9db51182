"""A task as its owner keeps it (lineage) and how its arguments are encoded.

Top-level ObjectRef arguments are dependencies: the owner waits for them, then sends their
values (inline) or locations (store) with the task, and the worker substitutes them before
the call. Everything else is pickled once into ``args_blob`` — ObjectRefs nested inside
containers stay refs, as in Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbcluster.exceptions import SerializationError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.ownership.object_ref import ObjectRef

EMPTY_ARGS = b""


class Dep:
    """Placeholder for the i-th top-level ObjectRef argument inside ``args_blob``."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __reduce__(self) -> Any:
        return (Dep, (self.i,))


class TaskSpec:
    __slots__ = (
        "actor",
        "args_blob",
        "attempt",
        "cancelled",
        "cls",
        "deps",
        "done",
        "dynamic",
        "extra",
        "fn",
        "held",
        "lease",
        "lineage_evicted",
        "max_calls",
        "max_retries",
        "namespace",
        "num_returns",
        "parent",
        "pending_deps",
        "resources",
        "retry_exceptions",
        "return_ids",
        "runtime_env",
        "sched_key",
        "strategy",
        "stream",
        "tag",
        "task_id",
    )

    def __init__(
        self,
        task_id: bytes,
        fn: Any,
        args_blob: bytes,
        deps: list[ObjectRef],
        held: list[Any],
        num_returns: int,
        resources: dict[str, float],
        max_retries: int,
        retry_exceptions: Any,
        return_ids: list[bytes],
    ) -> None:
        self.task_id = task_id
        self.fn = fn  # FunctionDescriptor
        self.args_blob = args_blob
        self.deps = deps  # held until the task finishes, so arguments outlive it
        self.held = held  # refs nested inside arguments, held likewise
        self.num_returns = num_returns
        self.resources = resources
        self.sched_key = tuple(sorted(resources.items()))
        self.max_retries = max_retries
        self.retry_exceptions = retry_exceptions
        self.return_ids = return_ids
        self.attempt = 0
        self.pending_deps = 0
        self.lease: Any = None
        self.done = False
        self.cancelled = False
        self.extra: dict[str, Any] | None = None
        self.actor: Any = None
        self.tag: Any = None  # what output.current_tag() said at submission
        self.strategy: Any = None  # wire form of scheduling_strategy (placement)
        self.cls: Any = None  # the submitter's scheduling class once queued
        self.lineage_evicted = False
        self.max_calls = 0  # the worker retires after this many calls of the function
        self.dynamic = False  # num_returns="dynamic": the result is a generator of refs
        self.stream: Any = None  # num_returns="streaming": its StreamFeed (``generators``)
        self.parent: bytes | None = None  # the task that submitted this one, if any
        self.runtime_env: dict[str, Any] | None = None  # checked by api/runtime_env
        self.namespace: str | None = None  # the job's, for the named actors it looks up


class FunctionDescriptor:
    """A function pickled once and named by the hash of its bytes."""

    __slots__ = ("fn_bytes", "fn_id", "name")

    def __init__(self, fn_id: bytes, fn_bytes: bytes, name: str) -> None:
        self.fn_id = fn_id
        self.fn_bytes = fn_bytes
        self.name = name


ARGS_IN_STORE = b"\x00"


def encode_args(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    fn_name: str,
    put: Callable[[ser.Serialized], ObjectRef],
) -> tuple[bytes, list[ObjectRef], list[Any]]:
    """Return (args_blob, top-level ref deps, refs nested deeper).

    Arguments too large to travel inline are written to the store once (``put``) and passed
    as one more dependency, as Ray does, so a large array argument is copied once, not per
    message.
    """
    if not args and not kwargs:
        return EMPTY_ARGS, [], []
    deps: list[ObjectRef] = []
    a: list[Any] = list(args)
    for i, v in enumerate(a):
        if type(v) is ObjectRef:
            a[i] = Dep(len(deps))
            deps.append(v)
    kw = dict(kwargs)
    for k, v in kw.items():
        if type(v) is ObjectRef:
            kw[k] = Dep(len(deps))
            deps.append(v)
    try:
        s = ser.serialize((a, kw), f"the arguments of {fn_name}()")
    except SerializationError:
        _name_unpicklable(a, kw, fn_name)
        raise
    if s.size >= CONFIG.inline_threshold:
        deps.append(put(s))
        return ARGS_IN_STORE, deps, s.contained
    # Small args travel in the message: out-of-band buffers go back in band.
    blob = ser.pickle_inband(s) if s.buffers else s.meta
    return blob, deps, s.contained


def _name_unpicklable(args: list[Any], kwargs: dict[str, Any], fn_name: str) -> None:
    """Raise the error for the first argument that cannot be pickled, naming it."""
    named = [(f"argument {i}", v) for i, v in enumerate(args)]
    named += [(f"keyword argument {k!r}", v) for k, v in kwargs.items()]
    for what, value in named:
        ser.serialize(value, f"{what} of {fn_name}()")


def decode_args(blob: bytes, dep_values: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    if not blob:
        return [], {}
    if blob == ARGS_IN_STORE:
        a, kw = dep_values[-1]
    else:
        a, kw = ser.deserialize_inline(blob)
    if dep_values:
        for i, v in enumerate(a):
            if type(v) is Dep:
                a[i] = dep_values[v.i]
        for k, v in kw.items():
            if type(v) is Dep:
                kw[k] = dep_values[v.i]
    return a, kw

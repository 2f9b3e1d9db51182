"""``@remote`` functions: options, ``.remote()`` and ``.options()``, as in Ray."""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import Any

from nbcluster.runtime import serialization as ser
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.gpus import check_amount
from nbcluster.runtime.placement import encode_strategy
from nbcluster.runtime.resources import task_resources
from nbcluster.runtime.task_spec import FunctionDescriptor

TASK_OPTIONS = frozenset(
    {
        "num_cpus", "num_gpus", "resources", "num_returns", "max_retries", "retry_exceptions",
        "name", "memory", "scheduling_strategy", "runtime_env",
    }
)  # fmt: skip


def validate_options(opts: dict[str, Any], allowed: frozenset[str]) -> None:
    for k in opts:
        if k not in allowed:
            raise ValueError(f"Invalid option {k!r}; valid options are {sorted(allowed)}")
    nr = opts.get("num_returns")
    if nr is not None and (not isinstance(nr, int) or nr < 0):
        raise ValueError(f"num_returns must be a non-negative int, got {nr!r}")
    for k in ("num_cpus", "num_gpus"):
        v = opts.get(k)
        if v is not None and (not isinstance(v, (int, float)) or v < 0):
            raise ValueError(f"{k} must be a non-negative number, got {v!r}")
    if opts.get("num_gpus") is not None:
        check_amount(opts["num_gpus"])


class Exportable:
    """Remote functions and actor classes travel inside tasks (a task may call or create
    them); the lock guarding their one-time export does not travel."""

    _lock: threading.Lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


class RemoteFunction(Exportable):
    """A function that runs as a task on the cluster: ``f.remote(...)`` returns ObjectRefs."""

    def __init__(self, fn: Any, options: dict[str, Any]) -> None:
        validate_options(options, TASK_OPTIONS)
        self._function = fn
        self._options = options
        self._descriptor: FunctionDescriptor | None = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)
        self._prepare()

    def _prepare(self) -> None:
        o = self._options
        self._num_returns = 1 if o.get("num_returns") is None else o["num_returns"]
        self._resources = task_resources(o.get("num_cpus"), o.get("num_gpus"), o.get("resources"))
        mr = o.get("max_retries")
        self._max_retries = CONFIG.task_max_retries if mr is None else mr
        self._retry_exceptions = o.get("retry_exceptions", False)
        self._name = str(o.get("name") or getattr(self._function, "__qualname__", "function"))
        self._strategy = encode_strategy(o.get("scheduling_strategy"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote functions cannot be called directly. Use {self._name}.remote() instead."
        )

    def descriptor(self) -> FunctionDescriptor:
        """Pickle the function once, at first use (as Ray exports it)."""
        d = self._descriptor
        if d is None:
            with self._lock:
                if self._descriptor is None:
                    data = ser.dumps_function(self._function)
                    fid = hashlib.blake2b(data, digest_size=16).digest()
                    self._descriptor = FunctionDescriptor(fid, data, self._name)
                d = self._descriptor
        return d

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        from nbcluster.runtime.api import core_for_submit

        refs = core_for_submit().submitter.submit_task(
            self.descriptor(), args, kwargs, self._num_returns, self._resources,
            self._max_retries, self._retry_exceptions, self._strategy,
        )  # fmt: skip
        if self._num_returns == 1:
            return refs[0]
        if self._num_returns == 0:
            return None
        return refs

    def options(self, **opts: Any) -> RemoteFunction:
        validate_options(opts, TASK_OPTIONS)
        new = RemoteFunction.__new__(RemoteFunction)
        new.__dict__.update(self.__dict__)
        new._options = {**self._options, **opts}
        new._prepare()
        return new

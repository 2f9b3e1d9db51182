"""``@remote`` functions: options, ``.remote()`` and ``.options()``, as in Ray."""

from __future__ import annotations

import functools
import hashlib
import threading
from typing import Any

from nbcluster.runtime.api import job_scope, runtime_env
from nbcluster.runtime.api.options import TASK, check_num_returns, default_num_returns, validate
from nbcluster.runtime.api.signatures import Binder, params_of
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.scheduling.bundles import apply_strategy
from nbcluster.runtime.scheduling.placement import encode_strategy
from nbcluster.runtime.scheduling.resources import task_resources
from nbcluster.runtime.submit.task_spec import FunctionDescriptor


def check_function_size(desc: FunctionDescriptor, what: str = "remote function") -> None:
    """Refuse a function (or actor class) whose pickle is too large to ship, naming its size,
    as Ray does: it is almost always a closure capturing a large value by accident."""
    size = len(desc.fn_bytes)
    limit = CONFIG.function_size_error_bytes
    if size > limit:
        raise ValueError(
            f"The {what} {desc.name} is too large ({size / 2**20:.1f} MiB > "
            f"NBCLUSTER_FUNCTION_SIZE_ERROR_BYTES={limit / 2**20:.1f} MiB). Check that its "
            "definition is not implicitly capturing a large array or other object in scope. "
            "Tip: use nbcluster.put() to put large objects in the object store and pass the "
            "ObjectRef instead."
        )


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
        validate(options, TASK, "remote functions")
        self._function = fn
        self._options = options
        self._descriptor: FunctionDescriptor | None = None
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)
        self._prepare()

    def _prepare(self) -> None:
        o = self._options
        check_num_returns(o.get("num_returns"), self._function)
        self._num_returns = default_num_returns(o.get("num_returns"), self._function)
        self._resources, strategy = apply_strategy(
            task_resources(o.get("num_cpus"), o.get("num_gpus"), o.get("resources")),
            o.get("scheduling_strategy"),
            str(o.get("name") or getattr(self._function, "__qualname__", "function")),
        )
        self._binder = Binder(
            str(o.get("name") or getattr(self._function, "__qualname__", "function")),
            params_of(self._function),
        )
        self._max_calls = int(o.get("max_calls") or 0)
        mr = o.get("max_retries")
        self._max_retries = CONFIG.task_max_retries if mr is None else mr
        self._retry_exceptions = o.get("retry_exceptions", False)
        self._name = str(o.get("name") or getattr(self._function, "__qualname__", "function"))
        self._strategy = encode_strategy(strategy)
        self._runtime_env = runtime_env.normalize(o.get("runtime_env"))

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
                    desc = FunctionDescriptor(fid, data, self._name)
                    check_function_size(desc)
                    self._descriptor = desc
                d = self._descriptor
        return d

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        from nbcluster.runtime.api.session import core_for_submit

        self._binder.check(args, kwargs)
        core = core_for_submit()
        refs = core.submitter.submit_task(
            self.descriptor(), args, kwargs, self._num_returns, self._resources,
            self._max_retries, self._retry_exceptions, self._strategy, self._max_calls,
            job_scope.env_for_submit(core, self._runtime_env), job_scope.namespace(core),
        )  # fmt: skip
        if self._num_returns in (1, "dynamic", "streaming"):
            return refs[0]
        if self._num_returns == 0:
            return None
        return refs

    def options(self, **opts: Any) -> RemoteFunction:
        validate(opts, TASK, "remote functions", in_options=True)
        new = RemoteFunction.__new__(RemoteFunction)
        new.__dict__.update(self.__dict__)
        new._options = {**self._options, **opts}
        new._prepare()
        return new

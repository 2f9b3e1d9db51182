"""What work inherits from the job it belongs to: its ``runtime_env`` and its namespace.

A driver's come from ``init(runtime_env=..., namespace=...)``. A task or an actor carries
its own (``extra["env"]``, ``extra["ns"]``: the executor keeps them on its TaskContext, an
actor for life), so work it submits in turn runs in the same environment and looks named
actors up in the same namespace, as in Ray.
"""

from __future__ import annotations

from typing import Any

from nbcluster.runtime.api import runtime_env

#: The names named actors live under when no namespace was given (the head's default).
DEFAULT_NAMESPACE = "default"

_env: dict[str, Any] | None = None
_namespace: str | None = None


def check(env: Any, namespace: Any) -> dict[str, Any]:
    """``init``'s ``runtime_env`` and ``namespace``, checked (errors say what is wrong): the
    ones given, by name."""
    given: dict[str, Any] = {}
    if namespace is not None:
        if not isinstance(namespace, str):
            raise TypeError("namespace must be None or a string.")
        if namespace == "":
            raise ValueError('"" is not a valid namespace. Pass None to not specify a namespace.')
        given["namespace"] = namespace
    if env is not None:
        given["env"] = runtime_env.normalize(env)
    return given


def set_job(given: dict[str, Any] | None) -> None:
    """Make the parts ``given`` (from ``check``) the driver's, keeping the others; None
    forgets both (at ``shutdown``)."""
    global _env, _namespace
    if given is None:
        _env, _namespace = None, None
        return
    _env = given.get("env", _env)
    _namespace = given.get("namespace", _namespace)


def _scope(core: Any) -> Any:
    """The running task's context (or the actor's host), or None in a driver."""
    t = core.current_task
    if t is not None:
        return t
    executor = core.executor
    if executor is not None and executor.actor_host.actor_id is not None:
        return executor.actor_host
    return None


def inherited_env(core: Any) -> dict[str, Any] | None:
    scope = _scope(core)
    return _env if scope is None else scope.env


def namespace(core: Any) -> str | None:
    """The namespace named actors are created in and looked up in; None: the default."""
    scope = _scope(core)
    return _namespace if scope is None else scope.namespace


def env_for_submit(core: Any, own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The environment of a task or an actor submitted now: its own over the inherited one."""
    parent = inherited_env(core)
    return runtime_env.merge(parent, own) if parent or own else None

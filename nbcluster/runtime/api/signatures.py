"""Calls are checked against the callee's signature at ``.remote()``, as Ray does.

A wrong call (a missing argument, one too many, an unknown keyword) raises ``TypeError`` in
the caller, where the mistake is, instead of failing later in a worker. Signatures travel
with actor handles in a plain form (``params``: ``[[name, kind, has_default], ...]``), so a
handle found with ``get_actor`` checks calls too.
"""

from __future__ import annotations

import inspect
from typing import Any

#: A parameter's wire form: [name, inspect.Parameter kind as an int, has a default]
Params = list[list[Any]]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_DEFAULT = object()


def params_of(fn: Any, skip_first: bool = False) -> Params | None:
    """The wire form of ``fn``'s parameters (without the first, ``self``, if asked); None
    when it has no signature Python can tell (some builtins), and then nothing is checked."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [[p.name, int(p.kind), p.default is not p.empty] for p in sig.parameters.values()]
    return params[1:] if skip_first and params else params


def method_params(cls: type, name: str) -> Params | None:
    """The parameters of method ``name`` as callers of an actor of ``cls`` pass them."""
    static = inspect.getattr_static(cls, name, None)
    fn = getattr(cls, name)
    if isinstance(static, (staticmethod, classmethod)):
        return params_of(fn)  # a classmethod is bound to the class already
    return params_of(fn, skip_first=True)


class Binder:
    """Checks ``(args, kwargs)`` against one signature; nearly free for the common case
    of positional arguments to a function without defaults or ``*args``."""

    __slots__ = ("_n", "_sig", "name")

    def __init__(self, name: str, params: Params | None) -> None:
        self.name = name
        self._n: int | None = None
        self._sig: inspect.Signature | None = None
        if params is None:
            return
        kinds = [inspect._ParameterKind(kind) for _, kind, _ in params]
        self._sig = inspect.Signature(
            [inspect.Parameter(n, k, default=_DEFAULT if d else inspect.Parameter.empty)
             for (n, _, d), k in zip(params, kinds, strict=True)]
        )  # fmt: skip
        if all(k in _POSITIONAL for k in kinds) and not any(d for _, _, d in params):
            self._n = len(params)

    def check(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._sig is None or (self._n is not None and not kwargs and len(args) == self._n):
            return
        try:
            self._sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.name}() {e}") from None

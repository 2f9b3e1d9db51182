"""The remote half of ``%%remote``: run a cell body on a worker, return what it bound.

This module is imported by workers, so it depends on nothing but the standard library and
cloudpickle (never IPython). The body is compiled under the filename the kernel registered
for it, padded so its line numbers are the cell's: a remote traceback then points at lines
the kernel can show from its own ``linecache``.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from typing import Any

import cloudpickle


@dataclass(frozen=True)
class CellResult:
    """What a cell body left behind: the names it bound and the value of its last expression."""

    values: dict[str, Any]
    value: Any
    #: Names the body bound that cannot be pickled, so they stay on the worker.
    dropped: tuple[str, ...]


def new_namespace() -> dict[str, Any]:
    # "__main__" so that functions and classes the body defines travel by value, as a
    # notebook's own do.
    return {"__name__": "__main__", "__builtins__": builtins}


def execute(ns: dict[str, Any], source: str, filename: str, has_value: bool) -> Any:
    """Run ``source`` in ``ns``; return the value of its last expression if ``has_value``."""
    tree = ast.parse(source, filename)
    last = tree.body.pop() if has_value else None
    exec(compile(tree, filename, "exec"), ns)
    if isinstance(last, ast.Expr):
        return eval(compile(ast.Expression(last.value), filename, "eval"), ns)
    return None


def collect(ns: dict[str, Any], names: list[str]) -> CellResult:
    """The bound values among ``names`` that can travel back (names never bound are skipped)."""
    values: dict[str, Any] = {}
    dropped: list[str] = []
    for name in names:
        if name not in ns:
            continue
        if picklable(ns[name]):
            values[name] = ns[name]
        else:
            dropped.append(name)
    return CellResult(values, None, tuple(dropped))


def picklable(value: Any) -> bool:
    """Whether ``value`` can be sent; large buffers are not copied to find out."""
    try:
        cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _buf: None)
    except Exception:
        return False
    return True


def run_cell(
    source: str, filename: str, inputs: dict[str, Any], names: list[str], has_value: bool
) -> CellResult:
    """The task ``%%remote`` submits: a fresh namespace seeded with the notebook's values."""
    ns = new_namespace()
    ns.update(inputs)
    value = execute(ns, source, filename, has_value)
    result = collect(ns, names)
    return CellResult(result.values, value, result.dropped)


def run_cell_async(
    source: str, filename: str, inputs: dict[str, Any], names: list[str], has_value: bool
) -> Any:
    """``%%remote --async``: one return value per name (then the expression's value), so each
    name can be bound to its own ObjectRef before the cell has run."""
    ns = new_namespace()
    ns.update(inputs)
    value = execute(ns, source, filename, has_value)
    return _as_returns(ns, names, value, has_value)


def _as_returns(ns: dict[str, Any], names: list[str], value: Any, has_value: bool) -> Any:
    missing = [n for n in names if n not in ns]
    if missing:
        raise NameError(
            f"the cell did not bind {', '.join(missing)}; choose what comes back with --out"
        )
    returns = [ns[n] for n in names] + ([value] if has_value else [])
    if len(returns) == 1:
        return returns[0]
    return tuple(returns) if returns else None


class CellNamespace:
    """``%%remote --actor NAME``: a remote REPL whose namespace outlives each cell.

    The notebook's values the body reads are bound in first, as for ``%%remote``; what the
    body assigns stays here (``--out`` brings names back).
    """

    def __init__(self) -> None:
        self._ns = new_namespace()

    def run(
        self, source: str, filename: str, inputs: dict[str, Any], names: list[str], has_value: bool
    ) -> CellResult:
        self._ns.update(inputs)
        value = execute(self._ns, source, filename, has_value)
        result = collect(self._ns, names)
        return CellResult(result.values, value, result.dropped)

    def run_async(
        self, source: str, filename: str, inputs: dict[str, Any], names: list[str], has_value: bool
    ) -> Any:
        self._ns.update(inputs)
        value = execute(self._ns, source, filename, has_value)
        return _as_returns(self._ns, names, value, has_value)

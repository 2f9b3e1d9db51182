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


def picklable(value: Any) -> bool:
    """Whether ``value`` can be sent; large buffers are not copied to find out."""
    try:
        cloudpickle.dumps(value, protocol=5, buffer_callback=lambda _buf: None)
    except Exception:
        return False
    return True


def run_in(
    ns: dict[str, Any],
    source: str,
    filename: str,
    inputs: dict[str, Any],
    names: list[str],
    has_value: bool,
) -> CellResult:
    """Bind ``inputs`` in ``ns``, run the body, and collect the ``names`` it bound that can
    travel back (names it never bound are skipped)."""
    ns.update(inputs)
    value = execute(ns, source, filename, has_value)
    values: dict[str, Any] = {}
    dropped: list[str] = []
    for name in names:
        if name in ns:
            if picklable(ns[name]):
                values[name] = ns[name]
            else:
                dropped.append(name)
    return CellResult(values, value, tuple(dropped))


def returns_in(
    ns: dict[str, Any],
    source: str,
    filename: str,
    inputs: dict[str, Any],
    names: list[str],
    has_value: bool,
) -> Any:
    """``--async``: one return value per name (then the expression's value), so each name
    can be bound to its own ObjectRef before the cell has run."""
    ns.update(inputs)
    value = execute(ns, source, filename, has_value)
    missing = [n for n in names if n not in ns]
    if missing:
        raise NameError(
            f"the cell did not bind {', '.join(missing)}; choose what comes back with --out"
        )
    returns = [ns[n] for n in names] + ([value] if has_value else [])
    if len(returns) == 1:
        return returns[0]
    return tuple(returns) if returns else None


def run_cell(*args: Any) -> CellResult:
    """The task ``%%remote`` submits: the body in a fresh namespace (see ``run_in``)."""
    return run_in(new_namespace(), *args)


def run_cell_async(*args: Any) -> Any:
    """The task ``%%remote --async`` submits (see ``returns_in``)."""
    return returns_in(new_namespace(), *args)


class CellNamespace:
    """``%%remote --actor NAME``: a remote REPL whose namespace outlives each cell.

    The notebook's values the body reads are bound in first, as for ``%%remote``; what the
    body assigns stays here (``--out`` brings names back).
    """

    def __init__(self) -> None:
        self._ns = new_namespace()

    def run(self, *args: Any) -> CellResult:
        return run_in(self._ns, *args)

    def run_async(self, *args: Any) -> Any:
        return returns_in(self._ns, *args)

"""What a ``%%remote`` cell body reads from the notebook and what it binds there.

A cell body runs remotely in a fresh namespace, so the kernel must send the notebook values
it reads and bring back the names it assigns, to leave the notebook as if the cell had run
locally. Python's own ``symtable`` gives the scopes exactly (a name read inside a function
the cell defines is a read of the notebook's global too); ``ast`` fills in the two reads
``symtable`` does not flag (``x += 1`` and ``del x``) and finds the last expression, whose
value is displayed like a normal cell's.
"""

from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass


@dataclass(frozen=True)
class CellCode:
    """A parsed cell body: its source and filename, and the names it exchanges."""

    source: str
    filename: str
    #: Global names the body may read (a superset: sending an unused value is harmless).
    reads: frozenset[str]
    #: Global names the body may bind, in order of first appearance.
    assigns: tuple[str, ...]
    #: The body ends in an expression whose value the cell displays (no trailing ``;``).
    has_value: bool


def analyze(source: str, filename: str = "<remote-cell>") -> CellCode:
    """Parse ``source`` (raising ``SyntaxError`` here, not on the cluster) and find its names."""
    tree = ast.parse(source, filename)
    table = symtable.symtable(source, filename, "exec")
    reads: set[str] = set()
    assigns: dict[str, None] = {}  # an ordered set
    for sym in table.get_symbols():
        name = sym.get_name()
        if sym.is_referenced():
            reads.add(name)
        if sym.is_assigned() or sym.is_imported():
            assigns[name] = None
    _collect_nested(table, reads, assigns)
    for node in ast.walk(tree):
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            reads.add(node.target.id)
        elif isinstance(node, ast.Delete):
            reads.update(t.id for t in node.targets if isinstance(t, ast.Name))
    has_value = (
        bool(tree.body)
        and isinstance(tree.body[-1], ast.Expr)
        and not source.rstrip().endswith(";")
    )
    return CellCode(source, filename, frozenset(reads), tuple(assigns), has_value)


def _collect_nested(table: symtable.SymbolTable, reads: set[str], assigns: dict[str, None]) -> None:
    """Globals read or (with ``global x``) bound by functions, classes and comprehensions."""
    for child in table.get_children():
        for sym in child.get_symbols():
            if not sym.is_global():
                continue
            if sym.is_referenced():
                reads.add(sym.get_name())
            if sym.is_declared_global() and sym.is_assigned():
                assigns[sym.get_name()] = None
        _collect_nested(child, reads, assigns)

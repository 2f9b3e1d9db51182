"""The runtime's subpackages depend one way, so the folder tree reads as the architecture.

``docs/architecture.md`` describes the layers in ``LAYERS``. Every import between two
subpackages of ``nbcluster.runtime`` counts, function-local ones included; imports under
``TYPE_CHECKING`` do not (they never run). An import from a lower layer to a higher one
fails this test unless ``ALLOWED`` lists it with the reason.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "nbcluster" / "runtime"

#: The subpackages, lowest first: each imports only from those before it (and from the base
#: modules at ``runtime/``: config, ids, events).
LAYERS = ["wire", "objects", "ownership", "scheduling", "core", "submit", "execute", "control",
          "observe", "node", "api"]  # fmt: skip

#: (importer module, imported module) pairs allowed to close a cycle, and why.
ALLOWED = {
    # A process's core worker builds its task submitter and routes replies to it: the one
    # place the core reaches up; the submitter uses the core, not the other way round.
    ("core.core_worker", "submit.submitter"),
}


def _module(path: Path) -> str:
    rel = path.relative_to(RUNTIME).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _package(module: str) -> str | None:
    """The subpackage of a runtime module; None for the base modules at ``runtime/``."""
    return module.split(".", maxsplit=1)[0] if "." in module else None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(importer package, imported package) -> the module pairs behind that edge."""
    modules = {_module(p): p for p in RUNTIME.rglob("*.py")}
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                names = [a.name for a in node.names]
            for name in names:
                if not name.startswith("nbcluster.runtime."):
                    continue
                target = name.removeprefix("nbcluster.runtime.")
                if target not in modules:
                    continue
                a, b = _package(mod), _package(target)
                if a and b and a != b:
                    edges[a, b].add((mod, target))
                break  # ``from pkg import mod``: the module, not also its package
    return edges


def test_subpackages_import_only_lower_layers() -> None:
    upward = {
        (a, b): sorted(pairs - ALLOWED)
        for (a, b), pairs in imports().items()
        if LAYERS.index(b) > LAYERS.index(a) and pairs - ALLOWED
    }
    assert not upward, f"imports from a lower layer to a higher one: {upward}"


def test_every_subpackage_has_a_layer() -> None:
    found = {p.name for p in RUNTIME.iterdir() if (p / "__init__.py").exists()}
    assert found == set(LAYERS)


def test_allowed_exceptions_are_still_needed() -> None:
    """An exception that no import uses any more is taken off the list."""
    used = set().union(*imports().values())
    assert used >= ALLOWED, ALLOWED - used

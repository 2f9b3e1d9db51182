"""``%cluster``: the notebook's cluster, seen and handled from the notebook.

``%cluster`` (or ``%cluster status``) shows the address, how to attach from a terminal or
another Python process, the nodes and what they use; ``%cluster help`` lists the
subcommands. Each subcommand is a function registered with ``@subcommand``, so other parts
of nbcluster add theirs (``%cluster add`` ...) without touching this module::

    @subcommand("add", "attach nodes: %cluster add N [--backend ssh] ...")
    def _add(shell, args: str) -> Any: ...

The function gets the shell and the rest of the line, and what it returns is the cell's
value (displayed as ``Out[n]``, like any magic's); a ``UsageError`` it raises is shown as a
one-line usage error.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

import nbcluster as nc


@dataclass(frozen=True)
class Subcommand:
    name: str
    run: Callable[[Any, str], Any]
    help: str


#: The subcommands of ``%cluster``, by name.
SUBCOMMANDS: dict[str, Subcommand] = {}
DEFAULT = "status"


def subcommand(name: str, help: str) -> Callable[[Callable[[Any, str], Any]], Any]:
    """Register ``fn(shell, args)`` as ``%cluster NAME ARGS`` (a later one replaces it)."""

    def register(fn: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        SUBCOMMANDS[name] = Subcommand(name, fn, help)
        return fn

    return register


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["%cluster SUBCOMMAND [ARGS]   (no subcommand: %cluster status)"]
    lines += [f"  {s.name:<{width}}  {s.help}" for s in sorted(SUBCOMMANDS.values(),
                                                             key=lambda s: s.name)]  # fmt: skip
    return "\n".join(lines)


@magics_class
class ClusterMagics(Magics):
    """``%cluster [SUBCOMMAND] [ARGS]``."""

    @line_magic
    def cluster(self, line: str) -> Any:
        """The notebook's cluster: ``%cluster status``, ``%cluster help``, ..."""
        name, _, rest = line.strip().partition(" ")
        name = name or DEFAULT
        if name in ("help", "-h", "--help"):
            print(usage())
            return None
        sub = SUBCOMMANDS.get(name)
        if sub is None:
            raise UsageError(f"%cluster has no subcommand {name!r}\n{usage()}")
        return sub.run(self.shell, rest.strip())


def connected_info() -> Any:
    """The cluster this kernel is connected to; a usage error when there is none."""
    if not nc.is_initialized():
        raise UsageError("no cluster yet: nbcluster.init() starts one (or attaches to one)")
    return nc.init()  # connected: returns the cluster's information, changes nothing


@subcommand("status", "address, how to attach from a terminal, nodes and resource use")
def _status(shell: Any, args: str) -> None:
    if shlex.split(args):
        raise UsageError(f"%cluster status takes no arguments, got {args!r}")
    from IPython.display import display

    from nbcluster.status_report import status_text

    display(connected_info())
    print(status_text())

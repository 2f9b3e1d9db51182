"""``%cluster``: grow, watch and shrink the cluster from a notebook line.

``%cluster add 2 --backend slurm --cpus 8 --walltime 1:00:00`` starts a node group (and
returns it, so ``g = %cluster add ...`` works), ``%cluster status`` shows the nodes and the
groups, ``%cluster remove GROUP`` drains a group and cancels its jobs. Each is a thin layer
over ``nc.cluster``: the groups are the same objects the code API returns.

Subcommands live in a registry (``register``), so other parts of nbcluster can add theirs.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from nbcluster.kernel.magics import _resources

#: name -> (handler taking the subcommand's arguments, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], Any], str]] = {}


def register(name: str, help: str) -> Callable[[Callable[[list[str]], Any]], Any]:
    """Decorator: ``fn(args)`` answers ``%cluster NAME ARGS...``."""

    def wrap(fn: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
        SUBCOMMANDS[name] = (fn, help)
        return fn

    return wrap


class _Parser(argparse.ArgumentParser):
    """argparse that raises a UsageError (shown in the cell) instead of exiting."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        if message:
            print(message)
        raise UsageError(f"{self.prog}: see the usage above") if status else _Done()


class _Done(Exception):
    """``--help`` was printed; nothing else to do."""


def _add_parser() -> _Parser:
    p = _Parser(prog="%cluster add", description="Start worker nodes with a backend.")
    p.add_argument("count", type=int, nargs="?", help="how many nodes (ssh: one per host)")
    p.add_argument("--backend", default="local", help="local, ssh, slurm, kubernetes, ...")
    p.add_argument("--cpus", type=float, help="CPUs per node")
    p.add_argument("--gpus", type=float, help="GPUs per node")
    p.add_argument("--memory", help="memory per node for the scheduler, e.g. 16G")
    p.add_argument("--resources", type=_resources, help="custom resources, k=v,...")
    p.add_argument("--walltime", help="time limit, e.g. 1:00:00")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--hosts", help="ssh hosts, comma-separated")
    p.add_argument("--python", help="the Python on the nodes (default: this kernel's path)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="another backend option (repeatable)")  # fmt: skip
    p.add_argument("--wait", type=float, metavar="SECONDS", help="wait for the nodes to join")
    return p


def _options(args: Any) -> dict[str, Any]:
    """``add_nodes`` keywords from the parsed ``%cluster add``-style arguments."""
    options: dict[str, Any] = {
        k: getattr(args, k)
        for k in ("cpus", "gpus", "memory", "resources", "walltime", "partition", "python")
        if getattr(args, k) is not None
    }
    if args.hosts:
        options["hosts"] = [h.strip() for h in args.hosts.split(",") if h.strip()]
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--option expects KEY=VALUE, got {item!r}")
        options[key.strip()] = value
    return options


@register("add", "start worker nodes: %cluster add N --backend B [--cpus C ...]")
def add(argv: list[str]) -> Any:
    import nbcluster as nc

    args = _add_parser().parse_args(argv)
    options = _options(args)
    group = nc.cluster.add_nodes(args.count, backend=args.backend, **options)
    print(f"started node group {group.id}: {group.count} {args.backend} node(s)")
    if args.wait is not None:
        group.wait(timeout=args.wait)
        print(f"node group {group.id}: all {group.count} node(s) joined")
    return group


@register("adapt", "follow demand: %cluster adapt --minimum 0 --maximum 8 --backend B ...")
def adapt(argv: list[str]) -> Any:
    import nbcluster as nc

    p = _add_parser()
    p.prog, p.description = "%cluster adapt", "Add nodes while work waits, remove idle ones."
    p.add_argument("--minimum", type=int, default=0)
    p.add_argument("--maximum", type=int, default=10)
    p.add_argument("--idle-timeout", type=float, default=60.0, help="seconds idle before removal")
    p.add_argument("--stop", action="store_true", help="stop adapting")
    args = p.parse_args(argv)
    if args.stop:
        from nbcluster.cluster.adapt import stop

        stop()
        print("stopped adapting")
        return None
    options = _options(args)
    adaptive = nc.cluster.adapt(args.minimum, args.maximum, backend=args.backend,
                                idle_timeout=args.idle_timeout, **options)  # fmt: skip
    print(f"adapting between {args.minimum} and {args.maximum} {args.backend} node(s)")
    return adaptive


@register("status", "address, how to attach from a terminal, nodes, groups and use")
def status(argv: list[str]) -> None:
    import nbcluster as nc
    from nbcluster.cluster.manager import group_of
    from nbcluster.status_report import usage_text

    if argv:
        raise UsageError("%cluster status takes no arguments")
    if not nc.is_initialized():
        raise UsageError("no cluster yet: nbcluster.init() starts one (or attaches to one)")
    from IPython.display import display

    display(nc.init())  # connected: the cluster's address and how to attach; changes nothing
    nodes = nc.nodes()
    alive = [n for n in nodes if n["Alive"]]
    print(f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead")
    rows = [["NODE", "ADDRESS", "GROUP", "RESOURCES"]]
    for n in alive:
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(n["Resources"].items()))
        rows.append([n["NodeID"][:12], n["Address"], group_of(n) or "-", res])
    _table(rows)
    groups = nc.cluster.status()
    if groups:
        print("Node groups:")
        cols = ("group", "backend", "state", "nodes", "jobs")
        _table([[c.upper() for c in cols]] + [[str(g[c]) for c in cols] for g in groups])
    print(usage_text())


@register("remove", "drain a node group, then cancel its jobs: %cluster remove GROUP")
def remove(argv: list[str]) -> None:
    import nbcluster as nc

    p = _Parser(prog="%cluster remove", description="Drain a node group, then end its jobs.")
    p.add_argument("group", nargs="+", help="group id(s), as %cluster status shows them")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to let work end")
    args = p.parse_args(argv)
    for gid in args.group:
        try:
            group = nc.cluster.get_group(gid)
        except KeyError as e:
            raise UsageError(str(e.args[0])) from None
        group.remove(drain_timeout=args.drain_timeout)
        print(f"removed node group {gid}")


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@magics_class
class ClusterMagics(Magics):
    @line_magic
    def cluster(self, line: str) -> Any:
        """``%cluster SUBCOMMAND ...``: add, status, remove (``%cluster help`` lists them)."""
        argv = shlex.split(line)
        if not argv or argv[0] in ("help", "-h", "--help"):
            print("%cluster subcommands:")
            for name, (_, text) in sorted(SUBCOMMANDS.items()):
                print(f"  {name:<8} {text}")
            return None
        entry = SUBCOMMANDS.get(argv[0])
        if entry is None:
            raise UsageError(
                f"unknown %cluster subcommand {argv[0]!r}; try: {', '.join(sorted(SUBCOMMANDS))}"
            )
        try:
            return entry[0](argv[1:])
        except _Done:
            return None

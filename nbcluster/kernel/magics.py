"""``%%remote``: a cell that runs on the cluster and leaves the notebook as if it ran here.

The body is analysed in the kernel (``cell_code``), the notebook values it reads are sent
with it, it runs as a task (``cell_task.run_cell``), and the names it binds come back into
the notebook; the value of its last expression is the cell's result. ``--actor NAME`` runs
it in a named actor's namespace instead, a remote REPL whose state outlives the cell.
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

import nbcluster as nc
from nbcluster.kernel import cell_task
from nbcluster.kernel.cell_code import CellCode, analyze
from nbcluster.kernel.cell_number import cell_number
from nbcluster.kernel.routing import plain_submissions
from nbcluster.runtime.core import long_wait


def _resources(text: str) -> dict[str, float]:
    """``k=v,k2=v2`` -> ``{"k": v, "k2": v2}``."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise UsageError(f"--resources expects k=v,... with numbers, got {item!r}")
    return out


def _resource_options(args: Any) -> dict[str, Any]:
    """The ``--num-cpus``/``--num-gpus``/``--resources`` the user gave, as ``remote`` options."""
    given = {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus, "resources": args.resources}
    return {k: v for k, v in given.items() if v is not None}


def _names(text: str) -> list[str]:
    names = [n for n in (part.strip() for part in text.replace(",", " ").split()) if n]
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise UsageError(f"--out expects variable names, got {', '.join(bad)}")
    return names


@magics_class
class RemoteMagics(Magics):
    """``%%remote`` and ``%remote_actors``."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        #: The REPL actors this notebook created, by name.
        self.actors: dict[str, Any] = {}

    @property
    def _shell(self) -> Any:
        assert self.shell is not None, "magics are registered with a shell"
        return self.shell

    @magic_arguments()
    @argument("--num-cpus", type=float, default=None, help="CPUs the task needs (default 1).")
    @argument("--num-gpus", type=float, default=None, help="GPUs the task needs.")
    @argument("--resources", type=_resources, default=None, help="Custom resources, k=v,...")
    @argument("--name", default=None, help="The task's name (default: the cell, In[n]).")
    @argument(
        "--async",
        dest="is_async",
        action="store_true",
        help="Return at once: the names the cell binds become ObjectRefs.",
    )
    @argument("--out", type=_names, default=None, help="Only these names come back: a,b,...")
    @argument(
        "--actor",
        default=None,
        metavar="NAME",
        help="Run in the named actor's namespace (created on first use); state persists.",
    )
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run the cell's body as a task on the cluster.

        The body reads the notebook's variables; the names it assigns come back (or, with
        ``--actor``, stay in the actor unless ``--out`` names them); its last expression's
        value is displayed.
        """
        args = parse_argstring(self.remote, line)
        code = self._analyze(cell)
        if code is None:
            return None
        inputs = self._inputs(code)
        resources = _resource_options(args)
        name = args.name or f"In[{cell_number(self._shell)}]"
        if args.actor:  # named for the cell too: its errors say In[n], not CellNamespace.run
            names = args.out or []
            actor = self._actor(args.actor, resources)
            run = (actor.run_async if args.is_async else actor.run).options(name=name)
        else:
            names = args.out if args.out is not None else list(code.assigns)
            fn = cell_task.run_cell_async if args.is_async else cell_task.run_cell
            run = nc.remote(name=name, **resources)(fn)
        payload = (code.source, code.filename, inputs, names, code.has_value)
        if args.is_async:
            returns = max(1, len(names) + code.has_value)
            with plain_submissions():
                refs = run.options(num_returns=returns).remote(*payload)
            return self._bind_refs(names, code.has_value, refs if returns > 1 else [refs])
        with plain_submissions():
            ref = run.remote(*payload)
        with long_wait.watching("get", [ref], min_refs=1):  # progress if the cell runs long
            result = nc.get(ref)
        return self._bring_back(result, code)

    def _actor(self, name: str, resources: dict[str, Any]) -> Any:
        """The named REPL actor, created on first use (or found, if it already exists)."""
        handle = self.actors.get(name)
        if handle is None:
            handle = (
                nc.remote(cell_task.CellNamespace)
                .options(name=name, get_if_exists=True, **resources)
                .remote()
            )
            self.actors[name] = handle
        return handle

    def _analyze(self, cell: str) -> CellCode | None:
        # One blank line stands for the "%%remote" line, so line numbers are the cell's; the
        # padded body is cached under its own name, so the kernel can show remote frames.
        padded = "\n" + cell
        filename = self._shell.compile.cache(padded, cell_number(self._shell))
        try:
            return analyze(padded, filename)
        except SyntaxError:
            self._shell.showsyntaxerror()
            return None

    def _inputs(self, code: CellCode) -> dict[str, Any]:
        """The notebook values the body reads, except ones that cannot be sent."""
        ns = self._shell.user_ns
        hidden = self._shell.user_ns_hidden
        inputs: dict[str, Any] = {}
        unsent = []
        for name in sorted(code.reads):
            if name not in ns or (name in hidden and ns[name] is hidden[name]):
                continue
            if cell_task.picklable(ns[name]):
                inputs[name] = ns[name]
            elif name not in code.assigns:
                unsent.append(name)
        if unsent:
            print(f"%%remote: not sent (cannot be pickled): {', '.join(unsent)}", file=sys.stderr)
        return inputs

    def _bring_back(self, result: cell_task.CellResult, code: CellCode) -> Any:
        self._shell.user_ns.update(result.values)
        if result.dropped:
            print(
                f"%%remote: left on the cluster (cannot be pickled): {', '.join(result.dropped)}",
                file=sys.stderr,
            )
        return result.value if code.has_value else None

    def _bind_refs(self, names: list[str], has_value: bool, refs: list[Any]) -> Any:
        # refs holds one more than names when the last expression has a value
        self._shell.user_ns.update(zip(names, refs, strict=False))
        if has_value:
            return refs[-1]
        return None if names else refs[0]

    @magic_arguments()
    @argument("--kill", default=None, metavar="NAME", help="End the named actor.")
    @line_magic
    def remote_actors(self, line: str) -> None:
        """List the ``%%remote --actor`` namespaces, or end one with ``--kill NAME``."""
        args = parse_argstring(self.remote_actors, line)
        if args.kill:
            handle = self.actors.pop(args.kill, None)
            if handle is None:
                try:
                    handle = nc.get_actor(args.kill)
                except ValueError:
                    raise UsageError(f"no actor named {args.kill!r}") from None
            nc.kill(handle)
            print(f"killed actor {args.kill!r}")
            return
        if not self.actors:
            print("no %%remote actors")
            return
        for name in sorted(self.actors):
            print(name)

"""``python -m nbcluster.kernel``: run the kernel, install its spec, or run a notebook.

    python -m nbcluster.kernel install [--user | --sys-prefix | --prefix DIR]
    python -m nbcluster.kernel run-notebook NOTEBOOK [--output PATH] [--timeout S]
    python -m nbcluster.kernel -f CONNECTION_FILE      the kernel itself (the kernelspec's argv)

``install`` makes Jupyter list the "Python 3 (nbcluster)" kernel (``--user`` for a JupyterLab
in another environment); ``run-notebook`` executes a notebook headless with it and fails
if a cell fails. Each takes ``--help``; ``--help-all`` lists the kernel's own (IPython's)
options.
"""

from __future__ import annotations

import argparse
import sys


def _install(argv: list[str]) -> int:
    from nbcluster.kernel.kernelspec import install

    parser = argparse.ArgumentParser(
        prog="python -m nbcluster.kernel install",
        description="Install the 'nbcluster' kernelspec so Jupyter lists the kernel.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data dir")
    where.add_argument(
        "--sys-prefix", action="store_true", help="into this Python environment (sys.prefix)"
    )
    where.add_argument("--prefix", default=None, help="into PREFIX/share/jupyter/kernels")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    print(f"Installed kernelspec nbcluster in {install(user=args.user, prefix=prefix)}")
    return 0


def _run_notebook(argv: list[str]) -> int:
    from nbcluster.kernel.run_notebook import run_notebook

    parser = argparse.ArgumentParser(
        prog="python -m nbcluster.kernel run-notebook",
        description="Execute a notebook with the nbcluster kernel; fail if a cell errors.",
    )
    parser.add_argument("notebook")
    parser.add_argument(
        "--output", default=None, help="where to write it (default: NAME.executed.ipynb)"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        out = run_notebook(args.notebook, args.output, args.timeout)
    except Exception as e:
        print(f"{args.notebook}: {e}", file=sys.stderr)
        return 1
    print(f"Executed {args.notebook} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"], ["help"]):
        print(__doc__)
        return 0
    if argv[:1] == ["--help-all"]:
        argv = ["--help"]  # IPython's: every option of the kernel application
    if argv[:1] == ["install"]:
        return _install(argv[1:])
    if argv[:1] == ["run-notebook"]:
        return _run_notebook(argv[1:])
    from nbcluster.kernel.app import launch

    launch(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

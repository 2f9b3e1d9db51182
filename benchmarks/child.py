"""Child process: start one framework, run the requested workloads, stream results as JSON.

Started by ``benchmarks/run.py`` as ``python -m benchmarks.child``. Every message is one line
on stdout prefixed with :data:`MARKER` (frameworks may print their own lines too); the parent
reads them as they come so that a workload that hangs or crashes loses only itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from typing import Any

from benchmarks.cross_node import CROSS_NODE_WORKLOADS, open_cluster_session
from benchmarks.frameworks import Session, Unsupported, open_session
from benchmarks.workloads import WORKLOADS, Plan

ALL_WORKLOADS = {**WORKLOADS, **CROSS_NODE_WORKLOADS}

MARKER = "@@nbbench "


def emit(event: str, **fields: Any) -> None:
    print(MARKER + json.dumps({"event": event, **fields}), flush=True)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def run_workload(session: Session, plan: Plan, name: str) -> None:
    try:
        m = ALL_WORKLOADS[name](session, plan)
    except Unsupported as exc:
        emit("result", name=name, skipped=str(exc))
    except Exception as exc:
        traceback.print_exc()
        emit("result", name=name, error=describe(exc))
    else:
        emit("result", name=name, value=m.value, samples=m.samples, extra=m.extra)


def run_cold_start(framework: str, plan: Plan) -> None:
    """Time import + init + first task from this (fresh) interpreter."""
    start = time.perf_counter()
    session = open_session(framework, plan.num_cpus)
    WORKLOADS["cold_start"](session, plan)
    elapsed = time.perf_counter() - start
    emit("ready", version=session.version)
    emit("result", name="cold_start", value=elapsed, samples=[elapsed], extra={})
    session.close()


def run_all(framework: str, plan: Plan, names: list[str], cluster: bool = False) -> None:
    """Run ``names`` on one session: a local cluster, or (``cluster``) a two-node one."""
    try:
        session = (
            open_cluster_session(framework) if cluster else open_session(framework, plan.num_cpus)
        )
    except Unsupported as exc:  # no two-node cluster (Dask): every workload is "n/a"
        emit("ready", version=None)
        for name in names:
            emit("result", name=name, skipped=str(exc))
        return
    emit("ready", version=session.version)
    try:
        for name in names:
            run_workload(session, plan, name)
    finally:
        session.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--framework", required=True)
    parser.add_argument("--workloads", required=True, help="comma separated workload names")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cluster", action="store_true", help="on a two-node cluster")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(quick=args.quick, num_cpus=args.num_cpus)
    names = [n for n in args.workloads.split(",") if n]
    try:
        if names == ["cold_start"]:
            run_cold_start(args.framework, plan)
        else:
            run_all(args.framework, plan, names, args.cluster)
    except Exception as exc:
        traceback.print_exc()
        emit("fatal", error=describe(exc))
        return 1
    emit("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

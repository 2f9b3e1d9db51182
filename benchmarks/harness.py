"""Command line and orchestration: run every framework in its own children, print the table.

Why separate processes: each framework starts daemons, worker pools and background threads
and patches process-global state (signal handlers, logging, serializers, shared memory). Run in
one interpreter they would share CPU, memory and caches and disturb each other's figures, and
an earlier ``init`` would hide the cost of a later one. A fresh child per framework gives each a
clean machine, makes ``cold_start`` real (a new interpreter per measurement), and lets the parent
kill whatever a crashed or hung framework leaves behind without losing the other results.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import catalog, report, snapshot
from benchmarks.frameworks import is_installed
from benchmarks.runner import Limits, Result, run_child

NUM_CPUS = 2
STARTED = time.perf_counter()
LOAD_AT_START = os.getloadavg()[0]


@dataclass
class FrameworkRun:
    """Everything measured on one framework."""

    name: str
    status: str = "ok"
    version: str | None = None
    results: dict[str, Result] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    workloads: list[str]
    frameworks: list[str]
    quick: bool
    json_path: Path | None
    markdown: bool
    num_cpus: int
    limits: Limits
    rev: str | None
    root: Path = snapshot.ROOT


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Compare nbcluster with Ray and Dask on the same workloads.",
    )
    parser.add_argument("--only", help="comma separated workload names (or name prefixes)")
    parser.add_argument(
        "--frameworks",
        default=",".join(catalog.FRAMEWORKS),
        help="comma separated, from: " + ", ".join(catalog.FRAMEWORKS),
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument(
        "--rev", help="measure nbcluster as committed at this git revision, not the working tree"
    )
    parser.add_argument("--num-cpus", type=int, default=NUM_CPUS, help="workers per framework")
    parser.add_argument(
        "--timeout",
        type=float,
        default=Limits.workload_s,
        help="seconds a single workload may take before it is killed",
    )
    args = parser.parse_args(argv)
    requested = {f.strip() for f in args.frameworks.split(",") if f.strip()}
    frameworks = [f for f in catalog.FRAMEWORKS if f in requested]
    unknown = sorted(requested - set(catalog.FRAMEWORKS))
    if unknown:
        parser.error(f"unknown framework(s): {', '.join(unknown)}")
    try:
        workloads = catalog.select(args.only)
    except ValueError as exc:
        parser.error(str(exc))
    return Options(
        workloads,
        frameworks,
        args.quick,
        args.json,
        args.markdown,
        args.num_cpus,
        Limits(workload_s=args.timeout),
        args.rev,
    )


def child_options(opts: Options) -> dict[str, Any]:
    return {
        "quick": opts.quick,
        "num_cpus": opts.num_cpus,
        "limits": opts.limits,
        "root": opts.root,
    }


def progress(framework: str, name: str, result: Result) -> None:
    elapsed = time.perf_counter() - STARTED
    if "value" in result:
        text = f"{report.fmt(result['value'])} {catalog.SPEC_BY_NAME[name].unit}"
    else:
        text = result.get("error") or result.get("skipped") or "?"
    print(f"  [{elapsed:5.0f} s] {framework} {name}: {text}", file=sys.stderr, flush=True)


def run_cold_start(framework: str, opts: Options) -> tuple[Result, str | None]:
    """Median over fresh interpreters, after one discarded warm-up (file caches)."""
    values: list[float] = []
    version = None
    for attempt in range(1 + (2 if opts.quick else 5)):
        out = run_child(framework, ["cold_start"], **child_options(opts))
        result = out.results.get("cold_start")
        if result is None or "value" not in result:
            error = (result or {}).get("error") or out.failure or "no result"
            return {"error": error}, out.version
        version = out.version
        if attempt > 0:
            values.append(result["value"])
    return {"value": statistics.median(values), "samples": values, "extra": {}}, version


def run_framework(framework: str, opts: Options) -> FrameworkRun:
    run = FrameworkRun(framework)
    if not is_installed(framework):
        run.status = "not installed"
        return run
    print(f"{framework}:", file=sys.stderr, flush=True)
    if "cold_start" in opts.workloads:
        run.results["cold_start"], run.version = run_cold_start(framework, opts)
        progress(framework, "cold_start", run.results["cold_start"])
    rest = [n for n in opts.workloads if n != "cold_start"]
    # Cross-node workloads run on a two-node cluster of their own, in a child of their own.
    for cluster in (False, True):
        names = [n for n in rest if catalog.SPEC_BY_NAME[n].cluster == cluster]
        run_group(run, names, opts, cluster)
    return run


def run_group(run: FrameworkRun, pending: list[str], opts: Options, cluster: bool) -> None:
    """Run ``pending`` in children until each has a result (a child that dies or hangs costs
    only the workload it was on)."""
    framework = run.name
    while pending:
        out = run_child(
            framework,
            pending,
            **child_options(opts),
            cluster=cluster,
            on_result=lambda name, result: progress(framework, name, result),
        )
        run.results.update(out.results)
        run.version = run.version or out.version
        pending = [n for n in pending if n not in out.results]
        if not pending:
            break
        failure = out.failure or "no result"
        if not out.ready:
            for name in pending:
                run.results[name] = {"error": f"init failed: {failure}"}
            break
        run.results[pending[0]] = {"error": failure}
        progress(framework, pending[0], run.results[pending[0]])
        pending = pending[1:]


def collect(runs: list[FrameworkRun], workloads: list[str]) -> report.Results:
    return {
        name: {run.name: run.results[name] for run in runs if name in run.results}
        for name in workloads
    }


def document(runs: list[FrameworkRun], results: report.Results, opts: Options) -> dict[str, Any]:
    return {
        "date": datetime.date.today().isoformat(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "workers": opts.num_cpus,
        },
        "quick": opts.quick,
        "load_average": {"start": LOAD_AT_START, "end": os.getloadavg()[0]},
        "nbcluster_revision": snapshot.revision(opts.rev),
        "frameworks": {r.name: {"status": r.status, "version": r.version} for r in runs},
        "results": results,
        "comparison": report.comparison(results),
    }


def warn_if_busy() -> None:
    """Other load on a 2-core machine skews every figure; say so up front."""
    load = LOAD_AT_START
    if load > 0.5:
        print(f"warning: load average is {load:.2f}; figures may be disturbed", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    warn_if_busy()
    with snapshot.source_root(opts.rev) as root:
        opts = dataclasses.replace(opts, root=root)
        runs = [run_framework(fw, opts) for fw in opts.frameworks]
    results = collect(runs, opts.workloads)
    status = {r.name: r.status for r in runs if r.status != "ok"}
    versions = ", ".join(
        f"{r.name} {r.version or (r.status if r.status != 'ok' else '(did not start)')}"
        + (f" @ {snapshot.revision(opts.rev)}" if r.name == "nbcluster" else "")
        for r in runs
    )
    print(f"\n{versions}; {opts.num_cpus} workers each; {'quick' if opts.quick else 'full'} run\n")
    print(report.table(results, opts.frameworks, status))
    if opts.markdown:
        print("\n" + report.markdown(results, opts.frameworks, status))
    if opts.json_path is not None:
        opts.json_path.parent.mkdir(parents=True, exist_ok=True)
        opts.json_path.write_text(json.dumps(document(runs, results, opts), indent=2) + "\n")
        print(f"\nwrote {opts.json_path}")
    return 0

"""What the event stream costs: async task throughput with events on and off.

    python benchmarks/events_overhead.py [--rounds 6] [--bursts 4] [--tasks 10000]

Each run is a fresh driver process and cluster (``nc.init(num_cpus=2)``) that warms up, then
times ``--bursts`` bursts of ``--tasks`` no-op tasks (``get([f.remote() for ...])``, the
``async_throughput`` workload) and measures the CPU time each process spent per task. Runs
alternate between ``NBCLUSTER_EVENTS=0`` and the default, in the opposite order every other
round, so both see the same machine state. The table gives medians over every burst.

On a shared machine the spread between runs is large: read the medians, and compare only
figures from the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import psutil
import nbcluster as nc

def noop():
    return None

bursts, tasks = int(sys.argv[1]), int(sys.argv[2])
nc.init(num_cpus=2)
f = nc.remote(noop)
nc.get([f.remote() for _ in range(3000)])
me = psutil.Process()

def cpu():
    out = {"driver": 0.0, "head": 0.0, "workers": 0.0}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            if p.pid == me.pid:
                kind = "driver"
            elif p.ppid() == me.pid:
                kind = "head"
            else:
                kind = "workers"
            out[kind] += t.user + t.system
        except psutil.Error:
            pass
    return out

rates, cpus = [], []
for _ in range(bursts):
    c0, t0 = cpu(), time.perf_counter()
    nc.get([f.remote() for _ in range(tasks)])
    dt, c1 = time.perf_counter() - t0, cpu()
    rates.append(tasks / dt)
    cpus.append({k: (c1[k] - c0[k]) / tasks * 1e6 for k in c1})
print("RESULT " + json.dumps({"rates": rates, "cpu": cpus}))
nc.shutdown()
"""

MODES = {"events off": "0", "events on": "1"}


def run_once(events: str, bursts: int, tasks: int) -> dict[str, Any] | None:
    env = dict(os.environ, NBCLUSTER_EVENTS=events)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(bursts), str(tasks)],
        capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600, check=False,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    print(f"run failed ({events=}):\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="runs per mode (alternating)")
    parser.add_argument("--bursts", type=int, default=4, help="timed bursts per run")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per burst")
    args = parser.parse_args()
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    cpus: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    order = list(MODES)
    for r in range(args.rounds):
        for mode in order if r % 2 == 0 else order[::-1]:
            got = run_once(MODES[mode], args.bursts, args.tasks)
            if got is not None:
                rates[mode] += got["rates"]
                cpus[mode] += got["cpu"]
                print(f"round {r}: {mode}: {statistics.median(got['rates']):,.0f} tasks/s "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)  # fmt: skip
    base = statistics.median(rates["events off"]) if rates["events off"] else None
    header = ["", "tasks/s (median)", "best", "vs off", "CPU us/task: driver", "head",
              "workers", "total"]  # fmt: skip
    rows = [header]
    for mode in MODES:
        if not rates[mode]:
            rows.append([mode, "failed"] + [""] * 6)
            continue
        med = statistics.median(rates[mode])
        per = {k: statistics.median(c[k] for c in cpus[mode]) for k in ("driver", "head",
                                                                        "workers")}  # fmt: skip
        rows.append([
            mode, f"{med:,.0f}", f"{max(rates[mode]):,.0f}",
            f"{100 * (med / base - 1):+.1f}%" if base else "-",
            f"{per['driver']:.1f}", f"{per['head']:.1f}", f"{per['workers']:.1f}",
            f"{sum(per.values()):.1f}",
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=True))))  # fmt: skip
    print(f"({args.rounds} runs x {args.bursts} bursts x {args.tasks:,} no-op tasks per mode, "
          f"2 CPUs; load average now {os.getloadavg()[0]:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What open widgets cost: async task throughput with a graph and a progress widget open,
versus none.

    python benchmarks/widgets_overhead.py [--rounds 3] [--bursts 3] [--tasks 10000]

Each run is a fresh driver process and cluster (``nc.init(num_cpus=2)``) that warms up, then
times ``--bursts`` bursts of ``--tasks`` no-op tasks (``get([f.remote() for ...])``). With
widgets, ``nc.widgets.graph()`` (every task of the driver: the largest scope) is open for the
whole run and a ``nc.widgets.progress(refs)`` is opened on each burst, so the event feed,
the aggregation and the deltas all run. Outside a kernel the widgets' comm sends nothing,
so the cost of encoding messages for the browser is not in these figures. Runs alternate
between the modes, in the opposite order every other round. Medians over every burst.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
import nbcluster as nc

def noop():
    return None

bursts, tasks, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
nc.init(num_cpus=2)
f = nc.remote(noop)
nc.get([f.remote() for _ in range(3000)])
graph = nc.widgets.graph() if mode == "widgets" else None
rates = []
for _ in range(bursts):
    t0 = time.perf_counter()
    refs = [f.remote() for _ in range(tasks)]
    bar = nc.widgets.progress(refs) if mode == "widgets" else None
    nc.get(refs)
    rates.append(tasks / (time.perf_counter() - t0))
print(json.dumps(rates))
nc.shutdown()
"""


def run(mode: str, bursts: int, tasks: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(bursts), str(tasks), mode], env=env,
                         check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    return list(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10_000)
    a = ap.parse_args()
    got: dict[str, list[float]] = {"none": [], "widgets": []}
    for r in range(a.rounds):
        for mode in ("none", "widgets") if r % 2 == 0 else ("widgets", "none"):
            got[mode] += run(mode, a.bursts, a.tasks)
    none, widgets = statistics.median(got["none"]), statistics.median(got["widgets"])
    print(f"async throughput, {a.tasks:,} no-op tasks per burst, medians of "
          f"{len(got['none'])} bursts per mode")
    print(f"  no widget open             {none:10,.0f} tasks/s")
    print(f"  graph + progress open      {widgets:10,.0f} tasks/s  "
          f"({(widgets / none - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()

"""What a dashboard page costs on a cluster that remembers 100,000 finished tasks.

    python benchmarks/dashboard_overview.py [--tasks 100000] [--repeat 20] [--no-ray]

Runs ``--tasks`` no-op tasks (one in a hundred fails) on ``nc.init(num_cpus=2,
dashboard=True)``, then times what an open page asks for, over HTTP with the cluster token,
as the page does: the overview (every second), the failed tasks, the newest 200 tasks, the
cells, and the timeline window. Each request waits out the head's 0.25 s cache, so every
figure is a real computation, not a cached answer. The first overview also applies the task
events the head kept unapplied (it applies them only when someone looks); it is reported
apart.

With Ray installed (``pip install ".[bench]"``), the same tasks run on Ray and its state
API's equivalents are timed beside: ``summarize_tasks`` (the overview's task counts) and
``list_tasks`` filtered on FAILED.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from typing import Any


def noop(i: int) -> int:
    if i % 100 == 99:
        raise ValueError(f"task {i} fails on purpose")
    return i


def _run(submit: Any, get: Any, n: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        refs = [submit(i) for i in range(start, min(n, start + 10_000))]
        for r in refs:
            try:
                get(r)
            except Exception:
                pass
    return time.perf_counter() - t0


def _timed(fn: Any, repeat: int, pause: float) -> list[float]:
    out = []
    for _ in range(repeat):
        time.sleep(pause)  # past the head's cache: every call computes
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def nbcluster_figures(n: int, repeat: int) -> dict[str, Any]:
    import nbcluster as nc
    from nbcluster.runtime.api import session as runtime_api

    nc.init(num_cpus=2, dashboard=True)
    f = nc.remote(noop)
    ran = _run(f.remote, nc.get, n)
    core = runtime_api._driver
    assert core is not None
    nc.dashboard_url()  # opens the port if it was not
    info = core.head_call("dash_info", timeout=30)
    base = f"http://{info['dashboard']}/nbcluster/api/clusters/{info['cluster_id']}"
    headers = {"Authorization": f"token {core.token}"}

    def get(path: str) -> Any:
        req = urllib.request.Request(base + path, headers=headers)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    t0 = time.perf_counter()
    first = get("/overview")
    first_ms = (time.perf_counter() - t0) * 1000
    time.sleep(2)  # the workers' last reports arrive
    total = get("/overview")["tasks"]["total"]
    figures = {
        "tasks remembered": total,
        "first overview (applies kept events), ms": round(first_ms, 1),
    }
    for name, path in (
        ("overview", "/overview"),
        ("failed tasks (filter)", "/tasks?state=FAILED&limit=100"),
        ("newest 200 tasks", "/tasks?limit=200"),
        ("cells", "/cells"),
        ("timeline, last 2 min", f"/timeline?start_ms={int(time.time() * 1000) - 120_000}"),
    ):
        times = _timed(lambda p=path: get(p), repeat, 0.3)
        figures[f"{name}, median ms"] = round(statistics.median(times), 1)
        figures[f"{name}, max ms"] = round(max(times), 1)
    figures["tasks/s while filling"] = round(n / ran)
    assert first["tasks"]["total"] > 0
    nc.shutdown()
    return figures


def ray_figures(n: int, repeat: int) -> dict[str, Any] | None:
    try:
        import ray
        from ray.util import state as ray_state
    except ImportError:
        return None
    ray.init(num_cpus=2, include_dashboard=True)
    f = ray.remote(max_retries=0)(noop)
    ran = _run(f.remote, ray.get, n)
    time.sleep(5)  # Ray's task events reach its GCS on their own schedule
    figures: dict[str, Any] = {"tasks/s while filling": round(n / ran)}
    times = _timed(lambda: ray_state.summarize_tasks(raise_on_missing_output=False), repeat, 0)
    figures["summarize_tasks, median ms"] = round(statistics.median(times), 1)
    failed = [("state", "=", "FAILED")]
    times = _timed(
        lambda: ray_state.list_tasks(filters=failed, limit=100, raise_on_missing_output=False),
        repeat, 0,
    )  # fmt: skip
    figures["failed tasks (filter), median ms"] = round(statistics.median(times), 1)
    ray.shutdown()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    ours = nbcluster_figures(a.tasks, a.repeat)
    print(f"nbcluster, {a.tasks} tasks:")
    for k, v in ours.items():
        print(f"  {k:<45} {v}")
    if not a.no_ray:
        theirs = ray_figures(a.tasks, a.repeat)
        if theirs is None:
            print("Ray: not installed (pip install '.[bench]')")
        else:
            print(f"Ray, {a.tasks} tasks:")
            for k, v in theirs.items():
                print(f"  {k:<45} {v}")


if __name__ == "__main__":
    main()

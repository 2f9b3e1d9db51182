"""What open widgets cost: async task throughput in a notebook kernel with a graph of every
task and a progress widget shown, versus none.

    python benchmarks/widgets_overhead.py [--rounds 3] [--bursts 3] [--tasks 10000]

Each run starts a fresh nbcluster kernel (so a fresh cluster) over the Jupyter protocol and
runs one cell that warms up, then times ``--bursts`` bursts of ``--tasks`` no-op tasks
(``get([f.remote() for ...])``). With widgets, the cell displays ``nc.widgets.graph()``
(every task of the driver: the largest scope) for the whole run and a
``nc.widgets.progress(refs)`` for each burst. This script plays the browser: it reads every
IOPub message the kernel publishes and, for each widget that opens, tells the kernel a view
shows it (as the front end does when it renders one), so the widgets do all their work: the
head's digests, the kernel's forwarding, the messages to the browser, counted here.
Progress that appears by itself is off in both modes (``NBCLUSTER_AUTO_PROGRESS=0``). Runs
alternate between the modes, in the opposite order every other round. Medians over every
burst; besides, the CPU time the kernel and its cluster (head, workers) spent per task while
the cell ran, which a busy machine disturbs less than the throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CELL = r"""
import json, time
import nbcluster as nc
from IPython.display import display

def noop():
    return None

f = nc.remote(noop)
nc.get([f.remote() for _ in range(3000)])
if {widgets}:
    display(nc.widgets.graph())
rates = []
for _ in range({bursts}):
    t0 = time.perf_counter()
    refs = [f.remote() for _ in range({tasks})]
    if {widgets}:
        display(nc.widgets.progress(refs))
    nc.get(refs)
    rates.append({tasks} / (time.perf_counter() - t0))
print("RATES", json.dumps(rates))
"""


class Browser(threading.Thread):
    """Reads IOPub like a front end: announces a view of each widget that opens, and counts
    what the widgets send."""

    def __init__(self, kc: Any) -> None:
        super().__init__(daemon=True)
        self.kc = kc
        self.stop = threading.Event()
        self.stdout: list[str] = []
        self.idle = threading.Event()
        self.messages = 0
        self.bytes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind.startswith("comm_"):
                self.messages += 1
                self.bytes += len(json.dumps(content)) + sum(len(b) for b in msg["buffers"])
            if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
                data = {"method": "custom", "content": {"kind": "view", "on": True}}
                self.kc.shell_channel.send(self.kc.session.msg(
                    "comm_msg", {"comm_id": content["comm_id"], "data": data}))  # fmt: skip
            elif kind == "stream":
                self.stdout.append(content["text"])
            elif kind == "status" and content["execution_state"] == "idle":
                self.idle.set()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and everything it started, so far."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return total


def run(mode: str, bursts: int, tasks: int) -> tuple[list[float], int, int, float, float]:
    """One kernel: (rates, widget messages, their bytes, seconds the cell ran, CPU seconds
    the kernel and its cluster spent meanwhile)."""
    from jupyter_client.manager import KernelManager

    from nbcluster.kernel.kernelspec import KERNEL_NAME, ensure_installed

    ensure_installed()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NBCLUSTER_AUTO_PROGRESS": "0"}
    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel(env=env)
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        browser = Browser(kc)
        browser.start()
        code = CELL.format(widgets=mode == "widgets", bursts=bursts, tasks=tasks)
        kc.execute("import nbcluster as nc; nc.get(nc.put(1))")  # the cluster is up
        kc.get_shell_msg(timeout=120)
        pid = int(km.provisioner.pid)  # type: ignore[union-attr]
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        msg_id = kc.execute(code)
        reply = kc.get_shell_msg(timeout=600)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=600)
        took = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        deadline = time.monotonic() + 30
        while "RATES" not in "".join(browser.stdout) and time.monotonic() < deadline:
            browser.idle.wait(0.1)  # the output may trail the reply: wait for it, bounded
        browser.stop.set()
        browser.join()
        out = "".join(browser.stdout)
        if reply["content"]["status"] != "ok" or "RATES" not in out:
            raise RuntimeError(f"the benchmark cell failed: {reply['content']} {out[-2000:]}")
        rates = json.loads(out.split("RATES", 1)[1].strip().splitlines()[0])
        kc.stop_channels()
        return list(rates), browser.messages, browser.bytes, took, cpu
    finally:
        km.shutdown_kernel(now=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10_000)
    a = ap.parse_args()
    got: dict[str, list[float]] = {"none": [], "widgets": []}
    cpu: dict[str, list[float]] = {"none": [], "widgets": []}
    per_run = 3000 + a.bursts * a.tasks
    traffic = [0, 0, 0.0]
    for r in range(a.rounds):
        for mode in ("none", "widgets") if r % 2 == 0 else ("widgets", "none"):
            rates, n, size, took, seconds = run(mode, a.bursts, a.tasks)
            got[mode] += rates
            cpu[mode].append(seconds / per_run * 1e6)
            if mode == "widgets":
                traffic[0] += n
                traffic[1] += size
                traffic[2] += took
            print(f"  round {r + 1} {mode:8} " + " ".join(f"{x:,.0f}" for x in rates),
                  file=sys.stderr)  # fmt: skip
    none, widgets = statistics.median(got["none"]), statistics.median(got["widgets"])
    print(f"async throughput in a kernel, {a.tasks:,} no-op tasks per burst, medians of "
          f"{len(got['none'])} bursts per mode")  # fmt: skip
    print(f"  no widget shown            {none:10,.0f} tasks/s")
    print(f"  graph + progress shown     {widgets:10,.0f} tasks/s  "
          f"({(widgets / none - 1) * 100:+.1f}%)")
    c_none, c_widgets = statistics.median(cpu["none"]), statistics.median(cpu["widgets"])
    print(f"  CPU per task (kernel + cluster): {c_none:.0f} us without, {c_widgets:.0f} us with "
          f"widgets ({(c_widgets / c_none - 1) * 100:+.1f}%)")
    print(f"  widget messages to the browser: {traffic[0] / traffic[2]:.1f}/s, "
          f"{traffic[1] / traffic[2] / 1000:.1f} kB/s while the cell ran")


if __name__ == "__main__":
    main()

"""The ``nbcluster`` command: start and stop nodes, and look at a running cluster.

``nbcluster start --head`` starts a head node, ``nbcluster start --address H:P`` a node that
joins it. Without ``--block`` the node runs in the background until ``nbcluster stop``; with
it, the command stays in the foreground and stops the node cleanly on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from nbcluster.runtime.config import CONFIG


def _nodes_dir() -> str:
    path = os.path.join(CONFIG.temp_dir, "nodes")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _parse_resources(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--resources must be JSON, e.g. '{{\"bigmem\": 1}}': {e}") from None
    if not isinstance(value, dict):
        raise SystemExit("--resources must be a JSON object")
    return {str(k): float(v) for k, v in value.items()}


def cmd_start(args: argparse.Namespace) -> int:
    from nbcluster.runtime.launcher import record_cluster, start_head
    from nbcluster.runtime.resources import default_object_store_memory, node_resources

    if bool(args.head) == bool(args.address):
        raise SystemExit("give either --head or --address HOST:PORT")
    token = args.token or os.environ.get("NBCLUSTER_TOKEN")
    if args.address and not token:
        raise SystemExit("joining a cluster needs its token: --token or NBCLUSTER_TOKEN")
    res = node_resources(args.num_cpus, args.num_gpus, _parse_resources(args.resources))
    store = args.object_store_memory or default_object_store_memory()
    log_path = os.path.join(_nodes_dir(), f"node-{time.strftime('%Y%m%d-%H%M%S')}.log")
    node = start_head(
        res, int(store), host=args.host, port=args.port, token=token,
        head_address=args.address, lifeline=args.block, log_path=None if args.block else log_path,
    )  # fmt: skip
    record = os.path.join(_nodes_dir(), f"{node.proc.pid}.json")
    with open(record, "w") as f:
        json.dump({"pid": node.proc.pid, "address": node.address,
                   "session_dir": node.session_dir, "head": bool(args.head)}, f)  # fmt: skip
    if args.head:
        record_cluster(node.address, node.session_dir, node.proc.pid)
        print(f"nbcluster head node started at {node.address}")
        print(f"  token file: {os.path.join(node.session_dir, 'token')}")
        print("  to attach a node from another machine:")
        print(f"    NBCLUSTER_TOKEN={node.token} nbcluster start --address {node.address}")
        print("  to connect from Python:")
        print(f"    nbcluster.init(address={node.address!r}, token=...)  # or NBCLUSTER_TOKEN")
    else:
        print(f"nbcluster node started at {node.address}, joined {args.address}")
    sys.stdout.flush()
    if not args.block:
        assert node.proc.stdin is not None
        node.proc.stdin.close()  # no lifeline in the background: it runs until `stop`
        return 0

    def forward(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    try:
        node.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop(timeout=5)
        _remove(record)
    return 0


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def cmd_stop(args: argparse.Namespace) -> int:
    import psutil

    stopped = 0
    for name in os.listdir(_nodes_dir()):
        if not name.endswith(".json"):
            continue
        path = os.path.join(_nodes_dir(), name)
        try:
            with open(path) as f:
                pid = int(json.load(f)["pid"])
        except (OSError, ValueError, KeyError):
            _remove(path)
            continue
        try:
            proc = psutil.Process(pid)
            if "nbcluster.runtime.head" in " ".join(proc.cmdline()):
                proc.terminate()
                try:
                    proc.wait(10)
                except psutil.TimeoutExpired:
                    os.killpg(pid, signal.SIGKILL)  # the node leads its own process group
                stopped += 1
        except (psutil.Error, ProcessLookupError):
            pass
        _remove(path)
    _remove(os.path.join(CONFIG.temp_dir, "current_cluster.json"))
    print(f"stopped {stopped} nbcluster node(s)")
    return 0


def _connect(args: argparse.Namespace) -> Any:
    import nbcluster as nc

    address = args.address or os.environ.get("NBCLUSTER_ADDRESS") or "auto"
    nc.init(address=address, token=getattr(args, "token", None))
    return nc


def cmd_status(args: argparse.Namespace) -> int:
    nc = _connect(args)
    try:
        nodes = nc.nodes()
        total, avail = nc.cluster_resources(), nc.available_resources()
        alive = [n for n in nodes if n["Alive"]]
        print(f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead")
        for n in nodes:
            state = "ALIVE" if n["Alive"] else f"DEAD ({n['DeathReason']})"
            res = ", ".join(f"{k}: {v:g}" for k, v in sorted(n["Resources"].items()))
            print(f"  {n['NodeID'][:12]}  {n['Address']:<22} {state:<8} {res}")
        print("Resources (used/total):")
        for k in sorted(total):
            used = total[k] - avail.get(k, 0.0)
            print(f"  {used:g}/{total[k]:g} {k}")
    finally:
        nc.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbcluster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start a head node (--head) or a node joining one")
    s.add_argument("--head", action="store_true", help="start a head node")
    s.add_argument("--address", help="HOST:PORT of the head to join")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    s.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    s.add_argument("--num-cpus", type=float, help="CPUs to offer (default: all)")
    s.add_argument("--num-gpus", type=float, help="GPUs to offer (default: detected)")
    s.add_argument("--resources", help='custom resources as JSON, e.g. \'{"bigmem": 1}\'')
    s.add_argument("--object-store-memory", type=int, help="store capacity in bytes")
    s.add_argument("--token", help="cluster token (default: generated; or NBCLUSTER_TOKEN)")
    s.add_argument("--block", action="store_true", help="stay in the foreground")
    s.set_defaults(fn=cmd_start)
    st = sub.add_parser("stop", help="stop the nodes `start` started on this machine")
    st.set_defaults(fn=cmd_stop)
    ss = sub.add_parser("status", help="nodes and resource use of a cluster")
    ss.add_argument("--address", help="HOST:PORT of the head (default: the local cluster)")
    ss.add_argument("--token", help="cluster token (or NBCLUSTER_TOKEN)")
    ss.set_defaults(fn=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

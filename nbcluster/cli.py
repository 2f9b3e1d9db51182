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

from nbcluster.exceptions import ClusterConnectionError
from nbcluster.runtime import hub_service
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
    _configure_tls(args)
    hub_service.configure_from_args(args)
    res = node_resources(args.num_cpus, args.num_gpus, _parse_resources(args.resources))
    store = args.object_store_memory or default_object_store_memory()
    log_path = os.path.join(_nodes_dir(), f"node-{time.strftime('%Y%m%d-%H%M%S')}.log")
    try:
        node = start_head(
            res, int(store), host=args.host, port=args.port, token=token,
            head_address=args.address, lifeline=args.block,
            log_path=None if args.block else log_path, inherit_output=args.block,
            node_ip=args.node_ip, interface=args.interface,
            labels={"nbcluster.io/group": args.group} if args.group else None,
            dashboard_port=args.dashboard_port if args.head else None,
            dashboard_host=args.dashboard_host, kind="standalone",
        )  # fmt: skip
    except ClusterConnectionError as e:
        raise SystemExit(f"nbcluster start: {e}") from None
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
        if args.dashboard_port is not None:
            print(f"  dashboard (one-time login link): {_login_link(node.address, node.token)}")
            print("    `nbcluster dashboard` prints a new one")
    else:
        if not args.group:  # local tools (`nbcluster status`...) find the cluster through it
            record_cluster(args.address, node.session_dir, node.proc.pid)
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


def _configure_tls(args: argparse.Namespace) -> None:
    """TLS for the node and its workers goes through the environment they inherit."""
    from nbcluster.runtime import tls

    if args.tls and not args.tls_cert:
        args.tls_cert, args.tls_key = tls.generate(os.path.join(CONFIG.temp_dir, "tls"))
        print(f"generated a self-signed TLS certificate: {args.tls_cert} (key {args.tls_key})")
        print("  copy both to every machine of the cluster and pass --tls-cert/--tls-key there")
    if args.tls_cert:
        os.environ["NBCLUSTER_TLS_CERT"] = os.path.abspath(args.tls_cert)
        os.environ["NBCLUSTER_TLS_KEY"] = os.path.abspath(args.tls_key or args.tls_cert)
        # this process dials the head too (a joining node trades its token first)
        CONFIG.tls_cert = os.environ["NBCLUSTER_TLS_CERT"]
        CONFIG.tls_key = os.environ["NBCLUSTER_TLS_KEY"]
        print(f"TLS on; certificate sha256 {tls.fingerprint(args.tls_cert)}")
        print("  drivers: set NBCLUSTER_TLS_CERT (and NBCLUSTER_TLS_KEY) to the same files")


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


def _login_link(address: str, token: str) -> str:
    import nbcluster as nc

    nc.init(address=address, token=token)
    try:
        return nc.dashboard_url(jupyter=False)
    finally:
        nc.shutdown()


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print a one-time login link to the cluster's own dashboard (opened if it was not)."""
    nc = _connect(args)
    try:
        print(nc.dashboard_url(jupyter=False))
    finally:
        nc.shutdown()
    return 0


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
        _print_store_and_demand()
    finally:
        nc.shutdown()
    return 0


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _print_store_and_demand() -> None:
    """The ``status`` lines from the event log: store use, physical use and pending demand."""
    from nbcluster.util.state import list_nodes

    nodes = [n for n in list_nodes(limit=None) if n.state == "ALIVE"]
    print("Object store (used/capacity):")
    for n in nodes:
        spilled = f", spilled {n.spilled_objects} ({_bytes(n.spilled_bytes)})"
        print(
            f"  {n.node_id[:12]}  {_bytes(n.object_store_used)}/"
            f"{_bytes(n.object_store_capacity)}, {n.object_store_objects} objects{spilled}"
        )
    print("Usage (physical):")
    for n in nodes:
        cpu = "-" if n.cpu_percent is None else f"{n.cpu_percent:.0f}%"
        gpus = "".join(
            f", GPU{g['index']} {g['utilization']:.0f}% "
            f"{_bytes(g['mem_used'])}/{_bytes(g['mem_total'])}"
            for g in n.gpus
        )
        print(
            f"  {n.node_id[:12]}  CPU {cpu}, memory {_bytes(n.mem_used)}/"
            f"{_bytes(n.mem_total)}{gpus}"
        )
    demand: dict[str, int] = {}
    for n in nodes:
        for shape, count in n.pending_demand.items():
            demand[shape] = demand.get(shape, 0) + count
    print("Pending demand:")
    if not demand:
        print("  (no resource demands)")
    for shape, count in sorted(demand.items()):
        print(f"  {shape}: {count}+ pending lease request(s)")


def _parse_filters(texts: list[str] | None) -> list[tuple[str, str, str]]:
    out = []
    for text in texts or ():
        key, op, value = text.partition("!=") if "!=" in text else text.partition("=")
        if not op or not key:
            raise SystemExit(f"--filter takes KEY=VALUE or KEY!=VALUE, got {text!r}")
        out.append((key.strip(), op, value.strip()))
    return out


#: Columns ``nbcluster list`` prints per kind (all fields with --format json).
_COLUMNS = {
    "tasks": ("task_id", "name", "state", "attempt_number", "worker_pid", "call_site",
              "error_type"),
    "actors": ("actor_id", "class_name", "name", "state", "pid", "num_restarts"),
    "objects": ("object_id", "object_size", "state", "owner", "task_id", "call_site"),
    "nodes": ("node_id", "address", "state", "resources_available", "object_store_used"),
    "workers": ("worker_id", "worker_type", "pid", "state", "node_id", "memory_rss"),
}  # fmt: skip


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("node_id", "worker_id") and isinstance(value, str):
        return value[:12]  # random ids: a prefix is unique enough (task/object ids are not)
    if key in ("object_size", "object_store_used", "memory_rss"):
        return _bytes(value)
    if isinstance(value, dict):
        return ", ".join(
            f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in sorted(value.items())
        )
    return str(value)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    nc = _connect(args)
    try:
        from nbcluster.util import state

        fn = getattr(state, f"list_{args.kind}")
        items = [r.to_dict() for r in fn(_parse_filters(args.filter), args.limit)]
        if args.format == "json":
            print(json.dumps(items, indent=1, default=str))
            return 0
        cols = _COLUMNS[args.kind]
        _table(
            [[c.upper() for c in cols]] + [[_cell(c, item.get(c)) for c in cols] for item in items]
        )
        print(f"({len(items)} {args.kind})")
    finally:
        nc.shutdown()
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    nc = _connect(args)
    try:
        from nbcluster.util.state import summarize_tasks

        got = summarize_tasks()["cluster"]
        rows = [["FUNCTION", "TYPE", "STATES"]]
        for name, entry in sorted(got["summary"].items()):
            counts = ", ".join(f"{k}: {v}" for k, v in sorted(entry["state_counts"].items()))
            rows.append([name or "-", entry["type"], counts])
        _table(rows)
        print(f"({got['total_tasks']} tasks)")
    finally:
        nc.shutdown()
    return 0


def cmd_memory(args: argparse.Namespace) -> int:
    """Per object: size, owner, who references it and how, call site; then the totals."""
    nc = _connect(args)
    try:
        from nbcluster.util.state import memory_summary

        got = memory_summary()
        objects = sorted(got["objects"], key=lambda o: -o.object_size)
        rows = [["OBJECT_ID", "SIZE", "WHERE", "OWNER", "REFERENCES", "CALL_SITE"]]
        for o in objects[: args.limit]:
            refs = "; ".join(f"{r['reference_type']} (pid {r['pid']})" for r in o.references)
            rows.append([o.object_id, _bytes(o.object_size), o.state,
                         f"pid {o.owner_pid}" if o.owner_pid else o.owner, refs,
                         o.call_site or "-"])  # fmt: skip
        _table(rows)
        inline = sum(o.object_size for o in objects if o.state == "INLINE")
        stored = sum(o.object_size for o in objects if o.state != "INLINE")
        print(
            f"Total: {len(objects)} objects, {_bytes(inline + stored)} "
            f"({_bytes(inline)} inline in their owners, {_bytes(stored)} in object stores)"
        )
        for n in got["nodes"]:
            if n.state == "ALIVE":
                print(
                    f"Node {n.node_id[:12]}: store {_bytes(n.object_store_used)}/"
                    f"{_bytes(n.object_store_capacity)}, spilled {n.spilled_objects} "
                    f"objects ({_bytes(n.spilled_bytes)})"
                )
        for u in got["unreachable"]:
            print(f"(process {u['pid']} at {u['address']} did not answer: {u['error']})")
    finally:
        nc.shutdown()
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    nc = _connect(args)
    try:
        path = args.output or f"nbcluster-timeline-{time.strftime('%Y%m%d-%H%M%S')}.json"
        trace = nc.timeline(path)
        tasks = sum(1 for e in trace if e.get("ph") == "X")
        print(f"wrote {tasks} tasks to {path}; open it in https://ui.perfetto.dev")
    finally:
        nc.shutdown()
    return 0


def _add_state_parsers(sub: Any) -> None:
    def connect_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="HOST:PORT of the head (default: the local cluster)")
        p.add_argument("--token", help="cluster token (or NBCLUSTER_TOKEN)")

    ls = sub.add_parser("list", help="tasks, actors, objects, nodes or workers, from the head")
    ls.add_argument("kind", choices=sorted(_COLUMNS))
    ls.add_argument("--filter", action="append", help="KEY=VALUE or KEY!=VALUE (repeatable)")
    ls.add_argument("--limit", type=int, default=100, help="show at most this many (newest)")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    connect_args(ls)
    ls.set_defaults(fn=cmd_list)
    sm = sub.add_parser("summary", help="task counts by function and state")
    connect_args(sm)
    sm.set_defaults(fn=cmd_summary)
    me = sub.add_parser("memory", help="objects: size, owner, references, call site; totals")
    me.add_argument("--limit", type=int, default=100, help="show the largest N objects")
    connect_args(me)
    me.set_defaults(fn=cmd_memory)
    tl = sub.add_parser("timeline", help="write a Chrome trace of task execution (Perfetto)")
    tl.add_argument("--output", "-o", help="file to write (default: ./nbcluster-timeline-*.json)")
    connect_args(tl)
    tl.set_defaults(fn=cmd_timeline)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbcluster", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start a head node (--head) or a node joining one")
    s.add_argument("--head", action="store_true", help="start a head node")
    s.add_argument("--address", help="HOST:PORT of the head to join")
    s.add_argument(
        "--host",
        help="address to listen on (0.0.0.0: all); default: loopback for a head, the "
        "interface that routes to the head for a joining node",
    )
    s.add_argument(
        "--node-ip", help="address the other nodes reach this node at (and it listens on)"
    )
    s.add_argument("--interface", help="listen on and advertise this network interface's IPv4")
    s.add_argument("--group", help=argparse.SUPPRESS)  # the node group a launcher started
    s.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    s.add_argument("--num-cpus", type=float, help="CPUs to offer (default: all)")
    s.add_argument("--num-gpus", type=float, help="GPUs to offer (default: detected)")
    s.add_argument("--resources", help='custom resources as JSON, e.g. \'{"bigmem": 1}\'')
    s.add_argument("--object-store-memory", type=int, help="store capacity in bytes")
    s.add_argument("--token", help="cluster token (default: generated; or NBCLUSTER_TOKEN)")
    s.add_argument("--block", action="store_true", help="stay in the foreground")
    s.add_argument("--tls-cert", help="TLS certificate (PEM) shared by the cluster's nodes")
    s.add_argument("--tls-key", help="its private key (PEM)")
    s.add_argument(
        "--tls", action="store_true", help="generate a self-signed certificate and use TLS"
    )
    s.add_argument(
        "--dashboard-port", type=int, help="serve the head's dashboard on this port (0: any)"
    )
    s.add_argument(
        "--dashboard-host", default="127.0.0.1", help="interface the dashboard listens on"
    )
    hub_service.add_start_arguments(s)
    s.set_defaults(fn=cmd_start)
    st = sub.add_parser("stop", help="stop the nodes `start` started on this machine")
    st.set_defaults(fn=cmd_stop)
    ss = sub.add_parser("status", help="nodes and resource use of a cluster")
    ss.add_argument("--address", help="HOST:PORT of the head (default: the local cluster)")
    ss.add_argument("--token", help="cluster token (or NBCLUSTER_TOKEN)")
    ss.set_defaults(fn=cmd_status)
    _add_state_parsers(sub)
    db = sub.add_parser("dashboard", help="print a login link to the cluster's dashboard")
    db.add_argument("--address", help="HOST:PORT of the head (default: the local cluster)")
    db.add_argument("--token", help="cluster token (or NBCLUSTER_TOKEN)")
    db.set_defaults(fn=cmd_dashboard)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())

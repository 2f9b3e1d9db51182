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
from nbcluster.runtime.control import hub_service
from nbcluster.runtime.node import sessions
from nbcluster.status_report import format_bytes as _bytes


def _parse_resources(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CliError(f"--resources must be JSON, e.g. '{{\"bigmem\": 1}}': {e}") from None
    if not isinstance(value, dict):
        raise CliError("--resources must be a JSON object")
    return {str(k): float(v) for k, v in value.items()}


def _token_from(args: argparse.Namespace, env: bool = True) -> str | None:
    """The token given by --token-file, (discouraged) --token or NBCLUSTER_TOKEN."""
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            with open(token_file) as f:
                return f.read().strip()
        except OSError as e:
            raise CliError(f"cannot read the token file {token_file}: {e.strerror}") from None
    if getattr(args, "token", None):
        print(
            "nbcluster: warning: --token shows the token to every user of this machine (ps); "
            "use --token-file or NBCLUSTER_TOKEN",
            file=sys.stderr,
        )
        return str(args.token)
    return (os.environ.get("NBCLUSTER_TOKEN") or None) if env else None


def cmd_start(args: argparse.Namespace) -> int:
    from nbcluster.runtime.node.launcher import start_head
    from nbcluster.runtime.scheduling.resources import node_resources, object_store_memory

    if bool(args.head) == bool(args.address):
        raise CliError("give either --head or --address HOST:PORT")
    token = _token_from(args)
    if args.address and not token:
        raise CliError("joining a cluster needs its token: --token-file FILE or NBCLUSTER_TOKEN")
    _configure_tls(args)
    hub_service.configure_from_args(args)
    res = node_resources(args.num_cpus, args.num_gpus, _parse_resources(args.resources))
    try:
        store = object_store_memory(args.object_store_memory)
    except ValueError as e:
        raise CliError(str(e)) from None
    node = start_head(
        res, int(store), host=args.host, port=args.port, token=token,
        head_address=args.address, lifeline=args.block,
        log_path=os.path.abspath(args.log_file) if args.log_file else None,
        inherit_output=args.block and not args.log_file, cli=True,
        node_ip=args.node_ip, interface=args.interface,
        labels={"nbcluster.io/group": args.group} if args.group else None,
        dashboard_port=args.dashboard_port if args.head else None,
        dashboard_host=args.dashboard_host, kind="standalone",
    )  # fmt: skip
    if args.head:
        print(f"nbcluster head node started at {node.address}")
        print(f"  token file: {node.token_file} (only you can read it)")
        if args.show_token:
            print(f"  token: {node.token}")
        print("  from this machine:  nbcluster status   (or nbcluster.init(address='auto'))")
        print("  to attach a node from another machine, copy the token file there, then:")
        print(f"    nbcluster start --address {node.address} --token-file TOKEN_FILE")
        print("  to connect from Python elsewhere:")
        print(f"    nbcluster.init(address={node.address!r}, token=...)  # or NBCLUSTER_TOKEN")
        if args.dashboard_port is not None:
            print(f"  dashboard (one-time login link): {_login_link(node.address, node.token)}")
            print("    `nbcluster dashboard` prints a new one")
    else:
        print(f"nbcluster node started at {node.address}, joined {args.address}")
    if args.log_file:
        print(f"  log: {os.path.abspath(args.log_file)}")
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
    return 0


def _configure_tls(args: argparse.Namespace) -> None:
    """TLS for the node and its workers goes through the environment they inherit."""
    from nbcluster.runtime.wire import tls

    if args.tls and not args.tls_cert:
        args.tls_cert, args.tls_key = tls.generate(sessions.subdir("tls"))
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


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop the nodes this user started with ``nbcluster start`` here (joined nodes first,
    so they leave quietly instead of losing their head), and say what was stopped."""
    import psutil

    mine = [r for r in sessions.live_records() if r.started_by == "cli"]
    mine.sort(key=lambda r: r.role == "head")
    stopped = []
    for record in mine:
        try:
            proc = psutil.Process(record.pid)
            if not record.alive():
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except psutil.TimeoutExpired:
                os.killpg(record.pid, signal.SIGKILL)  # the node leads its own process group
        except (psutil.Error, ProcessLookupError):
            continue
        finally:
            sessions.remove_record(record.pid)
            sessions.remove_session_dir(record.session_dir)
        what = "head node" if record.role == "head" else "node"
        stopped.append(f"{what} at {record.node_address or record.address} (pid {record.pid})")
    if not stopped:
        print("no nodes started with `nbcluster start` are running for you on this machine")
    for line in stopped:
        print(f"stopped {line}")
    return 0


def cmd_clusters(args: argparse.Namespace) -> int:
    """This user's clusters on this machine: scripts', notebooks' and `start`'s."""
    found = sessions.live_clusters()
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in found], indent=1))
        return 0
    for record in found:
        print(record.describe())
    if not found:
        print("no clusters of yours are running on this machine")
    return 0


def _connect(args: argparse.Namespace) -> Any:
    """Attach to the cluster the user means: --address, NBCLUSTER_ADDRESS, or the only one
    this user runs here (a notebook's or a script's too); the token from the options or
    the environment, else from that cluster's record."""
    import nbcluster as nc

    address = args.address or os.environ.get("NBCLUSTER_ADDRESS") or None
    # A cluster found by its record comes with its own token; NBCLUSTER_TOKEN is for the
    # cluster NBCLUSTER_ADDRESS (or --address) names.
    token = _token_from(args, env=address is not None)
    if token is None:
        record = sessions.find_cluster(address)
        address, token = record.address, record.read_token()
    nc.init(address=address, token=token)
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
        from nbcluster.status_report import status_text

        print(status_text())
    finally:
        nc.shutdown()
    return 0


def _parse_filters(texts: list[str] | None) -> list[tuple[str, str, str]]:
    out = []
    for text in texts or ():
        key, op, value = text.partition("!=") if "!=" in text else text.partition("=")
        if not op or not key:
            raise CliError(f"--filter takes KEY=VALUE or KEY!=VALUE, got {text!r}")
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
        trace = nc.timeline()
        with open(path, "w") as f:
            json.dump(trace, f)
        tasks = sum(1 for e in trace if e.get("ph") == "X")
        print(f"wrote {tasks} tasks to {path}; open it in https://ui.perfetto.dev")
    finally:
        nc.shutdown()
    return 0


def _connect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address", help="HOST:PORT of the head (default: your only cluster on this machine)"
    )
    p.add_argument("--token-file", help="file holding the cluster token (or NBCLUSTER_TOKEN)")
    p.add_argument("--token", help=argparse.SUPPRESS)  # visible in ps: --token-file instead


def _add_state_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    ls = sub.add_parser(
        "list", parents=[common], help="tasks, actors, objects, nodes or workers, from the head"
    )
    ls.add_argument("kind", choices=sorted(_COLUMNS))
    ls.add_argument("--filter", action="append", help="KEY=VALUE or KEY!=VALUE (repeatable)")
    ls.add_argument("--limit", type=int, default=100, help="show at most this many (newest)")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    _connect_args(ls)
    ls.set_defaults(fn=cmd_list)
    sm = sub.add_parser("summary", parents=[common], help="task counts by function and state")
    _connect_args(sm)
    sm.set_defaults(fn=cmd_summary)
    me = sub.add_parser(
        "memory", parents=[common], help="objects: size, owner, references, call site; totals"
    )
    me.add_argument("--limit", type=int, default=100, help="show the largest N objects")
    _connect_args(me)
    me.set_defaults(fn=cmd_memory)
    tl = sub.add_parser(
        "timeline", parents=[common], help="write a Chrome trace of task execution (Perfetto)"
    )
    tl.add_argument("--output", "-o", help="file to write (default: ./nbcluster-timeline-*.json)")
    _connect_args(tl)
    tl.set_defaults(fn=cmd_timeline)


def build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="on failure, show the full traceback (and log at DEBUG level)",
    )  # fmt: skip
    p = argparse.ArgumentParser(prog="nbcluster", description=__doc__, parents=[common])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "start", parents=[common], help="start a head node (--head) or a node joining one"
    )
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
    s.add_argument(
        "--token-file",
        help="file holding the cluster token (default: a new token; or NBCLUSTER_TOKEN)",
    )
    s.add_argument("--token", help=argparse.SUPPRESS)  # visible in ps: --token-file instead
    s.add_argument("--show-token", action="store_true", help="print the token itself too")
    s.add_argument(
        "--log-file",
        help="keep the node's log in this file (default: in its session directory, "
        "removed when the node stops; with --block: the terminal)",
    )
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
    st = sub.add_parser(
        "stop", parents=[common], help="stop the nodes you started with `start` on this machine"
    )
    st.set_defaults(fn=cmd_stop)
    ss = sub.add_parser("status", parents=[common], help="nodes and resource use of a cluster")
    _connect_args(ss)
    ss.set_defaults(fn=cmd_status)
    cl = sub.add_parser("clusters", parents=[common], help="your clusters running on this machine")
    cl.add_argument("--format", choices=("table", "json"), default="table")
    cl.set_defaults(fn=cmd_clusters)
    _add_state_parsers(sub, common)
    db = sub.add_parser(
        "dashboard", parents=[common], help="print a login link to the cluster's dashboard"
    )
    _connect_args(db)
    db.set_defaults(fn=cmd_dashboard)
    return p


class CliError(Exception):
    """An expected failure: the command prints its message as one line and exits 1."""


def _expected(e: BaseException) -> bool:
    """Failures a user causes or meets (no cluster, wrong token, port taken...), as opposed
    to bugs, which keep their traceback."""
    from nbcluster.exceptions import NbclusterError

    return isinstance(e, (CliError, NbclusterError, ConnectionError, TimeoutError, OSError,
                          ValueError))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="[nbcluster %(levelname)s] %(message)s")
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if debug or not _expected(e):
            raise
        message = str(e).strip() or type(e).__name__
        print(f"nbcluster {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

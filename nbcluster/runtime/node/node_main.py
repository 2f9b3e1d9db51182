"""A node process: this machine's node agent, and on the head node also the control service.

Started by ``nbcluster.init()`` or ``nbcluster start`` as a child process. Its configuration
arrives as one JSON line on stdin, and stdin then stays open as a lifeline: when the parent
exits, even by SIGKILL, stdin reaches EOF and the node stops its workers and exits, so no
process and no shared memory of the cluster outlives whoever started it.

The head node (no ``head_address`` in the configuration) also runs the node directory and
the actor directory; a worker node joins the head at ``head_address`` and leaves the cluster
when it loses the head.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.control import hub_service
from nbcluster.runtime.control.actor_manager import ActorManager
from nbcluster.runtime.control.dashboard_port import DashboardPort
from nbcluster.runtime.control.dashboard_port import bind as bind_dashboard
from nbcluster.runtime.control.node_directory import NodeDirectory
from nbcluster.runtime.control.placement_groups import PlacementGroupManager
from nbcluster.runtime.core.exposure import HeadExposure, NodeExposure
from nbcluster.runtime.execute.proctitle import set_title
from nbcluster.runtime.ids import random_id
from nbcluster.runtime.node import event_shipping, log_rotation, sessions
from nbcluster.runtime.node.fork_server import ForkServer
from nbcluster.runtime.node.join import JoinError, JoinService, join_head
from nbcluster.runtime.node.node_agent import NodeAgent
from nbcluster.runtime.objects.object_store import ObjectStore
from nbcluster.runtime.objects.remote_store import StoreProxy
from nbcluster.runtime.objects.store_service import StoreService
from nbcluster.runtime.observe import log_tail
from nbcluster.runtime.observe.cluster_overview import ClusterOverview
from nbcluster.runtime.observe.digest_service import DigestService
from nbcluster.runtime.observe.event_log import EventLog
from nbcluster.runtime.wire.addresses import NodeAddress
from nbcluster.runtime.wire.protocol import Hello
from nbcluster.runtime.wire.transport import (
    Connection,
    Endpoint,
    install_rpc,
    parse_address,
    tls_server_args,
)

log = logging.getLogger("nbcluster.node")
#: How long a stopping node waits for its actors to end gracefully (seconds): a kernel
#: has about 5 s between a shutdown request and SIGKILL.
ACTOR_END_S = 2.0
#: Starts and deliberate stops: logged at INFO, shown even when the log level is WARNING.
lifecycle = logging.getLogger("nbcluster.node.lifecycle")
lifecycle.setLevel(logging.INFO)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _worker_main(token: str, address: str, host: str, advertise: str) -> None:
    from nbcluster.runtime.execute.worker_main import run_worker

    run_worker(address, token, host, advertise)


def _describe(directory: NodeDirectory) -> dict[str, Any]:
    """The cluster's size, as lists of clusters show it."""
    total, available = directory.totals()
    alive = sum(1 for rec in directory.nodes.values() if rec.alive)
    return {"resources": total, "resources_available": available, "nodes": alive}


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("NBCLUSTER_LOG_LEVEL", "WARNING"),
        format="[nbcluster node %(asctime)s %(levelname)s] %(message)s",
    )
    cfg = json.loads(sys.stdin.readline())
    set_title("head" if cfg.get("head_address") is None else "node")
    os.chdir(cfg.get("cwd") or os.getcwd())
    for p in reversed(cfg.get("sys_path") or []):
        if p not in sys.path:
            sys.path.insert(0, p)
    token: str = cfg["token"]
    head_address: str | None = cfg.get("head_address")
    where = NodeAddress(cfg["bind"], cfg["advertise"])
    host = where.bind
    session_dir = cfg["session_dir"]
    ready_fd = int(cfg["ready_fd"])
    # A JupyterHub service's head takes the Hub credentials before any worker could see them.
    hub = CONFIG.jupyterhub and head_address is None
    hub_creds = hub_service.take_credentials() if hub else None
    store = ObjectStore(int(cfg["object_store_memory"]), os.path.join(session_dir, "spill"))
    try:
        sock = _bind(host, int(cfg.get("port", 0)))
    except OSError as e:
        _fail(ready_fd, f"cannot listen on {host}:{cfg.get('port', 0)}: {e}")
    dash_host = cfg.get("dashboard_host") or "127.0.0.1"
    dash_sock = None
    if head_address is None and cfg.get("dashboard_port") is not None:
        try:  # asked for and not possible: the start fails, and says why
            dash_sock = bind_dashboard(dash_host, int(cfg["dashboard_port"]))
        except OSError as e:
            _fail(ready_fd, str(e.strerror))
    address = f"{where.advertise}:{sock.getsockname()[1]}"
    local_address = f"{where.local}:{sock.getsockname()[1]}"
    fork_server = ForkServer.start(
        lambda: _worker_main(token, local_address, host, where.advertise),
        close_fds=[sock.fileno(), ready_fd, *([dash_sock.fileno()] if dash_sock else [])],
    )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    stopping: list[bool] = []

    def stop(*_: Any) -> None:
        if not stopping:  # once: the actors' graceful end runs on the loop after this
            stopping.append(True)
            loop.stop()

    endpoint = Endpoint(loop, token)
    endpoint.loop_thread = threading.get_ident()
    install_rpc(endpoint)
    node_id = random_id().hex()
    storesvc = StoreService(endpoint, store, host, address, token)
    agent = NodeAgent(
        endpoint, node_id, address, cfg["resources"], storesvc, fork_server, session_dir
    )
    node_info = {
        "address": address,
        "transfer": storesvc.transfer_address,
        "resources": cfg["resources"],
        "store_capacity": store.capacity,
        "labels": cfg.get("labels") or {},
        "limits": agent.limits.applied(),
    }
    node_exposure = NodeExposure(endpoint, agent, storesvc, sock.getsockname()[1])
    StoreProxy(endpoint, storesvc.arena)
    closers = [agent.on_close]
    closers_at_exit: list[Callable[[], None]] = []  # what the head does as it stops
    event_log: EventLog | None = None  # the head keeps the cluster's event log
    dashboard: DashboardPort | None = None
    if head_address is not None:
        log_tail.install(endpoint)  # the head reaches this node's log through its connection
    if head_address is None:
        directory = NodeDirectory(endpoint)
        head_exposure = HeadExposure(endpoint, node_exposure, directory.nodes.values)
        joins = JoinService(endpoint, directory, on_joined=head_exposure.tell_joining)
        closers_at_exit.append(joins.cancel_jobs)
        event_log = EventLog(endpoint, directory)
        overview = ClusterOverview(endpoint, event_log)
        closers.append(DigestService(endpoint, event_log, overview.metrics).on_close)
        log_tail.install(endpoint, directory)
        dashboard = DashboardPort(
            endpoint, node_id, address, local_address, session_dir, stop,
            kind=cfg.get("kind") or "driver", describe=lambda: _describe(directory),
        )  # fmt: skip
        actors = ActorManager(endpoint, agent, directory, address)
        PlacementGroupManager(endpoint, directory, actors, node_id)
        endpoint.rpc["debug_head_sizes"] = lambda conn: {
            "actors": len(actors.actors), "event_sources": event_log.source_count(),
        }  # how big the head's tables are (a long session must not grow them)
        directory.listeners.append(lambda view: agent.cluster_view_update(None, view))
        agent.report = lambda available: directory.node_update(None, node_id, available)
        agent.fetch_view = directory.view
        directory.register_node(None, node_id, node_info)
        closers.append(directory.on_close)
    if CONFIG.jupyterhub:
        users = hub_service.install_node(endpoint, agent, storesvc)
        if hub_creds is not None:
            hub_service.install_head(endpoint, users, hub_creds, actors)
            hub_service.serve_dashboard(dashboard, hub_creds, users)

    def on_close(conn: Connection) -> None:
        for fn in closers:
            fn(conn)

    endpoint.on_close = on_close

    def send_to_agent(addr: str, method: str, args: list[Any]) -> None:
        async def go() -> None:
            conn = agent_conns.get(addr)
            if conn is None or conn.closed:
                host_, port_ = parse_address(addr)
                conn = await endpoint.connect(host_, port_)
                conn.post(Hello(address, "agent", b"", os.getpid()))
                agent_conns[addr] = conn
            conn.notify(method, *args)

        if addr == address:
            endpoint.rpc[method](None, *args)
            return
        task = loop.create_task(go())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    agent_conns: dict[str, Connection] = {}
    storesvc.send_to_agent = send_to_agent

    # Serve before joining: the head dials this node back before it lets it in.
    loop.run_until_complete(
        loop.create_server(lambda: Connection(endpoint, True), sock=sock, **tls_server_args())
    )
    if head_address is not None:
        try:
            loop.run_until_complete(join_head(endpoint, agent, head_address, node_info, stop))
        except JoinError as e:
            fork_server.stop()
            _fail(ready_fd, str(e))
    event_shipping.start(agent, event_log.ingest if event_log is not None else None)
    agent.start_pool()
    if dashboard is not None and dash_sock is not None:
        dashboard.adopt(dash_sock, dash_host)
    _publish(cfg, address, head_address, session_dir)
    os.write(ready_fd, f"READY {address} {node_id}\n".encode())
    os.close(ready_fd)
    role = "head node" if head_address is None else f"node (joined {head_address})"
    lifecycle.info("%s started at %s, pid %d", role, address, os.getpid())

    def stop_because(why: str) -> None:
        lifecycle.info("stopping: %s", why)
        stop()

    log_rotation.schedule(loop)
    loop.add_signal_handler(signal.SIGTERM, stop_because, "SIGTERM (nbcluster stop, or asked)")
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the driver's Ctrl-C is not ours

    def on_stdin() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            stop_because("the process that started this node ended or let it go")

    if cfg.get("lifeline", True):
        loop.add_reader(sys.stdin.fileno(), on_stdin)
    clean = False
    try:
        loop.run_forever()
        clean = True
        loop.run_until_complete(agent.end_actors(ACTOR_END_S))
    finally:
        if dashboard is not None:
            dashboard.close()
        agent.close()
        for at_exit in closers_at_exit:
            at_exit()
        if clean:  # a crash keeps its log; the next look at the sessions removes it
            sessions.remove_record(os.getpid())
            sessions.remove_session_dir(session_dir)
            lifecycle.info("stopped")
        os._exit(0 if clean else 1)


def _publish(cfg: dict[str, Any], address: str, head_address: str | None, session: str) -> None:
    """Write this node's session record, so local tools find it (``sessions``)."""
    sessions.write_record(
        sessions.ClusterRecord(
            role="head" if head_address is None else "node",
            pid=os.getpid(),
            create_time=sessions.process_create_time(os.getpid()),
            address=head_address or address,
            node_address=address,
            token_file=os.path.join(session, "token"),
            session_dir=session,
            tls_cert=CONFIG.tls_cert or None,
            group=(cfg.get("labels") or {}).get("nbcluster.io/group"),
            **cfg.get("record", {"started_by": "cli"}),
        )
    )


def _fail(ready_fd: int, why: str) -> NoReturn:
    """Tell whoever started this node why it did not start, and exit."""
    log.error("%s", why)
    os.write(ready_fd, f"ERROR {why}".replace("\n", " ").encode() + b"\n")
    os._exit(1)


if __name__ == "__main__":
    main()

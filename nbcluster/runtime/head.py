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
from typing import Any

from nbcluster.runtime import events as ev
from nbcluster.runtime import sessions
from nbcluster.runtime.actor_manager import ActorManager
from nbcluster.runtime.event_log import EventLog
from nbcluster.runtime.fork_server import ForkServer
from nbcluster.runtime.ids import random_id
from nbcluster.runtime.node_agent import NodeAgent
from nbcluster.runtime.node_directory import NodeDirectory
from nbcluster.runtime.object_store import ObjectStore
from nbcluster.runtime.protocol import HELLO
from nbcluster.runtime.store_service import StoreService
from nbcluster.runtime.transport import (
    Connection,
    Endpoint,
    install_rpc,
    parse_address,
    tls_server_args,
)

log = logging.getLogger("nbcluster.node")
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
    from nbcluster.runtime.worker_main import run_worker

    run_worker(address, token, host, advertise)


def _advertised_host(host: str, head_address: str | None) -> str:
    """The address others should use for this node when it listens on all interfaces."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    if head_address:  # the interface that routes to the head is the one others can reach
        head_host, head_port = parse_address(head_address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect((head_host, head_port))
                return str(s.getsockname()[0])
            except OSError:
                pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("NBCLUSTER_LOG_LEVEL", "WARNING"),
        format="[nbcluster node %(asctime)s %(levelname)s] %(message)s",
    )
    cfg = json.loads(sys.stdin.readline())
    os.chdir(cfg.get("cwd") or os.getcwd())
    for p in reversed(cfg.get("sys_path") or []):
        if p not in sys.path:
            sys.path.insert(0, p)
    token: str = cfg["token"]
    head_address: str | None = cfg.get("head_address")
    host = cfg.get("host", "127.0.0.1")
    session_dir = cfg["session_dir"]
    store = ObjectStore(int(cfg["object_store_memory"]), os.path.join(session_dir, "spill"))
    sock = _bind(host, int(cfg.get("port", 0)))
    address = f"{_advertised_host(host, head_address)}:{sock.getsockname()[1]}"
    ready_fd = int(cfg["ready_fd"])
    local_address = f"127.0.0.1:{sock.getsockname()[1]}" if host in ("0.0.0.0", "") else address
    fork_server = ForkServer.start(
        lambda: _worker_main(token, local_address, host, parse_address(address)[0]),
        close_fds=[sock.fileno(), ready_fd],
    )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
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
    }
    closers = [agent.on_close]
    event_log: EventLog | None = None  # the head keeps the cluster's event log
    if head_address is None:
        directory = NodeDirectory(endpoint)
        event_log = EventLog(endpoint, directory)
        ActorManager(endpoint, agent, directory, address)
        directory.listeners.append(lambda view: agent.cluster_view_update(None, view))
        agent.report = lambda available: directory.node_update(None, node_id, available)
        directory.register_node(None, node_id, node_info)
        closers.append(directory.on_close)
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
                conn.send((HELLO, address, "agent", b"", os.getpid()))
                agent_conns[addr] = conn
            conn.notify(method, *args)

        if addr == address:
            endpoint.rpc[method](None, *args)
            return
        task = loop.create_task(go())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    agent_conns: dict[str, Connection] = {}
    storesvc.send_to_agent = send_to_agent

    def stop(*_: Any) -> None:
        loop.stop()

    if head_address is not None:
        loop.run_until_complete(_join(endpoint, agent, head_address, node_info, stop))
    ev.attach_node(agent, event_log.ingest if event_log is not None else None)
    agent.start_pool()
    loop.run_until_complete(
        loop.create_server(lambda: Connection(endpoint, True), sock=sock, **tls_server_args())
    )
    _publish(cfg, address, head_address, session_dir)
    os.write(ready_fd, f"READY {address} {node_id}\n".encode())
    os.close(ready_fd)
    role = "head node" if head_address is None else f"node (joined {head_address})"
    lifecycle.info("%s started at %s, pid %d", role, address, os.getpid())

    def stop_because(why: str) -> None:
        lifecycle.info("stopping: %s", why)
        stop()

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
    finally:
        agent.close()
        if clean:  # a crash keeps its log; the next look at the sessions removes it
            sessions.remove_record(os.getpid())
            sessions.remove_session_dir(session_dir)
            lifecycle.info("stopped")
        os._exit(0 if clean else 1)


def _publish(cfg: dict[str, Any], address: str, head_address: str | None, session: str) -> None:
    """Write this node's session record, so local tools find it (``sessions``)."""
    from nbcluster.runtime.config import CONFIG

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
            **cfg.get("record", {"started_by": "cli"}),
        )
    )


async def _join(
    endpoint: Endpoint, agent: NodeAgent, head_address: str, info: dict[str, Any], stop: Any
) -> None:
    """Join the head: register, take its view, report to it, and leave when it goes."""
    host, port = parse_address(head_address)
    conn = await endpoint.connect(host, port)
    conn.info["addr"] = head_address
    conn.send((HELLO, agent.address, "node", b"", os.getpid()))
    view = await conn.call("register_node", agent.node_id, info)
    agent.head_conn = conn
    agent.head_address = head_address
    agent.cluster_view_update(None, view)
    agent.report = lambda available: conn.notify("node_update", agent.node_id, available)
    agent.on_actor_worker_gone = lambda w: conn.notify("actor_worker_gone", w.worker_id)
    agent.on_owner_gone = lambda owner: conn.notify("owner_gone", owner)
    previous = endpoint.on_close

    def on_close(c: Connection) -> None:
        if c is conn:
            log.error("lost the head at %s: this node leaves the cluster", head_address)
            stop()
        elif previous is not None:
            previous(c)

    endpoint.on_close = on_close


if __name__ == "__main__":
    main()

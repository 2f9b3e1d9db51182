"""The head process: control service and this machine's node agent, in one event loop.

Started by ``nbcluster.init()`` (or the CLI) as a child process. Its configuration arrives as
one JSON line on stdin, and stdin then stays open as a lifeline: when the parent exits, even
by SIGKILL, stdin reaches EOF and the head stops its workers and exits, so no process and no
shared memory of the cluster outlives its driver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

from nbcluster.runtime.actor_manager import ActorManager
from nbcluster.runtime.fork_server import ForkServer
from nbcluster.runtime.ids import random_id
from nbcluster.runtime.node_agent import NodeAgent
from nbcluster.runtime.object_store import ObjectStore
from nbcluster.runtime.transport import Connection, Endpoint, install_rpc

log = logging.getLogger("nbcluster.head")


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _worker_main(cfg: dict[str, Any], address: str) -> None:
    from nbcluster.runtime.worker_main import run_worker

    run_worker(address, cfg["token"])


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("NBCLUSTER_LOG_LEVEL", "WARNING"),
        format="[nbcluster head %(asctime)s %(levelname)s] %(message)s",
    )
    cfg = json.loads(sys.stdin.readline())
    os.chdir(cfg.get("cwd") or os.getcwd())
    for p in reversed(cfg.get("sys_path") or []):
        if p not in sys.path:
            sys.path.insert(0, p)
    session_dir = cfg["session_dir"]
    store = ObjectStore(int(cfg["object_store_memory"]), os.path.join(session_dir, "spill"))
    sock = _bind(cfg.get("host", "127.0.0.1"), int(cfg.get("port", 0)))
    port = sock.getsockname()[1]
    host = cfg.get("host", "127.0.0.1")
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    address = f"{connect_host}:{port}"
    ready_fd = int(cfg["ready_fd"])
    fork_server = ForkServer.start(
        lambda: _worker_main(cfg, address), close_fds=[sock.fileno(), ready_fd]
    )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    endpoint = Endpoint(loop, cfg["token"])
    import threading

    endpoint.loop_thread = threading.get_ident()
    install_rpc(endpoint)
    agent = NodeAgent(
        endpoint, random_id().hex(), cfg["resources"], store, fork_server, session_dir
    )
    endpoint.on_close = agent.on_close
    actors = ActorManager(endpoint, agent, address)
    agent.on_owner_gone = actors.on_owner_gone
    agent.start_pool()
    loop.run_until_complete(loop.create_server(lambda: Connection(endpoint, True), sock=sock))
    os.write(ready_fd, f"READY {address}\n".encode())
    os.close(ready_fd)

    def stop(*_: Any) -> None:
        loop.stop()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # the driver's Ctrl-C is not ours

    def on_stdin() -> None:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            stop()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        loop.run_forever()
    finally:
        agent.close()
        os._exit(0)


if __name__ == "__main__":
    main()

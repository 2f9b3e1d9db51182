"""The head's own dashboard: its port is bound at once, its web server starts on first use.

The dashboard (``nbcluster.dashboard``) is a tornado application; importing tornado and
building it costs the head about 0.1 s, which would add a third to a cold start. So the head
binds the port (so the address is known and stays ours) and only when the first connection
arrives on it imports the web server and hands it the socket. A head without a dashboard
opens the port when asked (``dash_login`` from ``nc.dashboard_url()`` or ``nbcluster
dashboard``).

The dashboard is behind the cluster token. A browser logs in with a one-time link: a random
login token, valid once and for ``dashboard_login_ttl_s``, that the web server exchanges for
a cookie, so the cluster token itself is never in a URL, a browser history or a page.

RPCs (any authenticated connection, that is: holders of the cluster token): ``dash_info``,
``dash_login``, ``dash_stop``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.wire.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from nbcluster.runtime.wire.transport import Connection, Endpoint

log = logging.getLogger("nbcluster.dashboard")

#: The path prefix of everything the dashboard serves (also under Jupyter's base_url).
PREFIX = "/nbcluster/"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for the dashboard, or an ``OSError`` that says which address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"the dashboard cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(128)
    sock.setblocking(False)
    return sock


class DashboardPort:
    """The head's dashboard listener, its login tokens, and what clusters say of themselves."""

    def __init__(
        self,
        endpoint: Endpoint,
        cluster_id: str,
        head_address: str,
        local_address: str,
        session_dir: str,
        stop: Callable[[], None],
        kind: str = "driver",
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.loop = endpoint.loop
        self.cluster_id = cluster_id
        self.token = endpoint.token
        self.head_address = head_address
        #: where the web server reaches the head's own port (127.0.0.1 when bound to all)
        self.local_address = local_address
        self.session_dir = session_dir
        self.started = time.time()
        self.address: str | None = None  # HOST:PORT once bound
        self.server: Any = None  # the web server, once started
        self._sock: socket.socket | None = None
        self._logins: dict[str, float] = {}  # one-time login token -> deadline (monotonic)
        self._stop = stop
        #: "standalone" (``nbcluster start``) or "driver" (a script's or a kernel's ``init``)
        self.kind = kind
        self._describe = describe
        rpc = endpoint.rpc
        rpc["dash_info"] = self.info
        rpc["dash_login"] = self.login
        rpc["dash_stop"] = self.stop

    # -- the port --------------------------------------------------------------------------------
    def open(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind the dashboard's port (once) and return its ``HOST:PORT``; the web server
        starts when the first connection arrives."""
        if self.address is not None:
            return self.address
        return self.adopt(bind(host, port), host)

    def adopt(self, sock: socket.socket, host: str) -> str:
        """Serve the dashboard on ``sock`` (bound by ``bind``), from its first connection."""
        self._sock = sock
        bound_port = sock.getsockname()[1]
        shown = host
        if host in ("0.0.0.0", "::", ""):  # reachable from elsewhere: name this machine
            shown = self.head_address.rpartition(":")[0] or socket.gethostname()
        self.address = f"{shown}:{bound_port}"
        self.loop.add_reader(sock.fileno(), self._first_connection)
        return self.address

    def _first_connection(self) -> None:
        sock = self._sock
        if sock is None or self.server is not None:
            return
        self.loop.remove_reader(sock.fileno())
        try:
            from nbcluster.dashboard.head_server import serve

            self.server = serve(self, sock)
        except Exception:
            log.exception("the dashboard web server did not start")
            sock.close()
            self._sock = None
            self.address = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        elif self._sock is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
        self._sock = None

    # -- logins ----------------------------------------------------------------------------------
    def new_login(self) -> str:
        now = time.monotonic()
        for tok in [t for t, deadline in self._logins.items() if deadline < now]:
            del self._logins[tok]
        tok = secrets.token_urlsafe(24)
        self._logins[tok] = now + CONFIG.dashboard_login_ttl_s
        return tok

    def use_login(self, tok: str) -> bool:
        """Whether ``tok`` is a valid login token; it is spent either way."""
        deadline = self._logins.pop(tok, None)
        return deadline is not None and deadline >= time.monotonic()

    # -- RPCs ------------------------------------------------------------------------------------
    def info(self, conn: Connection | None) -> dict[str, Any]:
        """Who this cluster is: what lists of clusters show and check before talking to it."""
        from nbcluster import __version__

        return {
            "cluster_id": self.cluster_id,
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
            "address": self.head_address,
            "session_dir": self.session_dir,
            "pid": os.getpid(),
            "started": self.started,
            "dashboard": self.address,
            "kind": self.kind,
            **(self._describe() if self._describe is not None else {}),
        }

    def login(
        self, conn: Connection | None, host: str | None = None, port: int | None = None
    ) -> dict[str, Any]:
        """A one-time login URL for the head's dashboard, opening its port if it is not open
        yet (on ``host``/``port``; default 127.0.0.1 and any free port)."""
        address = self.open(host or "127.0.0.1", port or 0)
        tok = self.new_login()
        return {
            "address": address,
            "url": f"http://{address}{PREFIX}login?token={tok}",
            "cluster_id": self.cluster_id,
        }

    def stop(self, conn: Connection | None) -> bool:
        """Stop the whole cluster, after this reply is on its way."""
        log.warning("the cluster is being stopped from its dashboard")
        self.loop.call_later(0.05, self._stop)
        return True

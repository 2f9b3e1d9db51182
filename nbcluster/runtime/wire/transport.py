"""Authenticated, batched message connections over TCP, on an asyncio event loop.

Every connection starts with the token handshake of :mod:`auth`; until it succeeds the peer's
bytes are only compared against fixed-size expectations, never decoded. After it, each side
sends a stream of msgpack arrays ``[type, field, ...]``.

Writes are batched: ``send`` appends the packed message to the connection's queue and schedules
one flush per event-loop tick, so a burst of a thousand task submissions costs one syscall,
not a thousand. ``send`` may be called from any thread; that is how a driver's user thread
submits work without a round trip through the loop.

A generic request/reply layer (``call`` / ``Request`` / ``Reply``) serves the control plane;
the hot path (task push and reply) uses dedicated message types handled by the owner.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgpack

from nbcluster.exceptions import AuthenticationError, ClusterConnectionError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.wire import auth, tls, user_auth
from nbcluster.runtime.wire.addresses import dial_host
from nbcluster.runtime.wire.protocol import MESSAGE_NAMES, REPLY, REQUEST, TYPES, notification

log = logging.getLogger("nbcluster.transport")
#: Why a plain client may have failed: the cluster it dialled speaks TLS.
NO_TLS_HINT = " (if the cluster uses TLS, set NBCLUSTER_TLS_CERT)"


class Malformed(Exception):
    """Bytes from an authenticated peer that do not decode to a message."""

Handler = Callable[["Connection", Any], None]
_Record = TypeVar("_Record", bound=tuple[Any, ...])
RpcHandler = Callable[..., Any]


class Endpoint:
    """What connections of one process share: the loop, the token and the dispatch tables."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: str) -> None:
        self.loop = loop
        self.token = token
        self.handlers: dict[int, Handler] = {}
        #: Message type -> its record (``protocol``): frames of these types reach their
        #: handler decoded; a frame that does not fit its record is malformed input.
        self.decoders: dict[int, Callable[..., Any]] = {}
        self.rpc: dict[str, RpcHandler] = {}
        self.on_open: Callable[[Connection], None] | None = None
        self.on_close: Callable[[Connection], None] | None = None
        self.loop_thread: int | None = None
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[Connection] = set()  # every open one, to close at shutdown
        #: Other tokens a server side accepts, each for a narrow purpose: token -> (label,
        #: the only request methods such a connection may call). Node join tokens.
        self.restricted_tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self._req_ids = itertools.count(1)
        # Users of a shared cluster (see ``user_auth``): the user this process belongs to
        # (``token`` is then their user key), a Hub token to log in with first, and on
        # the head of a JupyterHub service, how to check one.
        self.user: str | None = None
        self.login: str | None = None
        self.hub_login: user_auth.HubLogin | None = None
        self.accept_users = CONFIG.jupyterhub  # a JupyterHub service's processes do

    def next_req_id(self) -> int:
        return next(self._req_ids)

    def on(self, record: type[_Record], handler: Callable[[Connection, _Record], None]) -> None:
        """Handle the messages of ``record``'s type (a ``protocol`` record) with ``handler``,
        which receives each one decoded."""
        code = TYPES[record]
        self.decoders[code] = record
        self.handlers[code] = handler

    async def serve(self, host: str, port: int) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            lambda: Connection(self, server_side=True), host, port, reuse_address=True,
            **tls_server_args(),
        )  # fmt: skip
        self.servers.append(server)  # closed with the endpoint's process's cluster
        return server

    async def connect(self, host: str, port: int, timeout: float | None = None) -> Connection:
        timeout = CONFIG.handshake_timeout_s if timeout is None else timeout
        host = dial_host(host)
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: Connection(self, server_side=False), host, port, **tls_client_args()
                ),
                timeout,
            )
        except (OSError, asyncio.TimeoutError) as e:
            why = str(e) or type(e).__name__
            if isinstance(e, ssl.SSLError):
                why += " (does the cluster use TLS with the certificate in NBCLUSTER_TLS_CERT?)"
            raise ClusterConnectionError(f"cannot connect to {host}:{port}: {why}") from e
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
        except asyncio.TimeoutError:
            conn.close()
            hint = "" if tls.enabled() else NO_TLS_HINT
            raise ClusterConnectionError(
                f"{host}:{port} did not complete the nbcluster handshake within {timeout:g} s"
                f"{hint}"
            ) from None
        return conn


class Connection(asyncio.Protocol):
    """One authenticated peer. Application state about the peer lives in ``info``."""

    def __init__(self, endpoint: Endpoint, server_side: bool) -> None:
        self.endpoint = endpoint
        self.server_side = server_side
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.ready: asyncio.Future[None] = endpoint.loop.create_future()
        self.closed = False
        self.info: dict[str, Any] = {}
        self._authed = False
        # The handshake's state, shared with ``user_auth`` (its variant for Hub users):
        # bytes received so far, our challenge, the key we prove (client side), and whether
        # a Hub login is being checked.
        self.hs_buf = b""
        self.nonce = b""
        self._unpacker = msgpack.Unpacker(
            max_buffer_size=CONFIG.max_frame_bytes, raw=False, strict_map_key=False
        )
        self._out: collections.deque[bytes] = collections.deque()
        self._flush_scheduled = False
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._hs_timer: asyncio.TimerHandle | None = None
        #: Set when the peer authenticated with a restricted token: what it may call.
        self.allowed: frozenset[str] | None = None
        #: The user the peer proved to be (``user_auth``); None for the cluster's own.
        self.user: str | None = None
        self.hs_key = ""
        self.login_pending = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.endpoint.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._hs_timer = self.endpoint.loop.call_later(
            CONFIG.handshake_timeout_s, self._handshake_timeout
        )
        if self.server_side:
            user = self.endpoint.user
            self.nonce, hello = auth.server_hello() if user is None else user_auth.user_hello(user)
            transport.write(hello)

    def data_received(self, data: bytes) -> None:
        if not self._authed:
            self._handshake(data)
            return
        handlers = self.endpoint.handlers
        try:
            self._unpacker.feed(data)
            decoders = self.endpoint.decoders
            for msg in self._unpacker:
                try:
                    handler = handlers[msg[0]]
                    decode = decoders.get(msg[0])
                    message = msg if decode is None else decode(*msg[1:])
                except (KeyError, TypeError, IndexError):
                    raise Malformed(f"not a message: {msg!r:.100}") from None
                if self.allowed is not None and not self._permitted(msg):
                    continue
                try:
                    handler(self, message)
                except Exception:  # our bug (or the sender's), not garbage: keep the link
                    self._handler_failed(msg)
        except Exception as e:  # undecodable input from an authenticated peer: drop the link
            log.warning("bad message from %s: %r; closing", self.peer, e)
            self.close()

    def _handler_failed(self, msg: list[Any]) -> None:
        """A message decoded but its handler raised: log the traceback and, for a request,
        answer with the error, as any failed request is answered."""
        kind = MESSAGE_NAMES.get(msg[0], str(msg[0]))
        log.error("handling a %s message from %s failed", kind, self.peer, exc_info=True)
        if msg[0] == REQUEST and len(msg) > 1 and isinstance(msg[1], int) and msg[1]:
            err = sys.exc_info()[1]
            self.send((REPLY, msg[1], False, _error_wire(err or Exception("bad request"))))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.endpoint.connections.discard(self)
        if self._hs_timer:
            self._hs_timer.cancel()
        if not self.ready.done():
            # A TLS server drops a plain client's first bytes: say the likely cause.
            hint = "" if self.server_side or tls.enabled() else NO_TLS_HINT
            self.ready.set_exception(
                ClusterConnectionError(f"connection to {self.peer} closed during handshake{hint}")
            )
            self.ready.exception()  # mark retrieved
        err = ClusterConnectionError(f"connection to {self.peer} lost")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if self._authed and self.endpoint.on_close:
            self.endpoint.on_close(self)

    # -- handshake --------------------------------------------------------------------------
    def _handshake(self, data: bytes) -> None:
        self.hs_buf += data
        token = self.endpoint.token
        assert self.transport is not None
        if self.server_side:
            if len(self.hs_buf) >= 4 and self.hs_buf[:4] != auth.MAGIC:
                if self.hs_buf[:4] in user_auth.REPLY_MAGICS:
                    user_auth.server_step(self)
                else:
                    self.deny("not an nbcluster client (bad magic)")
                return
            if len(self.hs_buf) < auth.CLIENT_REPLY_LEN:
                return
            if len(self.hs_buf) > auth.CLIENT_REPLY_LEN:
                self.deny("data before authentication")
                return
            finish = auth.server_check(token, self.nonce, self.hs_buf)
            if finish is None:
                for other, (label, allowed) in self.endpoint.restricted_tokens.items():
                    finish = auth.server_check(other, self.nonce, self.hs_buf)
                    if finish is not None:
                        self.allowed = allowed
                        self.info["token_label"] = label
                        break
            if finish is None:
                self.deny("wrong token")
                return
            self.transport.write(finish)
            self.handshake_done()
        else:
            ep = self.endpoint
            if self.hs_key or ep.user or ep.login or self.hs_buf[:4] == user_auth.UHELLO:
                user_auth.client_step(self)
                return
            if not self.nonce:
                if len(self.hs_buf) < auth.SERVER_HELLO_LEN:
                    return
                hello, self.hs_buf = (
                    self.hs_buf[: auth.SERVER_HELLO_LEN],
                    self.hs_buf[auth.SERVER_HELLO_LEN :],
                )
                answer = auth.client_reply(token, hello)
                if answer is None:
                    self.fail_handshake("the server is not an nbcluster node")
                    return
                self.nonce, reply = answer
                self.transport.write(reply)
            if self.hs_buf[:4] == auth.DENY:
                self.fail_handshake("authentication failed: the cluster rejected our token")
                return
            if len(self.hs_buf) < auth.SERVER_FINISH_LEN:
                return
            finish, rest = (
                self.hs_buf[: auth.SERVER_FINISH_LEN],
                self.hs_buf[auth.SERVER_FINISH_LEN :],
            )
            if not auth.client_check(token, self.nonce, finish):
                self.fail_handshake("authentication failed: the server does not hold our token")
                return
            self.handshake_done()
            if rest:
                self.data_received(rest)

    def handshake_done(self) -> None:
        """The peer proved itself: messages flow from now on."""
        self._authed = True
        self.hs_buf = b""
        if self._hs_timer:
            self._hs_timer.cancel()
        if self.endpoint.on_open:
            self.endpoint.on_open(self)
        if not self.ready.done():
            self.ready.set_result(None)

    def _permitted(self, msg: list[Any]) -> bool:
        """For a restricted peer: only requests for its allowed methods pass; any other
        request is answered with why not, any other message dropped."""
        assert self.allowed is not None
        if msg[0] != REQUEST:
            return False
        if msg[2] in self.allowed:
            return True
        log.warning(
            "refused %r from %s: it authenticated with a %s", msg[2], self.peer,
            self.info.get("token_label"),
        )  # fmt: skip
        if msg[1]:
            why = (
                f"this connection authenticated with a {self.info.get('token_label')}, which "
                "is only good for joining the cluster as a node (nbcluster start --address); "
                "a driver needs the cluster token"
            )
            self.send((REPLY, msg[1], False, ["AuthenticationError", why]))
        return False

    def deny(self, why: str) -> None:
        """Refuse a peer during the handshake (server side), saying why in the log."""
        log.warning("refused connection from %s: %s", self.peer, why)
        assert self.transport is not None
        self.transport.write(auth.DENY)
        self.transport.close()

    def fail_handshake(self, why: str) -> None:
        """Our handshake with the server failed (client side): the connect raises ``why``."""
        if not self.ready.done():
            self.ready.set_exception(AuthenticationError(f"{why} ({self.peer})"))
        assert self.transport is not None
        self.transport.close()

    def _handshake_timeout(self) -> None:
        if not self._authed:
            log.warning("refused connection from %s: handshake timed out", self.peer)
            if self.transport:
                self.transport.abort()

    # -- sending ----------------------------------------------------------------------------
    def send(self, msg: list[Any] | tuple[Any, ...]) -> None:
        """Queue a message; flushed once per loop tick. Safe from any thread."""
        self.send_raw(msgpack.packb(msg))

    def post(self, record: tuple[Any, ...]) -> None:
        """Queue a ``protocol`` record (its type, then its fields). Safe from any thread."""
        self.send_raw(msgpack.packb((TYPES[type(record)], *record)))

    def send_raw(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            ep = self.endpoint
            if threading.get_ident() == ep.loop_thread:
                ep.loop.call_soon(self._flush)
            else:
                ep.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None or self.closed:
            out.clear()
            return
        if len(out) == 1:
            self.transport.write(out.popleft())
            return
        parts = []
        while out:
            parts.append(out.popleft())
        self.transport.write(b"".join(parts))

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()

    # -- request / reply --------------------------------------------------------------------
    def notify(self, method: str, *args: Any) -> None:
        """A request that wants no reply. Safe from any thread."""
        self.send(notification(method, *args))

    def call(self, method: str, *args: Any) -> asyncio.Future[Any]:
        """Send a request (from the loop thread) and return a future for its reply."""
        req_id = self.endpoint.next_req_id()
        fut: asyncio.Future[Any] = self.endpoint.loop.create_future()
        if self.closed:
            fut.set_exception(ClusterConnectionError(f"connection to {self.peer} is closed"))
            return fut
        self._pending[req_id] = fut
        self.send((REQUEST, req_id, method, list(args)))
        return fut

    def handle_request(self, msg: list[Any]) -> None:
        _, req_id, method, args = msg
        fn = self.endpoint.rpc.get(method)
        if fn is None:
            self.send((REPLY, req_id, False, f"unknown method {method!r}"))
            return
        try:
            result = fn(self, *args)
        except Exception as e:
            log.debug("request %s from %s failed", method, self.peer, exc_info=True)
            if req_id:
                self.send((REPLY, req_id, False, _error_wire(e)))
            return
        if isinstance(result, (asyncio.Future, Awaitable)):
            fut = asyncio.ensure_future(result)
            fut.add_done_callback(lambda f: self._reply_later(req_id, f))
        elif req_id:  # request id 0: a notification, no reply wanted
            self.send((REPLY, req_id, True, result))

    def _reply_later(self, req_id: int, fut: asyncio.Future[Any]) -> None:
        if not req_id:
            if not fut.cancelled() and fut.exception() is not None:
                log.warning("notification from %s failed: %r", self.peer, fut.exception())
            return
        if fut.cancelled():
            self.send((REPLY, req_id, False, ["CancelledError", "cancelled"]))
        elif (e := fut.exception()) is not None:
            self.send((REPLY, req_id, False, _error_wire(e)))
        else:
            self.send((REPLY, req_id, True, fut.result()))

    def handle_reply(self, msg: list[Any]) -> None:
        _, req_id, ok, result = msg
        fut = self._pending.pop(req_id, None)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(result)
        else:
            fut.set_exception(_error_from_wire(result))

    def _handshake_done(self) -> bool:
        return self._authed


class RemoteCallError(Exception):
    """A control-plane request failed on the other side; the message says why."""


def _error_wire(e: BaseException) -> list[str]:
    return [type(e).__name__, str(e)]


def _error_from_wire(wire: Any) -> Exception:
    """Re-raise a remote request's error as its own type when it is one callers catch."""
    from nbcluster import exceptions

    if not isinstance(wire, list) or len(wire) != 2:
        return RemoteCallError(str(wire))
    name, message = wire
    cls = _REMOTE_ERRORS.get(name) or getattr(exceptions, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ in (
        "builtins", "nbcluster.exceptions"
    ):  # fmt: skip
        try:
            return cls(message)
        except TypeError:
            pass
    return RemoteCallError(f"{name}: {message}")


_REMOTE_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "LookupError": LookupError,
    "RuntimeError": RuntimeError,
    "PermissionError": PermissionError,
}


def install_rpc(endpoint: Endpoint) -> None:
    endpoint.handlers[REQUEST] = lambda conn, msg: conn.handle_request(msg)
    endpoint.handlers[REPLY] = lambda conn, msg: conn.handle_reply(msg)


def tls_server_args() -> dict[str, Any]:
    """Keyword arguments that make an asyncio server speak TLS, when the cluster uses it."""
    ctx = tls.server_context()
    if ctx is None:
        return {}
    return {"ssl": ctx, "ssl_handshake_timeout": CONFIG.handshake_timeout_s}


def tls_client_args() -> dict[str, Any]:
    ctx = tls.client_context()
    if ctx is None:
        return {}
    return {
        "ssl": ctx,
        "server_hostname": "nbcluster",
        "ssl_handshake_timeout": CONFIG.handshake_timeout_s,
    }


def parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad address {address!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)

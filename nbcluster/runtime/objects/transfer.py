"""Moving an object's bytes from one node's store into another's.

Transfers use their own authenticated socket per pull, served by a thread with blocking I/O:
the sender hands the kernel a memoryview of its shared-memory arena (``sendall``) and the
receiver reads straight into the space it allocated in its own arena (``recv_into``), so no
whole-object copy is ever made in Python memory on either side, and the event loops stay free.

Wire format after the token handshake (``auth``): the puller sends the object id (a length
byte and the id); the server answers an 8-byte size (all ones if it does not have the object)
followed by exactly that many bytes.

A peer that freezes or is cut off must not hold anything forever: both sides give up when
the other makes no progress for ``node_timeout_s`` (the sender then releases its pin on the
object), and a pull from a node the head declares dead is aborted at once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from nbcluster.exceptions import AuthenticationError, ObjectLostError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.wire import auth, tls
from nbcluster.runtime.wire.addresses import dial_host
from nbcluster.runtime.wire.transport import parse_address

log = logging.getLogger("nbcluster.transfer")

_SIZE = struct.Struct("<Q")
MISSING = (1 << 64) - 1
CHUNK = 8 << 20

# Given an object id: pin it and return (memoryview of its bytes, release callback), or None.
OpenFn = Callable[[bytes], "tuple[memoryview, Callable[[], None]] | None"]


def _recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Read exactly ``n`` bytes; with ``deadline`` (monotonic), all of them by then."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("handshake not finished in time")
            sock.settimeout(left)
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("peer closed the transfer connection")
        got += k
    return bytes(buf)


def client_handshake(sock: socket.socket, token: str) -> None:
    hello = _recv_exact(sock, auth.SERVER_HELLO_LEN)
    answer = auth.client_reply(token, hello)
    if answer is None:
        raise AuthenticationError("the transfer peer is not an nbcluster node")
    nonces, reply = answer
    sock.sendall(reply)
    first = _recv_exact(sock, 4)
    if first == auth.DENY:
        raise AuthenticationError("authentication failed: the node rejected our token")
    finish = first + _recv_exact(sock, auth.SERVER_FINISH_LEN - 4)
    if not auth.client_check(token, nonces, finish):
        raise AuthenticationError("authentication failed: the node does not hold our token")


def server_handshake(sock: socket.socket, token: str) -> bool:
    """The server's side; the whole handshake must finish within the handshake timeout, so a
    peer trickling bytes cannot hold a thread."""
    deadline = time.monotonic() + CONFIG.handshake_timeout_s
    nonce, hello = auth.server_hello()
    sock.sendall(hello)
    reply = _recv_exact(sock, auth.CLIENT_REPLY_LEN, deadline)
    finish = auth.server_check(token, nonce, reply)
    if finish is None:
        sock.sendall(auth.DENY)
        return False
    sock.sendall(finish)
    return True


class TransferServer:
    """Serves this node's objects to pulling nodes, one thread per connection."""

    def __init__(self, host: str, token: str, open_object: OpenFn) -> None:
        self.token = token
        self._open = open_object
        self.sock = socket.create_server((host, 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self._extra: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="transfer-accept", daemon=True).start()

    def listen_also(self, host: str) -> None:
        """Serve on ``host`` too, on the same port (see ``exposure``)."""
        sock = socket.create_server((host, self.port), backlog=64)
        self._extra.append(sock)
        threading.Thread(
            target=self._accept, args=(sock,), name="transfer-accept", daemon=True
        ).start()

    def _accept(self, sock: socket.socket | None = None) -> None:
        sock = sock or self.sock
        while not self._closed:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn, peer), name="transfer", daemon=True
            ).start()

    def _serve(self, conn: socket.socket, peer: Any) -> None:
        with conn:
            conn.settimeout(CONFIG.handshake_timeout_s)
            try:
                ctx = tls.server_context()
                if ctx is not None:
                    conn = ctx.wrap_socket(conn, server_side=True)
                if not server_handshake(conn, self.token):
                    log.warning("refused transfer connection from %s: wrong token", peer)
                    return
                # A puller that stops reading (frozen, cut off) makes sendall fail here
                # instead of holding this thread and the object's pin forever.
                conn.settimeout(CONFIG.node_timeout_s)
                while True:
                    try:
                        head = conn.recv(1)
                    except TimeoutError:
                        return  # an idle connection: pullers open one per object
                    if not head:
                        return
                    oid = _recv_exact(conn, head[0])
                    got = self._open(oid)
                    if got is None:
                        conn.sendall(_SIZE.pack(MISSING))
                        continue
                    view, release = got
                    try:
                        conn.sendall(_SIZE.pack(view.nbytes))
                        for off in range(0, view.nbytes, CHUNK):
                            conn.sendall(view[off : off + CHUNK])
                    finally:
                        view.release()
                        release()
            except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as e:
                log.warning("transfer connection from %s failed: %s", peer, e)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for sock in self._extra:
            sock.close()


class Puller:
    """Pulls objects from other nodes; concurrent requests for one object share one pull."""

    def __init__(self, token: str) -> None:
        self.token = token
        self._inflight: dict[bytes, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()
        #: open transfer sockets by the transfer address they pull from
        self._sockets: dict[str, set[socket.socket]] = {}

    def abort(self, source: str) -> None:
        """The node serving ``source`` is dead: fail the pulls from it now."""
        with self._lock:
            socks = list(self._sockets.get(source, ()))
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def pull(
        self,
        oid: bytes,
        source: str,
        allocate: Callable[[int], memoryview],
        done: Callable[[BaseException | None], None],
    ) -> concurrent.futures.Future[None]:
        """Start (or join) a pull of ``oid`` from the transfer server at ``source``.

        ``allocate(size)`` returns the writable arena view to fill (called from the pulling
        thread); ``done(error)`` seals or aborts it.
        """
        with self._lock:
            fut = self._inflight.get(oid)
            if fut is not None:
                return fut
            fut = concurrent.futures.Future()
            self._inflight[oid] = fut

        def run() -> None:
            err: BaseException | None = None
            try:
                self._fetch(oid, source, allocate)
            except BaseException as e:
                err = e
            try:
                done(err)
            finally:
                with self._lock:
                    self._inflight.pop(oid, None)
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(err)

        threading.Thread(target=run, name="pull", daemon=True).start()
        return fut

    def _fetch(self, oid: bytes, source: str, allocate: Callable[[int], memoryview]) -> None:
        host, port = parse_address(source)
        host = dial_host(host)
        with socket.create_connection((host, port), timeout=CONFIG.handshake_timeout_s) as raw:
            with self._lock:
                self._sockets.setdefault(source, set()).add(raw)
            try:
                self._fetch_on(raw, oid, source, allocate)
            finally:
                with self._lock:
                    socks = self._sockets.get(source)
                    if socks is not None:
                        socks.discard(raw)
                        if not socks:
                            del self._sockets[source]

    def _fetch_on(
        self, raw: socket.socket, oid: bytes, source: str, allocate: Callable[[int], memoryview]
    ) -> None:
        ctx = tls.client_context()
        sock = ctx.wrap_socket(raw, server_hostname="nbcluster") if ctx is not None else raw
        client_handshake(sock, self.token)
        sock.settimeout(CONFIG.node_timeout_s)  # a sender that stops sending is given up
        sock.sendall(bytes([len(oid)]) + oid)
        (size,) = _SIZE.unpack(_recv_exact(sock, _SIZE.size))
        if size == MISSING:
            raise ObjectLostError(oid.hex(), f"the node at {source} no longer has it")
        dest = allocate(size)
        got = 0
        while got < size:
            k = sock.recv_into(dest[got:], min(CHUNK, size - got))
            if k == 0:
                raise ConnectionError(f"the node at {source} closed the transfer")
            got += k
        dest.release()

"""Users of a shared cluster: a JupyterHub login and per-user keys, beside the cluster token.

A cluster run as a JupyterHub service serves users who never see its token. A user's
process proves who it is in one of two ways, both next to the token handshake of ``auth``,
whose bytes and cost do not change (a connection takes these paths only when its first
bytes say so):

* **Hub login**, to the head only: the client sends its JupyterHub API token; the head asks
  the Hub whose it is and whether its scopes allow this service (``hub_service``), and
  answers with the user's name and *user key*, ``HMAC(cluster token, name)``.
* **User key**, to any process of the cluster: the token handshake keyed with the user key,
  naming the user. Every cluster process derives the same key from the cluster token, so
  it checks the proof with no call to the Hub, and tags the connection with the name
  (``Connection.user``), which the service's policies read.

A user's own process serves with its user key and names its user in its hello; cluster
processes derive that user's key to connect to it, other users cannot.

Wire format, besides ``auth``'s (names are UTF-8, at most 255 bytes; lengths big-endian):
  user server hello:  UHELLO + nonce_s + len(1) + name
  user-key reply:     UMAGIC + nonce_c + hmac(key, c|ns|nc) + len(1) + name
  hub login reply:    HMAGIC + nonce_c + len(2) + hub token
  login answer:       OK + len(1) + name + user key (64 hex)   or   DENY + len(2) + reason
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.wire import auth

if TYPE_CHECKING:
    from nbcluster.runtime.wire.transport import Connection

log = logging.getLogger("nbcluster.transport")

UHELLO = b"NBU0"
UMAGIC = b"NBU1"
HMAGIC = b"NBH1"
#: First bytes of the client replies this module handles on the server side.
REPLY_MAGICS = (UMAGIC, HMAGIC)
MAX_NAME = 255
MAX_HUB_TOKEN = 4096
KEY_LEN = 64

#: Asks the Hub who owns a token; returns the user's name or raises ``LoginRefused``.
HubLogin = Callable[[str], Coroutine[Any, Any, str]]


class LoginRefused(Exception):
    """The Hub token is invalid, or its user may not use this cluster (the reason says)."""


def user_key(cluster_token: str, name: str) -> str:
    """The key a user's processes hold instead of the cluster token."""
    return hmac.new(
        cluster_token.encode(), b"nbcluster user\0" + name.encode(), hashlib.sha256
    ).hexdigest()


def _name_bytes(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= MAX_NAME:
        raise ValueError(f"a user name must be 1 to {MAX_NAME} bytes of UTF-8: {name!r}")
    return bytes([len(raw)]) + raw


def user_hello(name: str) -> tuple[bytes, bytes]:
    """The hello of a server that holds only ``name``'s user key."""
    nonce, hello = auth.server_hello()
    return nonce, UHELLO + hello[len(auth.MAGIC) :] + _name_bytes(name)


# -- server side -------------------------------------------------------------------------------
def server_step(conn: Connection) -> None:
    """Handle a user-key or Hub-login reply in ``conn.hs_buf`` (its first bytes said so)."""
    buf = conn.hs_buf
    ep = conn.endpoint
    if conn.login_pending:
        conn.deny("data before authentication")
    elif buf[:4] == UMAGIC:
        end = auth.CLIENT_REPLY_LEN + 1
        if len(buf) < end or len(buf) < end + buf[auth.CLIENT_REPLY_LEN]:
            return
        end += buf[auth.CLIENT_REPLY_LEN]
        name = _decode(buf[auth.CLIENT_REPLY_LEN + 1 : end])
        if len(buf) > end:
            conn.deny("data before authentication")
        elif name is None or ep.user is not None or not ep.accept_users:
            conn.deny("user keys are accepted by the nodes of a JupyterHub service only")
        else:
            reply = auth.MAGIC + buf[4 : auth.CLIENT_REPLY_LEN]
            finish = auth.server_check(user_key(ep.token, name), conn.nonce, reply)
            if finish is None:
                conn.deny(f"wrong user key for {name!r}")
                return
            assert conn.transport is not None
            conn.transport.write(finish)
            conn.user = name
            conn.handshake_done()
    else:  # HMAGIC
        start = len(HMAGIC) + auth.NONCE + 2
        if len(buf) < start:
            return
        size = int.from_bytes(buf[start - 2 : start], "big")
        if ep.hub_login is None or size > MAX_HUB_TOKEN:
            conn.deny("not the head of a JupyterHub service" if ep.hub_login is None
                       else "oversized login")  # fmt: skip
            return
        if len(buf) < start + size:
            return
        if len(buf) > start + size:
            conn.deny("data before authentication")
            return
        conn.login_pending = True
        hub_token = buf[start:].decode("ascii", "replace")
        task = ep.loop.create_task(ep.hub_login(hub_token))
        task.add_done_callback(lambda t: _login_done(conn, t))


def _login_done(conn: Connection, task: asyncio.Task[str]) -> None:
    if conn.closed or conn.transport is None:
        return
    err = task.exception() if not task.cancelled() else LoginRefused("cancelled")
    if err is not None:
        why = str(err) if isinstance(err, LoginRefused) else f"the Hub did not answer: {err!r}"
        log.warning("refused JupyterHub login from %s: %s", conn.peer, why)
        raw = why.encode()[:4000]
        conn.transport.write(auth.DENY + len(raw).to_bytes(2, "big") + raw)
        conn.transport.close()
        return
    name: str = task.result()
    key = user_key(conn.endpoint.token, name)
    conn.transport.write(auth.OK + _name_bytes(name) + key.encode())
    conn.user = name
    conn.handshake_done()


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


# -- client side -------------------------------------------------------------------------------
def client_step(conn: Connection) -> None:
    """The client side of every handshake that involves a user (see the module docstring)."""
    ep = conn.endpoint
    if not conn.nonce and not _answer_hello(conn):
        return
    buf = conn.hs_buf
    if conn.hs_key == "login":
        _finish_login(conn, buf)
        return
    if buf[:4] == auth.DENY:
        who = f"user {ep.user!r}" if ep.user else "the cluster token"
        conn.fail_handshake(f"authentication failed: the cluster refused {who}")
        return
    if len(buf) < auth.SERVER_FINISH_LEN:
        return
    finish, rest = buf[: auth.SERVER_FINISH_LEN], buf[auth.SERVER_FINISH_LEN :]
    if not auth.client_check(conn.hs_key, conn.nonce, finish):
        conn.fail_handshake("authentication failed: the server does not hold our key")
        return
    conn.handshake_done()
    if rest:
        conn.data_received(rest)


def _answer_hello(conn: Connection) -> bool:
    """Read the server's hello and send our reply; False while the hello is incomplete."""
    buf, ep = conn.hs_buf, conn.endpoint
    assert conn.transport is not None
    if buf[:4] == UHELLO:  # a user's process
        end = auth.SERVER_HELLO_LEN + 1
        if len(buf) < end or len(buf) < end + buf[auth.SERVER_HELLO_LEN]:
            return False
        end += buf[auth.SERVER_HELLO_LEN]
        name = _decode(buf[auth.SERVER_HELLO_LEN + 1 : end])
        hello, conn.hs_buf = auth.MAGIC + buf[4 : auth.SERVER_HELLO_LEN], buf[end:]
        if name is None or ep.login or (ep.user is not None and ep.user != name):
            conn.fail_handshake(f"the process at {conn.peer} belongs to another user ({name!r})")
            return False
        key = ep.token if ep.user is not None else user_key(ep.token, name)
        answer = auth.client_reply(key, hello)
        assert answer is not None
        conn.nonce, reply = answer
        conn.hs_key = key
        conn.transport.write(reply)
        return True
    if len(buf) < auth.SERVER_HELLO_LEN:
        return False
    hello, conn.hs_buf = buf[: auth.SERVER_HELLO_LEN], buf[auth.SERVER_HELLO_LEN :]
    if hello[:4] != auth.MAGIC:
        conn.fail_handshake("the server is not an nbcluster node")
        return False
    if ep.login:
        raw = ep.login.encode()
        conn.nonce, conn.hs_key = os.urandom(auth.NONCE), "login"
        conn.transport.write(HMAGIC + conn.nonce + len(raw).to_bytes(2, "big") + raw)
        return True
    assert ep.user is not None
    answer = auth.client_reply(ep.token, hello)
    assert answer is not None
    conn.nonce, reply = answer
    conn.hs_key = ep.token
    conn.transport.write(UMAGIC + reply[4:] + _name_bytes(ep.user))
    return True


def _finish_login(conn: Connection, buf: bytes) -> None:
    ep = conn.endpoint
    if len(buf) < 4:
        return
    if buf[:4] == auth.DENY:
        if len(buf) < 6 or len(buf) < 6 + int.from_bytes(buf[4:6], "big"):
            return
        why = buf[6 : 6 + int.from_bytes(buf[4:6], "big")].decode(errors="replace")
        conn.fail_handshake(f"the cluster refused the JupyterHub login: {why}")
        return
    if buf[:4] != auth.OK:
        conn.fail_handshake("the server is not the head of a JupyterHub service")
        return
    if len(buf) < 5 or len(buf) < 5 + buf[4] + KEY_LEN:
        return
    end = 5 + buf[4]
    name = _decode(buf[5:end])
    if name is None:
        conn.fail_handshake("the head sent a malformed login answer")
        return
    ep.user, ep.token, ep.login = name, buf[end : end + KEY_LEN].decode(), None
    rest = buf[end + KEY_LEN :]
    conn.handshake_done()
    if rest:
        conn.data_received(rest)

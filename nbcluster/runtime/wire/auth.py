"""Mutual challenge-response authentication with the cluster token.

Everything nbcluster sends is cloudpickle, so an unauthenticated peer could run code. Each
side proves it holds the token before the other unpickles, or even msgpack-decodes, a
single byte from it. The token itself never crosses the wire: only HMAC-SHA256 digests of
fresh nonces from both sides do, so a recorded handshake cannot be replayed.

Wire format (fixed sizes, so a malformed peer costs bounded memory):
  server -> client: MAGIC + nonce_s                      (4 + 32 bytes)
  client -> server: MAGIC + nonce_c + hmac(c|ns|nc)      (4 + 32 + 32 bytes)
  server -> client: OK + hmac(s|nc|ns)  or  DENY          (4 + 32 bytes, or 4 bytes)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

MAGIC = b"NBC1"
OK = b"OKAY"
DENY = b"DENY"
NONCE = 32
DIGEST = 32
SERVER_HELLO_LEN = len(MAGIC) + NONCE
CLIENT_REPLY_LEN = len(MAGIC) + NONCE + DIGEST
SERVER_FINISH_LEN = len(OK) + DIGEST


def new_token() -> str:
    return secrets.token_hex(32)


def _mac(token: str, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token.encode(), label + a + b, hashlib.sha256).digest()


def server_hello() -> tuple[bytes, bytes]:
    nonce = os.urandom(NONCE)
    return nonce, MAGIC + nonce


def client_reply(token: str, hello: bytes) -> tuple[bytes, bytes] | None:
    """Answer a server hello; None if the hello is not an nbcluster server's."""
    if len(hello) != SERVER_HELLO_LEN or hello[:4] != MAGIC:
        return None
    nonce_s = hello[4:]
    nonce_c = os.urandom(NONCE)
    return nonce_s + nonce_c, MAGIC + nonce_c + _mac(token, b"c", nonce_s, nonce_c)


def server_check(token: str, nonce_s: bytes, reply: bytes) -> bytes | None:
    """Verify a client's reply; return the server's finishing message, or None to deny."""
    if len(reply) != CLIENT_REPLY_LEN or reply[:4] != MAGIC:
        return None
    nonce_c, mac = reply[4 : 4 + NONCE], reply[4 + NONCE :]
    if not hmac.compare_digest(mac, _mac(token, b"c", nonce_s, nonce_c)):
        return None
    return OK + _mac(token, b"s", nonce_c, nonce_s)


def client_check(token: str, nonces: bytes, finish: bytes) -> bool:
    """Verify the server also holds the token (so a client never talks to an impostor)."""
    nonce_s, nonce_c = nonces[:NONCE], nonces[NONCE:]
    if len(finish) != SERVER_FINISH_LEN or finish[:4] != OK:
        return False
    return hmac.compare_digest(finish[4:], _mac(token, b"s", nonce_c, nonce_s))

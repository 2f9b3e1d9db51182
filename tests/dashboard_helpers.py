"""A browser-like HTTP client for the dashboard tests: cookies, XSRF, JSON and WebSockets.

Plain ``urllib`` with a cookie jar for pages and REST calls, tornado's WebSocket client for
the live feed (run in a private event loop), so the tests speak to the real servers exactly
as a browser or a script would, and see the same statuses.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tornado import httpclient, websocket


class Http:
    """One user agent: its cookies persist across requests, as a browser's do."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.headers = dict(headers or {})

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}/{path.lstrip('/')}"

    def request(
        self, path: str, method: str = "GET", body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes, str]:  # fmt: skip
        """(status, headers, body, final URL) — errors are answers too, not exceptions."""
        req = urllib.request.Request(
            self.url(path), data=body, method=method, headers={**self.headers, **(headers or {})}
        )
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read(), r.url
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read(), e.url

    def get_json(self, path: str, status: int = 200) -> Any:
        code, _, body, _ = self.request(path)
        assert code == status, f"GET {path}: {code} {body[:500]!r}"
        return json.loads(body)

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.jar)

    def post_json(self, path: str, status: int = 200, xsrf: bool = True) -> Any:
        headers = {"X-XSRFToken": self.cookie("_xsrf") or ""} if xsrf else {}
        code, _, body, _ = self.request(path, "POST", b"", headers)
        assert code == status, f"POST {path}: {code} {body[:500]!r}"
        return json.loads(body) if body else None


async def _connect(url: str, headers: dict[str, str]) -> websocket.WebSocketClientConnection:
    req = httpclient.HTTPRequest(url, headers=headers, request_timeout=30)
    return await websocket.websocket_connect(req)


class EventSocket:
    """A WebSocket to ``.../events``, read in a private loop; messages are decoded JSON."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.messages: list[Any] = []
        self.conn = self.loop.run_until_complete(_connect(url, headers))

    def read(self, timeout: float = 10.0) -> Any:
        async def one() -> Any:
            return await asyncio.wait_for(self.conn.read_message(), timeout)

        msg = self.loop.run_until_complete(one())
        if msg is None:
            raise EOFError("the server closed the socket")
        value = json.loads(msg)
        self.messages.append(value)
        return value

    def events_until(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0
                     ) -> list[dict[str, Any]]:  # fmt: skip
        """Read event lists until ``done(every event so far)`` holds."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not done(seen):
            left = deadline - time.monotonic()
            if left <= 0:
                types = sorted({e["type"] for e in seen})
                raise AssertionError(f"not seen within {timeout}s; {len(seen)} events: {types}")
            msg = self.read(left)
            if isinstance(msg, list):
                seen.extend(msg)
        return seen

    def close(self) -> None:
        self.conn.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def ws_status(url: str, headers: dict[str, str]) -> int:
    """The HTTP status a WebSocket handshake gets (101 when it opens)."""
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(_connect(url, headers))
        conn.close()
        return 101
    except httpclient.HTTPClientError as e:
        return e.code
    finally:
        loop.close()

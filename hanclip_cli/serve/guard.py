"""What keeps `hanclip serve` a local tool: the Host check, GET only, no CORS, strict headers;
and what keeps it standing under load: a bounded number of requests at once (`Throttle`).

A page on any web site can make the user's browser send requests to 127.0.0.1; the browser's
same-origin rule keeps it from reading the answers, unless the site's own name resolves to
127.0.0.1 (DNS rebinding): then the requests carry the site's name in their Host header. So
the server answers only requests whose Host names the address it serves, with its port. It
sends no CORS headers (no other origin may read it), answers GET and HEAD only (nothing on
it changes anything), and forbids framing and content from elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_text(name: str) -> str:
    """`name` as a Host header writes it: an IPv6 address in brackets."""
    name = name.strip("[]")
    try:
        if ipaddress.ip_address(name).version == 6:
            return f"[{name}]"
    except ValueError:
        pass
    return name.lower()


def _this_machine() -> set[str]:
    """The names and addresses other machines may reach this one by."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            continue
    return {n for n in names if n}


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The Host header values the server at `host`:`port` answers."""
    names = {host, *extra}
    if is_loopback(host) or host in WILDCARD_HOSTS:
        names |= set(LOOPBACK_NAMES)
    if host in WILDCARD_HOSTS:
        names |= _this_machine()
    names.discard("")
    allowed = {f"{_host_text(name)}:{port}" for name in names}
    if port == 80:
        allowed |= {_host_text(name) for name in names}
    return frozenset(allowed)


async def _json_error(
    send: Send, status: int, message: str, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *extra,
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LocalOnly:
    """ASGI middleware: the Host check, GET/HEAD only, and the security headers."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.allowed:
            await _json_error(
                send,
                400,
                f"this server answers requests for {sorted(self.allowed)[0]} only "
                f"(Host {host!r} refused)",
            )
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _json_error(send, 405, "only GET and HEAD: nothing here changes anything")
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class Limits:
    """How many requests `serve` answers at once, and how many more wait for a turn.

    The library answers on one thread and thumbnails decode on the cores (`service.py`,
    `routes.py`), so requests past a few only queue there; the bound keeps that queue, and
    the memory and file handles it holds, finite. A browser opens six connections to a
    server, so only many clients, or a script, ever reach it."""

    running: int = 64
    waiting: int = 256
    wait_s: float = 10.0  # longest wait for a turn before the answer is a 503
    retry_after_s: int = 1


class Throttle:
    """ASGI middleware: at most `limits.running` requests at once; past that, a request waits
    its turn (first come, first served) while fewer than `limits.waiting` do, at most
    `limits.wait_s`; any other gets a 503 at once, one line of JSON with Retry-After."""

    def __init__(self, app: ASGIApp, limits: Limits = Limits()) -> None:
        self.app = app
        self.limits = limits
        self._free = asyncio.Semaphore(limits.running)
        self._waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not await self._turn():
            limits = self.limits
            await _json_error(
                send,
                503,
                f"the server is busy ({limits.running} requests at once, {limits.waiting} "
                f"waiting): try again in {limits.retry_after_s} s",
                [(b"retry-after", str(limits.retry_after_s).encode())],
            )
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._free.release()

    async def _turn(self) -> bool:
        """A slot taken (True), or none within the limits (False)."""
        if not self._free.locked():
            await self._free.acquire()  # free: returns at once
            return True
        if self._waiting >= self.limits.waiting:
            return False
        self._waiting += 1
        try:
            await asyncio.wait_for(self._free.acquire(), self.limits.wait_s)
        except asyncio.TimeoutError:
            return False
        finally:
            self._waiting -= 1
        return True

"""Who may talk to the server: the token, the Origin of WebSocket handshakes, the Host of loopback servers, and
logs that never show the token.

* **Token** (:func:`request_token`): ``Authorization: Bearer TOKEN``, or a WebSocket subprotocol
  ``livecue.token.TOKEN`` (browsers cannot set headers on a WebSocket; they offer ``["livecue",
  "livecue.token.TOKEN"]`` and the server selects ``livecue``, never echoing the token), or ``?token=`` (kept for old
  clients; redacted from every log line).
* **Origin** (:class:`Guard`): a browser page may open ``/ws`` only from the server's own origin or an origin of
  ``--allow-origin``; clients that send no Origin (programs) are allowed. CORS does not cover WebSockets, so without
  this any web page the user visits could drive the model.
* **Host** (:class:`Guard`): a server bound to a loopback address answers only requests whose ``Host`` is a loopback
  name or address with the server's port (DNS rebinding: a page on ``evil.example`` whose name is re-pointed to
  127.0.0.1 sends ``Host: evil.example``).
* **Logs** (:func:`redact_logs`): uvicorn prints request lines with their query string; a filter replaces the token
  (and any ``token=`` value, bearer credential or token subprotocol) by ``***``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

SUBPROTOCOL = "livecue"
TOKEN_SUBPROTOCOL = "livecue.token."
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_SECRET_PATTERNS = (
    re.compile(r"(?i)((?:^|[?&\s])token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer\s+)[^\s,\"']+"),
    re.compile(r"(?i)(livecue\.token\.)[^\s,\"']+"),
)


def offered_subprotocols(headers: Any) -> list[str]:
    """The subprotocols a WebSocket handshake offers (``Sec-WebSocket-Protocol``, comma-separated)."""
    raw = headers.get("sec-websocket-protocol", "") if headers is not None else ""
    return [p.strip() for p in raw.split(",") if p.strip()]


def request_token(headers: Any, query: Any) -> str | None:
    """The token a request carries: ``Authorization: Bearer``, a ``livecue.token.`` subprotocol, or ``?token=``."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for proto in offered_subprotocols(headers):
        if proto.startswith(TOKEN_SUBPROTOCOL):
            return proto[len(TOKEN_SUBPROTOCOL):]
    return query.get("token")


def token_ok(expected: str | None, headers: Any, query: Any) -> bool:
    """Whether a request carries the server token (always true when the server has none); constant-time."""
    if not expected:
        return True
    given = request_token(headers, query)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback_host(name: str) -> bool:
    """Whether a host name or address is loopback (``localhost``, ``*.localhost``, 127.0.0.0/8, ``::1``)."""
    name = name.strip("[]").rstrip(".").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (``[v6]:port`` too) -> ``(host, port)``; None when it cannot be parsed."""
    try:
        parts = urllib.parse.urlsplit(f"//{value.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.path or parts.query or parts.username is not None:
        return None
    return host.lower(), default_port if port is None else port


def check_origin(value: str) -> str:
    """An ``--allow-origin`` value, normalised (``scheme://host[:port]``, ``null`` or ``*``); ValueError naming it
    otherwise."""
    value = value.strip()
    if value in ("*", "null"):
        return value
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"--allow-origin must be an origin such as 'https://example.org' or "
                         f"'http://localhost:3000' (scheme, host, optional port; no path), '*' or 'null', got "
                         f"{value!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


class Guard:
    """ASGI middleware: the Host check (loopback binds) on every request and the Origin check on WebSockets.

    Args:
        app: the wrapped ASGI app.
        loopback_only: refuse requests whose Host is not a loopback name/address with the server's port.
        allow_origins: origins allowed besides the server's own (``*``: any; ``null``: pages from file:// etc.).
    """

    def __init__(self, app: Any, *, loopback_only: bool = False, allow_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.allow_origins = {check_origin(o) for o in allow_origins}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            problem = self.host_problem(scope, headers.get("host"))
            if problem is None and scope["type"] == "websocket":
                problem = self.origin_problem(scope, headers.get("origin"), headers.get("host"))
            if problem is not None:
                logging.getLogger(__name__).warning("refused %s %s: %s", scope["type"], scope.get("path"), problem)
                await _deny(scope, receive, send, problem)
                return
        await self.app(scope, receive, send)

    def host_problem(self, scope: dict[str, Any], host: str | None) -> str | None:
        if not self.loopback_only:
            return None
        server_port = (scope.get("server") or (None, None))[1]
        parsed = split_host(host or "", 443 if scope.get("scheme") in ("https", "wss") else 80)
        if parsed is None or not is_loopback_host(parsed[0]) or (server_port is not None and parsed[1] != server_port):
            return (f"Host {host!r} is not this loopback server (expected localhost or 127.0.0.1 with port "
                    f"{server_port}): the server listens on a loopback address and answers only requests for it")
        return None

    def origin_problem(self, scope: dict[str, Any], origin: str | None, host: str | None) -> str | None:
        if origin is None or "*" in self.allow_origins:
            return None
        origin = origin.strip()
        if origin.lower() in self.allow_origins or origin == "null" and "null" in self.allow_origins:
            return None
        parts = urllib.parse.urlsplit(origin)
        if parts.scheme in ("http", "https") and host:
            default = 443 if parts.scheme == "https" else 80
            theirs = split_host(parts.netloc, default)
            ours = split_host(host, default)
            if theirs is not None and theirs == ours:
                return None
        return (f"WebSocket from origin {origin!r} refused: only this server's own pages (and origins given with "
                f"--allow-origin) may open /ws")


async def _deny(scope: dict[str, Any], receive: Any, send: Any, problem: str) -> None:
    """Answer 403 with a one-line JSON reason (a WebSocket handshake is refused the same way)."""
    body = json.dumps({"detail": problem}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 403, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # pragma: no cover - every server livecue runs on supports denial responses
        await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})


class RedactSecrets(logging.Filter):
    """Replace the token (and anything shaped like a credential) in log records by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
            quoted = urllib.parse.quote(secret, safe="")
            if quoted != secret:
                text = text.replace(quoted, "***")
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self.redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "livecue")


def redact_logs(token: str | None) -> RedactSecrets:
    """Install (once per logger; a new call replaces the old filter) the redaction filter on the loggers that can
    print request lines and headers. Returns the filter."""
    flt = RedactSecrets([token] if token else [])
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactSecrets)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt

"""A Python client for ``livecue serve``: stream frames from anywhere to a remote model and read its events.

Async::

    async with LiveClient("http://127.0.0.1:8000", token=None) as client:
        ready = await client.open(threshold=0.725, fps=2)
        await client.send_frame(frame, t=0.0)            # (H, W, 3) uint8 RGB, or JPEG/PNG bytes
        await client.ask("What is on the table?", at=0.0)
        await client.close()                             # graceful: pending queries are answered
        async for event in client:                       # dicts: silence, reply_delta, reply, answer, ... closed
            print(event)

Sync (scripts)::

    with SyncLiveClient("http://127.0.0.1:8000") as client:
        client.open()
        client.send_frame(frame, 0.0)
        client.close()
        for event in client.events():
            ...

The wire protocol is in docs/protocol.md. Needs the ``[serve]`` extra (websockets; httpx for :meth:`get`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np

from .serve.protocol import message, open_message, pack_frame

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server answered with an ``error`` event where the client needed success (e.g. ``open``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def ws_url(url: str) -> str:
    """``http(s)://host:port[/]`` or ``ws(s)://host:port[/ws]`` → the ``ws(s)://host:port/ws`` endpoint."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected http://HOST:PORT or ws://HOST:PORT/ws)")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_url(url: str) -> str:
    """The server's HTTP base URL (``http(s)://host:port``) for any URL :func:`ws_url` accepts."""
    parts = urllib.parse.urlsplit(ws_url(url))
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _token_from_url(url: str, token: str | None) -> tuple[str, str | None]:
    """Move a ``?token=`` of ``url`` into the token (sent as a header, so it never travels in a request line)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    given = [v for k, v in query if k == "token"]
    if not given:
        return url, token
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "token"])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), token or given[-1]


def _websockets() -> Any:
    try:
        import websockets
    except ImportError:
        raise ImportError("the livecue client needs the [serve] extra: pip install 'livecue[serve]'") from None
    return websockets


def frame_message(frame: np.ndarray | bytes, t: float, quality: int = 4) -> bytes:
    """The binary frame message: an RGB array is encoded as JPEG; bytes are sent as they are (JPEG/PNG)."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return pack_frame(t, bytes(frame))
    from .serve.images import encode_image

    return pack_frame(t, encode_image(np.asarray(frame), "jpeg", quality))


def _ready_or_raise(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return ``ev`` if it is ``ready``; raise ServerError on an error/close before it; None for other events."""
    if ev is None:
        raise ServerError("closed", "the server closed the connection before the session was ready")
    if ev.get("type") == "ready":
        return ev
    if ev.get("type") == "error":
        raise ServerError(ev.get("code", "error"), ev.get("message", ""))
    if ev.get("type") == "closed":
        raise ServerError("closed", ev.get("reason", "closed"))
    return None


class LiveClient:
    """Async client of one stream session.

    Args:
        url: the server (``http://host:port`` or ``ws://host:port/ws``).
        token: the server's token, if it has one (sent as ``Authorization: Bearer``; a ``?token=`` in ``url`` is
            moved there too).
        open_timeout: seconds to connect.
    """

    def __init__(self, url: str, token: str | None = None, *, open_timeout: float = 10.0) -> None:
        self.url, self.token = _token_from_url(ws_url(url), token)
        self.open_timeout = open_timeout
        self.ws: Any = None
        self.ready: dict[str, Any] | None = None
        self.closed: dict[str, Any] | None = None  # the `closed` event, once received

    async def connect(self) -> LiveClient:
        """Open the WebSocket (``open`` then starts the session)."""
        ws = _websockets()
        from websockets.asyncio.client import connect

        try:
            self.ws = await connect(self.url, additional_headers=_headers(self.token), open_timeout=self.open_timeout,
                                    max_size=2**24)
        except (TimeoutError, OSError, ws.exceptions.WebSocketException) as e:
            raise ConnectionError(f"cannot connect to {self.url}: {e}") from None
        return self

    async def __aenter__(self) -> LiveClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def open(self, *, silence: bool = True, timeout: float = 30.0, **options: Any) -> dict[str, Any]:
        """Start the session; returns the ``ready`` event (session id, fps, θ, limits).

        Args:
            silence: receive a ``silence`` event for every silent frame.
            timeout: seconds to wait for ``ready``.
            **options: stream options by name (``threshold``, ``fps``, ``system_prompt``, ``max_reply_tokens``,
                ``temperature``, ``top_p``, ``repetition_penalty``: ``StreamOptions.to_dict()``); None or left
                out: the server's. The server checks them (:class:`ServerError` names a bad one).
        """
        await self._send(open_message(silence, options))
        while True:
            ready = _ready_or_raise(await self.recv(timeout))
            if ready is not None:
                self.ready = ready
                return ready

    async def send_frame(self, frame: np.ndarray | bytes, t: float, *, quality: int = 4) -> None:
        """Send one frame at stream time ``t`` (an RGB array is JPEG-encoded off the event loop)."""
        data = await asyncio.to_thread(frame_message, frame, t, quality) if isinstance(frame, np.ndarray) \
            else frame_message(frame, t)
        await self._send(data)

    async def ask(self, text: str, at: float | None = None, *, answer: bool = True) -> None:
        """Ask a question at stream time ``at`` (None: the latest frame's time). ``answer=False`` sends an
        instruction: the model reads it and keeps watching, with no answer."""
        await self._send(message("query", text=text, at=at, answer=None if answer else False))

    async def set_threshold(self, threshold: float) -> None:
        """Change θ for the frames that follow (answered by an ``updated`` event)."""
        await self._send(message("update", threshold=threshold))

    async def ping(self, id: Any = None) -> None:
        await self._send(message("ping", id=id))

    async def close(self) -> None:
        """End the stream gracefully: keep reading events until ``closed`` (then the server closes the socket)."""
        await self._send(message("close"))

    async def disconnect(self) -> None:
        """Drop the connection now (the server frees the session)."""
        if self.ws is not None:
            await self.ws.close()

    async def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None once the connection is closed. Raises TimeoutError after ``timeout`` s."""
        ws = _websockets()
        if self.ws is None:
            raise RuntimeError("not connected: use 'async with LiveClient(...)' or await connect()")
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except ws.exceptions.ConnectionClosed:
            return None
        ev = json.loads(raw)
        if ev.get("type") == "closed":
            self.closed = ev
        return ev

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        while (ev := await self.recv()) is not None:
            yield ev

    async def _send(self, data: str | bytes) -> None:
        if self.ws is None:
            raise RuntimeError("not connected: use 'async with LiveClient(...)' or await connect()")
        await self.ws.send(data)

    async def get(self, path: str) -> Any:
        """GET an HTTP endpoint of the server (``/health``, ``/version``, ``/model``, ``/sessions``)."""
        import httpx

        async with httpx.AsyncClient(base_url=http_url(self.url), headers=_headers(self.token)) as http:
            response = await http.get(path)
            response.raise_for_status()
            return response.json()


class SyncLiveClient:
    """Blocking client of one stream session, for scripts (same methods as :class:`LiveClient`)."""

    def __init__(self, url: str, token: str | None = None, *, open_timeout: float = 10.0) -> None:
        self.url, self.token = _token_from_url(ws_url(url), token)
        self.open_timeout = open_timeout
        self.ws: Any = None
        self.ready: dict[str, Any] | None = None
        self.closed: dict[str, Any] | None = None
        self._stack: contextlib.ExitStack | None = None

    def connect(self) -> SyncLiveClient:
        ws = _websockets()
        from websockets.sync.client import connect

        stack = contextlib.ExitStack()
        try:
            self.ws = stack.enter_context(connect(self.url, additional_headers=_headers(self.token),
                                                  open_timeout=self.open_timeout, max_size=2**24))
        except (OSError, ws.exceptions.WebSocketException, TimeoutError) as e:
            raise ConnectionError(f"cannot connect to {self.url}: {e}") from None
        self._stack = stack
        return self

    def __enter__(self) -> SyncLiveClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def open(self, *, silence: bool = True, timeout: float = 30.0, **options: Any) -> dict[str, Any]:
        """Start the session (see :meth:`LiveClient.open`); returns the ``ready`` event."""
        self.send_raw(open_message(silence, options))
        while True:
            ready = _ready_or_raise(self.recv(timeout))
            if ready is not None:
                self.ready = ready
                return ready

    def send_frame(self, frame: np.ndarray | bytes, t: float, *, quality: int = 4) -> None:
        self.send_raw(frame_message(frame, t, quality))

    def ask(self, text: str, at: float | None = None, *, answer: bool = True) -> None:
        self.send_raw(message("query", text=text, at=at, answer=None if answer else False))

    def set_threshold(self, threshold: float) -> None:
        self.send_raw(message("update", threshold=threshold))

    def ping(self, id: Any = None) -> None:
        """Answered by ``pong``; keeps a quiet session from its idle timeout."""
        self.send_raw(message("ping", id=id))

    def close(self) -> None:
        self.send_raw(message("close"))

    def disconnect(self) -> None:
        """Drop the connection now (the server frees the session)."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def send_raw(self, data: str | bytes) -> None:
        """Send any message (text = JSON, bytes = binary frame) as it is."""
        if self.ws is None:
            raise RuntimeError("not connected: use 'with SyncLiveClient(...)' or connect()")
        self.ws.send(data)

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None once the connection is closed. Raises TimeoutError after ``timeout`` s."""
        ws = _websockets()
        if self.ws is None:
            raise RuntimeError("not connected: use 'with SyncLiveClient(...)' or connect()")
        try:
            raw = self.ws.recv(timeout)
        except ws.exceptions.ConnectionClosed:
            return None
        ev = json.loads(raw)
        if ev.get("type") == "closed":
            self.closed = ev
        return ev

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Events until the connection closes (each waited for at most ``timeout`` s)."""
        while (ev := self.recv(timeout)) is not None:
            yield ev

    def get(self, path: str) -> Any:
        """GET an HTTP endpoint of the server."""
        import httpx

        response = httpx.get(http_url(self.url) + path, headers=_headers(self.token))
        response.raise_for_status()
        return response.json()


__all__ = ["LiveClient", "ServerError", "SyncLiveClient", "frame_message", "http_url", "ws_url"]

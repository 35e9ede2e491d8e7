"""One WebSocket connection: read client messages, validate them, feed the scheduler, send events back.

Every bad message (malformed, oversized, too fast, out of order, before ``open``) is answered with an ``error`` event
and then ignored: the connection and its session go on. Frames are decoded off the event loop (a worker thread).
Events produced by the model worker thread are handed to the event loop with ``call_soon_threadsafe`` and sent in
order by one sender task. When the client goes away, its session is dropped from the scheduler at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .images import decode_image
from .protocol import (
    PROTOCOL_VERSION,
    Close,
    Frame,
    Limits,
    Open,
    Ping,
    ProtocolError,
    Query,
    Update,
    error_event,
    event,
    parse_binary,
    parse_text,
)
from .scheduler import Scheduler, SchedulerFull, ServeSession, describe_memory

log = logging.getLogger(__name__)
MAX_OUTBOX = 10_000  # events waiting for a client that does not read them: past this the connection is closed


class RateLimiter:
    """A token bucket: ``rate`` messages per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.refused = 0          # refused since the last error event
        self.last_error = -math.inf

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused += 1
        return False


class Connection:
    """The server side of one ``/ws`` client.

    Args:
        ws: the accepted WebSocket.
        scheduler: the shared scheduler (one model).
        limits: message limits.
        model_name: reported in ``ready``.
    """

    def __init__(self, ws: WebSocket, scheduler: Scheduler, limits: Limits, model_name: str) -> None:
        self.ws = ws
        self.scheduler = scheduler
        self.limits = limits
        self.model_name = model_name
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.session: ServeSession | None = None
        self.rate = RateLimiter(limits.max_rate, limits.max_burst)
        self.last_t = -math.inf  # the latest frame time received (frames must not go back in time)
        self.errors = 0
        self.finished = False    # `closed` was sent: stop reading

    # ---- main loop ------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._sender())
        try:
            while not self.finished:
                try:
                    msg = await self.ws.receive()
                except (WebSocketDisconnect, RuntimeError):
                    break
                if msg["type"] == "websocket.disconnect":
                    break
                await self.handle(msg.get("text"), msg.get("bytes"))
        finally:
            if self.session is not None:
                self.scheduler.close(self.session, graceful=False)  # frees the queue and the engine state
                self.session = None
            if not self.finished:
                sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the client is gone either way
                pass

    async def handle(self, text: str | None, data: bytes | None) -> None:
        """Validate and act on one client message; answer any problem with an ``error`` event."""
        size = len(data) if data is not None else len(text.encode("utf-8", "surrogatepass")) if text else 0
        if size > self.limits.max_message_bytes:
            self._error(ProtocolError("too_large", f"message is {size} bytes; the limit is "
                                                   f"{self.limits.max_message_bytes}"))
            return
        if not self.rate.allow():
            now = time.monotonic()
            if now - self.rate.last_error >= 1.0:  # at most one rate error a second, with the count
                self._error(ProtocolError("rate_limited", f"too many messages: the limit is {self.limits.max_rate:g} "
                                                          f"per second (burst {self.limits.max_burst}); "
                                                          f"{self.rate.refused} message(s) ignored"))
                self.rate.refused, self.rate.last_error = 0, now
            return
        try:
            if data is not None:
                msg: Any = parse_binary(data, self.limits)
            else:
                msg = parse_text(text or "", self.limits)
            await self._dispatch(msg)
        except ProtocolError as e:
            self._error(e)

    async def _dispatch(self, msg: Any) -> None:
        if isinstance(msg, Ping):
            self.send(event("pong", None, id=msg.id, server_time=round(time.time(), 6)))
            return
        if isinstance(msg, Open):
            self._open(msg)
            return
        session = self._require_session(type(msg).__name__.lower())
        if isinstance(msg, Frame):
            await self._frame(session, msg)
        elif isinstance(msg, Query):
            # "now" is the client's clock (its latest frame), not how far the model has got through the queue
            at = msg.at if msg.at is not None else max(self.last_t, 0.0)
            self.scheduler.control(session, "query", (msg.text, at, msg.answer))
        elif isinstance(msg, Update):
            self.scheduler.control(session, "threshold", msg.threshold)
        elif isinstance(msg, Close):
            session.closing = True
            self.scheduler.close(session, graceful=True)  # the worker sends `closed`, then the socket closes

    def _open(self, msg: Open) -> None:
        if self.session is not None:
            raise ProtocolError("already_open", f"this connection already has session {self.session.id}; "
                                                "open another connection for another stream")
        try:
            session = self.scheduler.open(msg, self._emit_threadsafe)
        except SchedulerFull as e:
            self.send(error_event("busy", str(e)))
            self.send(event("closed", None, reason="server full"))
            return
        except ValueError as e:
            raise ProtocolError("bad_message", str(e)) from None
        self.session = session
        stream = session.stream
        self.send(event("ready", None, session=session.id, protocol=PROTOCOL_VERSION, model=self.model_name,
                        fps=session.fps, threshold=stream.threshold, max_reply_tokens=stream.max_reply_tokens,
                        system_prompt=stream.system_prompt, queue_size=session.queue_size,
                        memory=describe_memory(stream.memory), limits=self.limits.to_dict()))

    async def _frame(self, session: ServeSession, msg: Frame) -> None:
        if session.closing:
            raise ProtocolError("closing", "the session is closing: no more frames are accepted")
        if msg.t < self.last_t:
            raise ProtocolError("out_of_order", f"frame time {msg.t:g} is earlier than the previous frame's "
                                                f"{self.last_t:g}: frame times must not decrease (frame ignored)",
                                t=msg.t)
        self.last_t = msg.t
        if not self.scheduler.admit(session, msg.t):
            return  # faster than the session fps: counted, reported as `dropped`
        try:
            frame = await asyncio.to_thread(decode_image, msg.data, self.limits.max_pixels)
        except ProtocolError as e:
            e.t = msg.t
            raise
        self.scheduler.push_frame(session, msg.t, frame)

    def _require_session(self, what: str) -> ServeSession:
        if self.session is None:
            raise ProtocolError("not_open", f"send an 'open' message before any {what!r}")
        return self.session

    # ---- sending --------------------------------------------------------------------------------------------------
    def send(self, ev: dict[str, Any]) -> None:
        """Queue an event for the client (event-loop thread only)."""
        if self.outbox.qsize() >= MAX_OUTBOX:
            if not self.finished:
                log.warning("client is not reading its events: closing the connection")
                self.finished = True
                self.outbox.put_nowait(None)
            return
        self.outbox.put_nowait(ev)

    def _emit_threadsafe(self, ev: dict[str, Any]) -> None:
        """The scheduler's emit callback (model worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.send, ev)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    def _error(self, e: ProtocolError) -> None:
        self.errors += 1
        if self.session is not None:
            self.session.stats.errors += 1
        self.send(error_event(e.code, e.message, t=e.t))

    async def _sender(self) -> None:
        while True:
            ev = await self.outbox.get()
            if ev is None:
                await self.ws.close(code=1011, reason="client not reading events")
                return
            await self.ws.send_text(json.dumps(ev, ensure_ascii=False))
            if ev["type"] == "closed":
                self.finished = True
                self.session = None
                await self.ws.close(code=1000)
                return

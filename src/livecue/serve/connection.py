"""One WebSocket connection: read client messages, validate them, feed the scheduler, send events back.

Every bad message (malformed, oversized, too fast, out of order, before ``open``) is answered with an ``error`` event
and then ignored: the connection and its session go on. Frames are decoded off the event loop, by the server's
bounded :class:`~livecue.serve.images.DecodePool`. Events produced by the model worker thread are handed to the
event loop with ``call_soon_threadsafe`` and sent in order by one sender task; a client that does not read them is
disconnected once ``MAX_OUTBOX_BYTES`` wait. When the client goes away, its session is dropped from the scheduler at
once (its queued and in-flight work is cancelled at the next round).

Metrics (with a :class:`~livecue.serve.metrics.ServeMetrics`): each frame's arrival time is kept by its stream time
``t`` until the ``silence``/``reply``/``answer`` event of that time has been sent (its frame latency); the session is
always opened with ``silence`` events on (a client that asked for none does not get them: they are only measured),
so every processed frame is seen. Frames dropped from the queue leave their entry behind; it goes when a later
frame's event is sent.

Timeouts: a connection must send ``open`` within ``limits.open_timeout`` seconds, and an open session must send some
message (a frame, a ``ping``...) at least every ``limits.idle_timeout`` seconds while the model has no work for it;
otherwise it gets an ``error`` (``open_timeout`` / ``idle_timeout``), ``closed``, and close code 4408. A session that
is closing gracefully is not timed out (its remaining work is bounded).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .images import DecodePool
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
    dumps_event,
    error_event,
    event,
    parse_binary,
    parse_text,
)
from .scheduler import Scheduler, SchedulerFull, ServeSession, describe_memory

if TYPE_CHECKING:
    from .metrics import ServeMetrics

log = logging.getLogger(__name__)
MAX_OUTBOX = 10_000  # events waiting for a client that does not read them: past this the connection is closed ...
MAX_OUTBOX_BYTES = 8 * 2**20  # ... or past this many bytes of them
TIMEOUT_CODE = 4408  # WebSocket close code after `open_timeout` / `idle_timeout`
FRAME_EVENTS = ("silence", "reply", "answer")  # a frame's events: the first one sent for its time ends its latency
T_TOLERANCE = 1e-5  # events carry t rounded to 6 decimals


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
        limits: message limits and timeouts.
        model_name: reported in ``ready``.
        decoder: the server's decode pool (default: a private one with one worker).
        metrics: the server's metrics (None: nothing is measured).
    """

    def __init__(self, ws: WebSocket, scheduler: Scheduler, limits: Limits, model_name: str,
                 decoder: DecodePool | None = None, metrics: ServeMetrics | None = None) -> None:
        self.ws = ws
        self.scheduler = scheduler
        self.limits = limits
        self.model_name = model_name
        self.decoder = decoder or DecodePool(1)
        self.loop = asyncio.get_running_loop()
        # (event type, JSON text, the arrival of the frame it ends or None)
        self.outbox: asyncio.Queue[tuple[str, str, float | None] | None] = asyncio.Queue()
        self.outbox_bytes = 0
        self.opened_at = time.monotonic()
        self.session: ServeSession | None = None
        self.rate = RateLimiter(limits.max_rate, limits.max_burst)
        self.last_t = -math.inf  # the latest frame time received (frames must not go back in time)
        self.errors = 0
        self.finished = False    # `closed` (or a close) is queued: stop reading and sending
        self.metrics = metrics
        self.metered: ServeSession | None = None  # the session whose frames the metrics count
        self.silence = True      # whether the client wants `silence` events
        self.received = 0.0      # time.monotonic() when the message being handled arrived
        # frames queued for the model, by stream time: their arrival (bounded: see _arrived)
        self.arrivals: collections.OrderedDict[float, float] = collections.OrderedDict()

    # ---- main loop ------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        sender = asyncio.create_task(self._sender())
        try:
            while not self.finished:
                try:
                    msg = await asyncio.wait_for(self.ws.receive(), self._receive_timeout())
                except TimeoutError:
                    self._time_out()
                    continue
                except (WebSocketDisconnect, RuntimeError):
                    break
                if msg["type"] == "websocket.disconnect":
                    break
                await self.handle(msg.get("text"), msg.get("bytes"))
        finally:
            if self.session is not None:
                self.scheduler.close(self.session, graceful=False)  # frees the queue and the engine state
                self.session = None
            if self.metrics is not None and self.metered is not None:
                self.metrics.session_ended(self.metered)
            if not self.finished:
                sender.cancel()
            try:
                await sender
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the client is gone either way
                pass

    def _receive_timeout(self) -> float | None:
        """Seconds to wait for the next client message: until the ``open`` deadline, the idle timeout, or for ever
        while the session closes gracefully."""
        if self.session is None:
            return max(0.0, self.opened_at + self.limits.open_timeout - time.monotonic())
        return None if self.session.closing else self.limits.idle_timeout

    def _time_out(self) -> None:
        """No ``open`` in time, or an idle session: tell the client, drop the session, close the connection. A
        session the model still has work for (frames queued or in flight, queries waiting) is not idle: its client
        may be waiting for the answers."""
        s = self.session
        if s is not None and (s.frames or s.busy or s.pending_queries):
            return
        if self.session is None:
            code, text = "open_timeout", f"no 'open' message within {self.limits.open_timeout:g} s of connecting"
        else:
            code, text = "idle_timeout", f"no message from the client for {self.limits.idle_timeout:g} s: send " \
                                         f"frames or a 'ping' to keep a session open"
            self.scheduler.close(self.session, graceful=False)
        log.info("closing a connection: %s", text)
        stats = self.session.stats.to_dict() if self.session is not None else {}
        self.session = None
        self.send(error_event(code, text))
        self.send(event("closed", None, reason=code, **stats), close_code=TIMEOUT_CODE)

    async def handle(self, text: str | None, data: bytes | None) -> None:
        """Validate and act on one client message; answer any problem with an ``error`` event."""
        self.received = time.monotonic()
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
        if session.closing and not isinstance(msg, Close):
            what = {Frame: "frames", Query: "queries", Update: "updates"}.get(type(msg), "messages")
            raise ProtocolError("closing", f"the session is closing: no more {what} are accepted",
                                t=getattr(msg, "t", None))
        if isinstance(msg, Frame):
            await self._frame(session, msg)
        elif isinstance(msg, Query):
            # "now" is the client's clock (its latest frame), not how far the model has got through the queue
            at = msg.at if msg.at is not None else max(self.last_t, 0.0)
            self.scheduler.control(session, "query", (msg.text, at, msg.answer))  # QueryRefused: an error event
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
            # silence events on for the server side: they end silent frames' latency (dropped in `send` if unasked)
            session = self.scheduler.open(dataclasses.replace(msg, silence=True) if self.metrics else msg,
                                          self._emit_threadsafe)
        except SchedulerFull as e:
            self.send(error_event("busy", str(e)))
            self.send(event("closed", None, reason="server full"))
            return
        except ProtocolError:
            raise
        except ValueError as e:
            raise ProtocolError("bad_message", str(e)) from None
        self.session = session
        self.silence = msg.silence
        if self.metrics is not None:
            self.metered = session
            self.metrics.session_opened(session)
        stream = session.stream
        sampling = stream.sampling
        self.send(event("ready", None, session=session.id, protocol=PROTOCOL_VERSION, model=self.model_name,
                        fps=session.fps, threshold=stream.threshold, max_reply_tokens=stream.max_reply_tokens,
                        system_prompt=stream.system_prompt, temperature=sampling.temperature, top_p=sampling.top_p,
                        repetition_penalty=sampling.repetition_penalty, queue_size=session.queue_size,
                        memory=describe_memory(stream.memory), limits=self.limits.to_dict()))

    async def _frame(self, session: ServeSession, msg: Frame) -> None:
        if msg.t < self.last_t:
            raise ProtocolError("out_of_order", f"frame time {msg.t:g} is earlier than the previous frame's "
                                                f"{self.last_t:g}: frame times must not decrease (frame ignored)",
                                t=msg.t)
        self.last_t = msg.t
        if not self.scheduler.admit(session, msg.t):
            return  # faster than the session fps: counted, reported as `dropped`
        try:
            frame = await self.decoder.decode(msg.data, self.limits.max_pixels)
        except ProtocolError as e:
            e.t = msg.t
            raise
        self._arrived(msg.t, session.queue_size)
        self.scheduler.push_frame(session, msg.t, frame)

    def _arrived(self, t: float, queue_size: int) -> None:
        """Keep a queued frame's arrival time for its latency (with metrics); at most a few queues' worth are kept
        (older entries belong to frames dropped from the queue)."""
        if self.metrics is None:
            return
        self.arrivals[t] = self.received
        while len(self.arrivals) > 2 * queue_size + 8:
            self.arrivals.popitem(last=False)

    def _frame_arrival(self, t: Any) -> float | None:
        """The arrival of the frame at ``t`` whose event is being sent (forgotten, with any older entries: frames
        dropped from the queue); None if it is not a queued frame (e.g. an answer between two frames)."""
        if not isinstance(t, int | float) or not self.arrivals:
            return None
        arrival = None
        while self.arrivals:
            first = next(iter(self.arrivals))
            if first > t + T_TOLERANCE:
                break
            _, at = self.arrivals.popitem(last=False)
            arrival = at if abs(first - t) <= T_TOLERANCE else None
        return arrival

    def _require_session(self, what: str) -> ServeSession:
        if self.session is None:
            raise ProtocolError("not_open", f"send an 'open' message before any {what!r}")
        return self.session

    # ---- sending --------------------------------------------------------------------------------------------------
    def send(self, ev: dict[str, Any], close_code: int | None = None) -> None:
        """Queue an event for the client (event-loop thread only); ``close_code``: close the socket after it."""
        if self.finished:
            return
        arrival = None
        if self.metrics is not None:
            self.metrics.sent(ev)
            if ev.get("type") in FRAME_EVENTS:
                arrival = self._frame_arrival(ev.get("t"))
            if ev.get("type") == "silence" and not self.silence:
                if arrival is not None:
                    self.metrics.frame_done(time.monotonic() - arrival)
                return  # measured only: the client asked for no silence events
        text = dumps_event(ev)
        if self.outbox.qsize() >= MAX_OUTBOX or self.outbox_bytes + len(text) > MAX_OUTBOX_BYTES:
            log.warning("client is not reading its events: closing the connection")
            self.finished = True
            if self.session is not None:
                self.scheduler.close(self.session, graceful=False)
            self.outbox.put_nowait(None)
            return
        self.outbox_bytes += len(text)
        self.outbox.put_nowait((ev["type"] if close_code is None else f"close:{close_code}", text, arrival))
        if ev["type"] == "closed" or close_code is not None:
            self.finished = True

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
            item = await self.outbox.get()
            if item is None:
                await self.ws.close(code=1011, reason="client not reading events")
                return
            kind, text, arrival = item
            self.outbox_bytes -= len(text)
            await self.ws.send_text(text)
            if arrival is not None and self.metrics is not None:
                self.metrics.frame_done(time.monotonic() - arrival)
            if kind == "closed" or kind.startswith("close:"):
                self.session = None
                code = int(kind[6:]) if kind.startswith("close:") else 1000
                await self.ws.close(code=code)
                return

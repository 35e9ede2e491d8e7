"""The livecue WebSocket protocol: client messages, server events, limits (docs/protocol.md is the reference).

Client → server, on ``/ws``:

* text messages are JSON objects with a ``type``: ``open``, ``frame`` (base64 image), ``query``, ``update``,
  ``ping``, ``close``;
* binary messages are frames: an 8-byte little-endian float64 stream time ``t`` followed by the JPEG, PNG or WebP
  bytes.

Server → client: JSON text messages (events), each with ``type`` and ``t`` (stream seconds, or null): ``ready``,
``silence``, ``reply_delta``, ``reply``, ``answer``, ``dropped``, ``updated``, ``pong``, ``error``, ``closed``
(strict JSON: :func:`dumps_event` never writes ``NaN``).

Everything here is pure (no I/O): parsing raises :class:`ProtocolError` with a machine-readable ``code`` and a
one-line human message; the server answers it with an ``error`` event and the session goes on. The stream options
of ``open`` (and the θ of ``update``) are checked by the same checkers as every other front door's
(:data:`livecue.inference.options.OPTIONS`), then against this server's :class:`Limits`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from ..inference.options import MAX_QUERY_CHARS, MAX_SYSTEM_CHARS, OPTIONS, StreamOptions, check_option

PROTOCOL_VERSION = 1
FRAME_HEADER = struct.Struct("<d")  # stream time t, float64 little-endian, before the image bytes
MESSAGE_TYPES = ("open", "frame", "query", "update", "ping", "close")


class ProtocolError(ValueError):
    """A message the server cannot accept: answered with an ``error`` event (the session survives)."""

    def __init__(self, code: str, message: str, t: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.t = t  # the stream time of the frame concerned, if any


@dataclass(frozen=True)
class Limits:
    """What one connection may send; anything over a limit is answered with an ``error`` event.

    docs/protocol.md lists every field with its default (a test keeps the two equal).

    Attributes:
        max_message_bytes: largest WebSocket message of any kind (a base64 JSON frame included).
        max_frame_bytes: largest encoded image (JPEG/PNG/WebP bytes) in a frame.
        max_pixels: largest frame, width × height (read from the image header before decoding).
        max_rate: sustained messages per second per connection (token bucket) ...
        max_burst: ... with this many messages of burst.
        max_text_chars: longest query text.
        max_system_chars: longest system prompt ...
        max_system_tokens: ... and its most tokens (it stays in every session's attention sink, never evicted).
        max_reply_tokens: the largest reply cap a client may ask for.
        max_fps: the highest stream fps a client may ask for.
        queue_size: frames waiting per session; when full the oldest is dropped (and a ``dropped`` event says so).
        max_session_frames: frames one session may stream before it is closed (None: unlimited).
        max_pending_queries: queries and instructions waiting per session (not yet read by the model); more are
            refused with ``too_many_queries``.
        max_query_tokens: the most tokens of query text one session may send at once (one query longer than this
            is refused with ``too_large``) ...
        query_token_rate: ... refilled at this many tokens per second (``rate_limited`` beyond).
        open_timeout: seconds a new connection has to send ``open``.
        idle_timeout: seconds a session may go without any message from its client before it is closed.
    """

    max_message_bytes: int = 3 * 2**20
    max_frame_bytes: int = 2 * 2**20
    max_pixels: int = 1920 * 1080
    max_rate: float = 50.0
    max_burst: int = 100
    max_text_chars: int = MAX_QUERY_CHARS
    max_system_chars: int = MAX_SYSTEM_CHARS
    max_system_tokens: int = 2048
    max_reply_tokens: int = 512
    max_fps: float = 30.0
    queue_size: int = 4
    max_session_frames: int | None = None
    max_pending_queries: int = 8
    max_query_tokens: int = 1024
    query_token_rate: float = 64.0
    open_timeout: float = 10.0
    idle_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_frame_bytes", "max_pixels", "max_burst", "max_text_chars",
                     "max_system_chars", "max_system_tokens", "max_reply_tokens", "queue_size", "max_pending_queries",
                     "max_query_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        for name in ("max_rate", "max_fps", "query_token_rate", "open_timeout", "idle_timeout"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ValueError(f"Limits.{name} must be a finite number > 0, got {value!r}")
        if self.max_session_frames is not None and (not isinstance(self.max_session_frames, int)
                                                    or self.max_session_frames < 1):
            raise ValueError(f"Limits.max_session_frames must be >= 1 or None, got {self.max_session_frames!r}")
        if self.max_message_bytes < self.max_frame_bytes + FRAME_HEADER.size:
            raise ValueError(f"Limits.max_message_bytes ({self.max_message_bytes}) must hold a binary frame of "
                             f"max_frame_bytes ({self.max_frame_bytes}) + {FRAME_HEADER.size} bytes")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def over_limit(self, options: StreamOptions) -> tuple[str, str] | None:
        """The first stream option over this server's caps (tighter than the option's own range), as ``(name,
        "must be at most 30 on this server (its limit max_fps), got 60")``; None when all are within them."""
        for name, limit in (("fps", "max_fps"), ("max_reply_tokens", "max_reply_tokens")):
            value, cap = getattr(options, name), getattr(self, limit)
            if value is not None and value > cap:
                return name, f"must be at most {cap:g} on this server (its limit {limit}), got {value:g}"
        return None


@dataclass(frozen=True)
class ServerLimits:
    """Server-wide connection hygiene (docs/protocol.md lists the defaults; a test keeps them equal).

    Attributes:
        max_connections: WebSocket connections open at once, with or without a session; more are refused (``busy``).
        max_sockets: TCP connections of any kind; past it the connection that has waited longest without sending a
            complete HTTP request is dropped to make room (half-open and slow clients cannot exhaust file descriptors).
        header_timeout: seconds an HTTP connection has to send a complete request head (slowloris).
        decode_workers: images decoded at once across the server.
    """

    max_connections: int = 64
    max_sockets: int = 512
    header_timeout: float = 10.0
    decode_workers: int = 2

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_sockets", "decode_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServerLimits.{name} must be a positive integer, got {value!r}")
        if not _is_number(self.header_timeout) or self.header_timeout <= 0:
            raise ValueError(f"ServerLimits.header_timeout must be a finite number > 0, got {self.header_timeout!r}")


# ---- client messages -----------------------------------------------------------------------------------------------
#: the stream options a client may set in ``open``: all but ``memory``, which is the server's (its operator bounds
#: every session's KV cache; a client must not lift that bound)
CLIENT_OPTIONS: tuple[str, ...] = tuple(name for name in OPTIONS if name != "memory")


@dataclass(frozen=True)
class Open:
    """Start the stream with the stream ``options`` the client sets (unset: the server's defaults)."""

    options: StreamOptions = field(default_factory=StreamOptions)
    silence: bool = True  # send a ``silence`` event for every silent frame


@dataclass
class Frame:
    """One image at stream time ``t`` (encoded bytes; decoded by the server)."""

    t: float
    data: bytes


@dataclass
class Query:
    """A user question at stream time ``at`` (None: now, the last frame's time). With ``answer=False`` it is an
    instruction ("Narrate what happens"): the model reads it and keeps watching, with no answer turn."""

    text: str
    at: float | None = None
    answer: bool = True


@dataclass
class Update:
    """Change the live session: θ."""

    threshold: float


@dataclass
class Ping:
    id: Any = None


@dataclass
class Close:
    """End the stream gracefully: waiting frames are watched, pending queries answered, then ``closed``."""


Message = Open | Frame | Query | Update | Ping | Close
_FIELDS: dict[str, tuple[str, ...]] = {
    "open": (*CLIENT_OPTIONS, "silence"),
    "frame": ("t", "data"),
    "query": ("text", "at", "answer"),
    "update": ("threshold",),
    "ping": ("id",),
    "close": (),
}


def parse_binary(data: bytes, limits: Limits) -> Frame:
    """A binary frame message: 8-byte LE float64 ``t`` + image bytes."""
    if len(data) <= FRAME_HEADER.size:
        raise ProtocolError("bad_message", f"a binary frame needs an 8-byte float64 time and image bytes, got "
                                           f"{len(data)} bytes")
    (t,) = FRAME_HEADER.unpack_from(data)
    return Frame(t=_time(t, "frame t"), data=_image_bytes(data[FRAME_HEADER.size:], limits))


def parse_text(text: str, limits: Limits) -> Message:
    """A JSON message; raises :class:`ProtocolError` naming what is wrong."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ProtocolError("bad_message", f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", f"a message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind not in _FIELDS:
        raise ProtocolError("bad_message", f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    unknown = sorted(set(obj) - set(_FIELDS[kind]) - {"type"})
    if unknown:
        raise ProtocolError("bad_message", f"unknown field(s) {', '.join(map(repr, unknown))} in {kind!r}; allowed: "
                                           f"{', '.join(_FIELDS[kind]) or 'none'}")
    if kind == "open":
        return _open(obj, limits)
    if kind == "frame":
        return _json_frame(obj, limits)
    if kind == "query":
        qtext = obj.get("text")
        if not isinstance(qtext, str) or not qtext.strip():
            raise ProtocolError("bad_message", f"query text must be a non-empty string, got {qtext!r}")
        if len(qtext) > limits.max_text_chars:
            raise ProtocolError("too_large", f"query text has {len(qtext)} characters; the limit is "
                                             f"{limits.max_text_chars}")
        at = obj.get("at")
        answer = obj.get("answer", True)
        if not isinstance(answer, bool):
            raise ProtocolError("bad_message", f"query answer must be true or false, got {answer!r}")
        return Query(text=qtext.strip(), at=None if at is None else _time(at, "query at"), answer=answer)
    if kind == "update":
        return Update(threshold=_option("threshold", obj.get("threshold")))
    if kind == "ping":
        return Ping(id=obj.get("id"))
    return Close()


def _open(obj: dict[str, Any], limits: Limits) -> Open:
    """An ``open`` message: its stream options checked by their checkers, then against this server's limits."""
    system = obj.get("system_prompt")
    if isinstance(system, str) and len(system) > limits.max_system_chars:
        raise ProtocolError("too_large", f"system_prompt has {len(system)} characters; the limit is "
                                         f"{limits.max_system_chars}")
    options = StreamOptions(**{name: _option(name, obj[name]) for name in CLIENT_OPTIONS if obj.get(name) is not None})
    if (over := limits.over_limit(options)) is not None:
        raise ProtocolError("bad_message", " ".join(over))
    silence = obj.get("silence", True)
    if not isinstance(silence, bool):
        raise ProtocolError("bad_message", f"silence must be true or false, got {silence!r}")
    return Open(options, silence=silence)


def _option(name: str, value: Any) -> Any:
    """A stream option's value, checked by its one checker; ``bad_message`` naming it otherwise."""
    try:
        return check_option(name, value)
    except ValueError as e:
        raise ProtocolError("bad_message", str(e)) from None


def _json_frame(obj: dict[str, Any], limits: Limits) -> Frame:
    data = obj.get("data")
    if not isinstance(data, str) or not data:
        raise ProtocolError("bad_message", "a JSON frame needs 'data': the base64 JPEG/PNG bytes")
    if data.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError("bad_message", f"frame data is not valid base64: {e}") from None
    return Frame(t=_time(obj.get("t"), "frame t"), data=_image_bytes(raw, limits))


def _image_bytes(data: bytes, limits: Limits) -> bytes:
    if len(data) > limits.max_frame_bytes:
        raise ProtocolError("too_large", f"frame image is {len(data)} bytes; the limit is {limits.max_frame_bytes}")
    return bytes(data)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _time(x: Any, what: str) -> float:
    if not _is_number(x) or x < 0:
        raise ProtocolError("bad_message", f"{what} must be a finite number of seconds >= 0, got {x!r}")
    return float(x)


# ---- client side: building messages ------------------------------------------------------------------------------
def pack_frame(t: float, image: bytes) -> bytes:
    """The binary frame message for image bytes at stream time ``t``."""
    return FRAME_HEADER.pack(float(t)) + bytes(image)


def open_message(silence: bool = True, options: StreamOptions | dict[str, Any] | None = None) -> str:
    """The ``open`` message for stream ``options`` (a :class:`StreamOptions` or a dict by name; unset or None: the
    server's); ``silence=False`` asks for no ``silence`` events."""
    fields = options.to_dict() if isinstance(options, StreamOptions) else dict(options or {})
    return message("open", **fields, silence=None if silence else False)


def message(kind: str, **fields: Any) -> str:
    """A JSON client message; fields that are None are left out (the server's defaults apply)."""
    if kind not in _FIELDS:
        raise ValueError(f"unknown message type {kind!r}; expected one of {', '.join(MESSAGE_TYPES)}")
    return json.dumps({"type": kind, **{k: v for k, v in fields.items() if v is not None}}, ensure_ascii=False)


# ---- server events -------------------------------------------------------------------------------------------------
def error_event(code: str, message: str, t: float | None = None, **extra: Any) -> dict[str, Any]:
    """An ``error`` event: ``code`` for programs, ``message`` for people."""
    return {"type": "error", "t": t, "code": code, "message": message, **extra}


def event(type_: str, t: float | None = None, **fields: Any) -> dict[str, Any]:
    """Any other server event."""
    return {"type": type_, "t": None if t is None else round(float(t), 6), **fields}


def dumps_event(ev: dict[str, Any]) -> str:
    """An event as strict JSON text: a non-finite number (NaN, ±inf) becomes null, never the invalid ``NaN``."""
    try:
        return json.dumps(ev, ensure_ascii=False, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(ev), ensure_ascii=False, allow_nan=False)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x

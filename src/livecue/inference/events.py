"""Events a stream produces. Each has a JSON form: one object per line with ``type`` and ``t`` (stream seconds).

``Silence`` (the model chose to stay quiet on a frame), ``Reply`` (it chose to speak), ``Answer`` (to a user query),
``Dropped`` (frames the real-time pipeline skipped because the model fell behind) and ``Error``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass
class Event:
    """Base class: ``t`` is the stream time in seconds of the frame (or query) the event belongs to."""

    type: ClassVar[str] = "event"
    t: float

    def to_dict(self) -> dict[str, Any]:
        data = {"type": self.type}
        data.update({k: _round(v) for k, v in asdict(self).items()})
        return data

    def to_json(self) -> str:
        """One line of strict JSON: a non-finite number (NaN, ±Infinity) is written as ``null``."""
        return json.dumps(self.to_dict(), ensure_ascii=False, allow_nan=False)


def _round(v: Any) -> Any:
    """Floats rounded to 6 decimals; NaN and ±Infinity become None (strict JSON has no such numbers)."""
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v


@dataclass
class Silence(Event):
    """The model stayed silent at frame time ``t``; ``p_silence`` is p(silence token) against the threshold."""

    type: ClassVar[str] = "silence"
    p_silence: float = 1.0
    frame: int = 0


@dataclass
class Reply(Event):
    """The model spoke by itself at frame time ``t``."""

    type: ClassVar[str] = "reply"
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    latency: float = 0.0  # seconds spent decoding the reply
    p_silence: float = 0.0
    frame: int = 0
    truncated: bool = False  # the reply hit max_reply_tokens (the turn is still closed with eos)


@dataclass
class Answer(Event):
    """The answer to the user query asked at ``query_t``, given at stream time ``t``."""

    type: ClassVar[str] = "answer"
    query: str = ""
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    latency: float = 0.0
    query_t: float = 0.0
    truncated: bool = False


@dataclass
class Dropped(Event):
    """``count`` frames up to stream time ``t`` were skipped because the model fell behind real time."""

    type: ClassVar[str] = "dropped"
    count: int = 0
    reason: str = "behind real time"


@dataclass
class Error(Event):
    """Something went wrong at stream time ``t``; the stream goes on when it can."""

    type: ClassVar[str] = "error"
    message: str = ""

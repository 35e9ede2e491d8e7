"""StreamStats: what one stream has done so far (frames watched, replies, answers, drops, errors), counted the same
way by every front door: the local :class:`~livecue.inference.pipeline.Pipeline` (``watch``, ``demo``), each server
session (the ``closed`` event and ``GET /sessions``) and the summary lines the commands print.

Pure Python (no torch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .events import Answer, Dropped, Error, Event, Reply

COUNTERS = ("frames", "replies", "answers", "dropped", "errors", "last_t")  # the JSON fields (docs/protocol.md)


@dataclass
class StreamStats:
    """Counters of one stream, and its wall-clock span.

    Attributes:
        frames: frames the model watched.
        replies, answers: replies it chose to give; answers to queries.
        dropped: frames skipped or dropped (behind real time, faster than the fps, a full queue).
        errors: frames or messages that failed (the stream went on).
        last_t: stream time of the last frame watched.
        started, ended: ``time.perf_counter()`` at the start and (once over) the end.
    """

    frames: int = 0
    replies: int = 0
    answers: int = 0
    dropped: int = 0
    errors: int = 0
    last_t: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    @property
    def wall(self) -> float:
        """Seconds from the start to the end (or to now, while the stream runs)."""
        return (self.ended or time.perf_counter()) - self.started

    @property
    def fps(self) -> float:
        """Frames watched per wall-clock second."""
        return self.frames / self.wall if self.wall > 0 else 0.0

    def frame(self, t: float) -> None:
        """Count a frame watched at stream time ``t``."""
        self.frames += 1
        self.last_t = t

    def count(self, event: Event) -> None:
        """Count an event: a reply, an answer, dropped frames or an error (silence is counted by :meth:`frame`)."""
        if isinstance(event, Reply):
            self.replies += 1
        elif isinstance(event, Answer):
            self.answers += 1
        elif isinstance(event, Dropped):
            self.dropped += event.count
        elif isinstance(event, Error):
            self.errors += 1

    def end(self) -> None:
        """Mark the stream over (:attr:`wall` stops growing)."""
        self.ended = time.perf_counter()

    def to_dict(self) -> dict[str, Any]:
        """The counters as JSON fields (``closed`` events, ``GET /sessions``)."""
        return {name: getattr(self, name) for name in COUNTERS}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, started: float | None = None,
                  ended: float | None = None) -> StreamStats:
        """Counters read back from their JSON fields (e.g. a server's ``closed`` event; missing ones are 0)."""
        stats = cls(**{name: data.get(name) or 0 for name in COUNTERS})
        if started is not None:
            stats.started = started
        stats.ended = ended
        return stats


__all__ = ["COUNTERS", "StreamStats"]

"""One client's stream inside the scheduler (:class:`ServeSession`) and the small bounded parts it is made of.

Everything a session holds is bounded: ``frames`` by ``queue_size`` (drop-oldest), ``controls`` by
``max_pending_queries`` queries plus one θ update (updates between two rounds are coalesced), the engine session's
context by the server's memory policy (a sink + sliding window by default), query text by a token bucket.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..inference.engine import StreamSession
from ..inference.stats import StreamStats
from .protocol import ProtocolError, event
from .streaming import TextDeltas

Emit = Callable[[dict[str, Any]], None]


def describe_memory(policy: Any) -> dict[str, Any]:
    """A memory policy as JSON: its class name and fields (e.g. ``{"policy": "SinkWindow", "max_tokens": 4096}``)."""
    fields = dict(getattr(policy, "__dict__", {}))
    return {"policy": type(policy).__name__, **{k: v for k, v in fields.items() if not k.startswith("_")}}


class SchedulerFull(RuntimeError):
    """No room for another session (``max_sessions`` are open)."""


class QueryRefused(ProtocolError):
    """A query the session cannot take now (``too_many_queries``): answered with an error event."""


class TokenBucket:
    """``rate`` units per second sustained, at most ``burst`` at once (thread-safe)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: float = 1.0) -> bool:
        """Spend ``n`` units if there are that many; else spend nothing and return False."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False


@dataclass(eq=False)
class ServeSession:
    """One client's stream inside the scheduler (compared by identity)."""

    id: str
    stream: StreamSession
    emit: Emit
    fps: float
    silence: bool
    queue_size: int
    query_tokens: TokenBucket
    opened: float = field(default_factory=time.time)
    frames: collections.deque = field(default_factory=collections.deque)  # (t, frame) waiting for the model
    controls: collections.deque = field(default_factory=collections.deque)  # (kind, payload)
    queued_queries: int = 0    # queries in `controls` (not yet handed to the engine session)
    stats: StreamStats = field(default_factory=StreamStats)  # ``closed`` and ``GET /sessions`` send its counters
    dropped_pending: int = 0  # dropped (queue full) since the last report
    dropped_t: float = 0.0
    skipped_pending: int = 0  # skipped (faster than the session fps) since the last report
    skipped_t: float = 0.0
    kept_t: float | None = None  # time of the last frame admitted at the session fps
    closing: bool = False      # graceful close asked: finish the queue, answer queries, then `closed`
    close_reason: str = "closed by the client"  # what `closed` says (the server's frame limit: it says so)
    finishing: bool = False    # its pending queries are being answered (the last program of the session)
    gone: bool = False         # removed (disconnected or closed)
    busy: bool = False         # the worker has a program of it in the batch
    deltas: TextDeltas | None = None  # the reply being streamed token by token

    @property
    def pending_queries(self) -> int:
        """Queries waiting: queued for the worker plus held by the engine session (approximate off the worker)."""
        return self.queued_queries + len(self.stream.queries)

    def info(self) -> dict[str, Any]:
        """A snapshot for ``GET /sessions`` (read without the worker's cooperation: approximate)."""
        return {"id": self.id, "opened": round(self.opened, 3), "fps": self.fps,
                "threshold": self.stream.threshold, "queued": len(self.frames),
                "pending_queries": self.pending_queries,
                "context_tokens": self.stream.context_length, "evicted_tokens": self.stream.evicted_tokens,
                "closing": self.closing, **self.stats.to_dict()}

    def take_drops(self, before: float = math.inf) -> list[dict[str, Any]]:
        """``dropped`` events for the frames dropped/skipped so far that are older than ``before`` (scheduler lock
        held)."""
        out = []
        if self.skipped_pending and self.skipped_t < before:
            out.append(event("dropped", self.skipped_t, count=self.skipped_pending,
                             reason=f"frames faster than the session's {self.fps:g} fps were skipped"))
            self.stats.dropped += self.skipped_pending
            self.skipped_pending = 0
        if self.dropped_pending:
            out.append(event("dropped", self.dropped_t, count=self.dropped_pending,
                             reason=f"the model fell behind: the session's frame queue ({self.queue_size}) was full, "
                                    "oldest frames dropped"))
            self.stats.dropped += self.dropped_pending
            self.dropped_pending = 0
        return sorted(out, key=lambda e: e["t"])

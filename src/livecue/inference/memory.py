"""Memory policies: what a stream keeps in its KV cache (issue: bounded memory for unbounded streams).

* :class:`Unbounded` (upstream): everything stays; per-frame cost and memory grow with the stream.
* :class:`SinkWindow`: an attention sink (the system prompt and whatever preceded the first frame) plus a sliding
  window of the most recent frames and turns. When the cache exceeds ``max_tokens`` the oldest whole units (a frame
  with its separator, or a query/reply turn) are evicted down to ``max_tokens - chunk`` (evicting in chunks keeps the
  cost off most frames). Kept keys are re-rotated so positions stay contiguous for RoPE models
  (:func:`livecue.model.lm.evict_span`), which keeps positions inside the range the model was trained on.

A policy sees the session after every frame (and its reply or answer) through ``after_step(session)``; the session
keeps ``units``, the cache spans of everything fed since the first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..model import lm as lm_api


class MemoryPolicy(Protocol):
    def after_step(self, session) -> None: ...


@dataclass(frozen=True)
class Unbounded:
    """Keep everything (upstream behaviour)."""

    def after_step(self, session) -> None:
        return None


@dataclass(frozen=True)
class SinkWindow:
    """Attention sink + sliding window of recent units, at most ``max_tokens`` cached tokens.

    Args:
        max_tokens: cache budget in tokens (e.g. 11 tokens per live1+ frame: 4096 ≈ 6 minutes at 2 fps).
        chunk: evict down to ``max_tokens - chunk`` at a time (amortises the eviction).
    """

    max_tokens: int = 4096
    chunk: int = 256

    def __post_init__(self) -> None:
        if self.max_tokens <= 0 or not 0 <= self.chunk < self.max_tokens:
            raise ValueError(f"SinkWindow needs max_tokens > 0 and 0 <= chunk < max_tokens, got "
                             f"max_tokens={self.max_tokens}, chunk={self.chunk}")

    def after_step(self, session) -> None:
        length = lm_api.cache_length(session.cache)
        if length <= self.max_tokens or not session.units:
            return
        target = self.max_tokens - self.chunk
        sink = session.units[0][0]
        drop_end = sink
        dropped = 0
        # evict whole units, oldest first, but never the newest one (the frame just fed)
        while dropped < len(session.units) - 1 and length - (drop_end - sink) > target:
            drop_end = session.units[dropped][1]
            dropped += 1
        if drop_end == sink:
            return
        lm_api.evict_span(session.engine.model.lm, session.cache, sink, drop_end)
        shift = drop_end - sink
        session.units = [(a - shift, b - shift) for a, b in session.units[dropped:]]
        session.evicted_tokens += shift
        if session.history is not None:
            del session.history[sink:drop_end]


def parse_memory(spec: str) -> MemoryPolicy:
    """``unbounded`` | ``sink:MAX_TOKENS`` | ``sink:MAX_TOKENS:CHUNK`` -> a memory policy (default chunk: an eighth
    of the budget, at most 256). The spelling of ``--memory`` options."""
    parts = spec.strip().lower().split(":")
    if parts == ["unbounded"]:
        return Unbounded()
    if parts[0] == "sink" and len(parts) in (2, 3) and all(p.isdigit() and len(p) <= 9 for p in parts[1:]):
        budget = int(parts[1])
        try:
            return SinkWindow(budget, int(parts[2]) if len(parts) == 3 else min(256, budget // 8))
        except ValueError as e:
            raise ValueError(f"memory {spec!r}: {e}") from None
    raise ValueError(f"memory must be 'unbounded', 'sink:MAX_TOKENS' or 'sink:MAX_TOKENS:CHUNK', got {spec!r}")

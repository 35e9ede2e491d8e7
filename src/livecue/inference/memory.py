"""Memory policies: what a stream keeps in its KV cache (bounded memory for unbounded streams).

* :class:`Unbounded` (upstream): everything stays; per-frame cost and memory grow with the stream.
* :class:`SinkWindow`: an attention sink (the system prompt and whatever preceded the first frame) plus a sliding
  window of the most recent frames and turns. When the cache exceeds ``max_tokens`` the oldest whole units (a frame
  with its separator, or a query/reply turn) are evicted down to ``max_tokens - chunk`` (evicting in chunks keeps the
  cost off most frames).

A policy is a pure planner: after every frame (and its reply or answer) the session asks ``plan(units, length)``,
where ``units`` are the cache spans ``[(start, end), ...]`` of everything fed since the first frame (the sink is
everything before ``units[0][0]``) and ``length`` the cache length, and gets back the :class:`Eviction` to apply (or
None). The session applies it through the cache module (:func:`livecue.model.lm.evict_span`, which re-rotates the
kept keys so positions stay contiguous for RoPE models). Policies never touch a session, a cache or a tensor.

This module is pure Python (no torch): the command line parses ``--memory`` with it at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

Units = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Eviction:
    """Drop cache positions ``[start, end)``: the first ``units`` units (``start`` is the end of the sink)."""

    start: int
    end: int
    units: int


class MemoryPolicy(Protocol):
    def plan(self, units: Units, length: int) -> Eviction | None: ...


@dataclass(frozen=True)
class Unbounded:
    """Keep everything (upstream behaviour)."""

    def plan(self, units: Units, length: int) -> Eviction | None:
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

    def plan(self, units: Units, length: int) -> Eviction | None:
        if length <= self.max_tokens or not units:
            return None
        target = self.max_tokens - self.chunk
        sink = units[0][0]
        drop_end, dropped = sink, 0
        # evict whole units, oldest first, but never the newest one (the frame just fed)
        while dropped < len(units) - 1 and length - (drop_end - sink) > target:
            drop_end = units[dropped][1]
            dropped += 1
        return Eviction(sink, drop_end, dropped) if drop_end > sink else None


def parse_memory(spec: str) -> MemoryPolicy:
    """``unbounded`` | ``sink:MAX_TOKENS`` | ``sink:MAX_TOKENS:CHUNK`` -> a memory policy (default chunk: an eighth
    of the budget, at most 256). The spelling of ``--memory`` options."""
    parts = str(spec).strip().lower().split(":")
    if parts == ["unbounded"]:
        return Unbounded()
    if parts[0] == "sink" and len(parts) in (2, 3) and all(p.isdigit() and len(p) <= 9 for p in parts[1:]):
        budget = int(parts[1])
        try:
            return SinkWindow(budget, int(parts[2]) if len(parts) == 3 else min(256, budget // 8))
        except ValueError as e:
            raise ValueError(f"memory {spec!r}: {e}") from None
    raise ValueError(f"memory must be 'unbounded', 'sink:MAX_TOKENS' or 'sink:MAX_TOKENS:CHUNK', got {spec!r}")


def memory_spec(policy: MemoryPolicy) -> str:
    """The ``--memory`` spelling of a policy (inverse of :func:`parse_memory` for the built-in policies)."""
    if isinstance(policy, SinkWindow):
        return f"sink:{policy.max_tokens}:{policy.chunk}"
    if isinstance(policy, Unbounded):
        return "unbounded"
    return type(policy).__name__

"""The streaming decision (SPEC §6) and reply sampling, as pure functions of logits.

Stay silent iff ``p(silence token) >= θ``, with ``p = softmax(last logits)``. Higher θ makes the model more
talkative (upstream θ = 0.725).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Decision:
    speak: bool
    p_silence: float


def decide(last_logits: torch.Tensor, silence_id: int, threshold: float) -> Decision:
    """Shape: last_logits (V,). Silent iff softmax(last_logits)[silence_id] >= threshold."""
    p = torch.softmax(last_logits.float(), dim=-1)[silence_id].item()
    return Decision(speak=p < threshold, p_silence=p)


@dataclass(frozen=True)
class SamplingConfig:
    """Reply decoding. ``temperature = 0`` is greedy (the default)."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def next_token(last_logits: torch.Tensor, sampling: SamplingConfig, previous: list[int],
               generator: torch.Generator | None = None) -> int:
    """Pick the next reply token. Shape: last_logits (V,)."""
    logits = last_logits.float()
    if sampling.repetition_penalty != 1.0 and previous:
        idx = torch.tensor(sorted(set(previous)), device=logits.device)
        seen = logits[idx]
        logits = logits.clone()
        logits[idx] = torch.where(seen > 0, seen / sampling.repetition_penalty, seen * sampling.repetition_penalty)
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < sampling.top_p  # always keeps the most likely token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))

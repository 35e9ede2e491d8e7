"""The streaming decision (SPEC §6) and reply sampling, as pure functions of logits.

Stay silent iff ``p(silence token) >= θ``, with ``p = softmax(last logits)``. Higher θ makes the model more
talkative (upstream θ = 0.725). Reply sampling options: :class:`~livecue.inference.options.SamplingConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .options import SamplingConfig


@dataclass(frozen=True)
class Decision:
    speak: bool
    p_silence: float


def decide(last_logits: torch.Tensor, silence_id: int, threshold: float) -> Decision:
    """Shape: last_logits (V,). Silent iff softmax(last_logits)[silence_id] >= threshold."""
    p = torch.softmax(last_logits.float(), dim=-1)[silence_id].item()
    return Decision(speak=p < threshold, p_silence=p)


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

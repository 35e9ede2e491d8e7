"""The streaming decision (SPEC §6) and reply sampling, as pure functions of logits.

Stay silent iff ``p(silence token) >= θ``, with ``p = softmax(last logits)``. Higher θ makes the model more
talkative (upstream θ = 0.725). Reply sampling options: :class:`~livecue.inference.options.SamplingConfig`.

Benchmarks and tests may take the decision out of the model's hands (``forced``) and keep eos out of a reply
(``ban``); p(silence) is still computed and reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .options import SamplingConfig


@dataclass(frozen=True)
class Decision:
    """Whether the model speaks after a frame, and p(silence) it decided on."""

    speak: bool
    p_silence: float


def decide(last_logits: torch.Tensor, silence_id: int, threshold: float, forced: bool | None = None) -> Decision:
    """Silent iff ``softmax(last_logits)[silence_id] >= threshold``; ``forced`` (not None) is the decision whatever
    p is. Shape: last_logits (V,)."""
    p = torch.softmax(last_logits.float(), dim=-1)[silence_id].item()
    return Decision(speak=p < threshold if forced is None else forced, p_silence=p)


def next_token(last_logits: torch.Tensor, sampling: SamplingConfig, previous: list[int],
               generator: torch.Generator | None = None, ban: int | tuple[int, ...] | None = None) -> int:
    """Pick the next reply token (never one of ``ban``, when given). Shape: last_logits (V,)."""
    logits = last_logits.float()
    banned = [i for i in ((ban,) if isinstance(ban, int) else ban or ()) if 0 <= i < logits.shape[-1]]
    if banned:
        logits = logits.clone()
        logits[banned] = float("-inf")
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

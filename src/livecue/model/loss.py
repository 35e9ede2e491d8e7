"""The streaming loss (SPEC §3): weighted cross-entropy with one normaliser.

``L = Σ_i w_i · CE_i / #{labelled positions}`` where ``w_i = α`` (``stream_loss_weight``) at positions whose input
is the frame's last token (``frame_end``: ``<v>``, or the frame suffix such as Qwen's ``<|vision_end|>``), where the
silence/speak decisions are learned, and 1 elsewhere. One sum, one count: not the mean of two averages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.labels import IGNORE


def streaming_loss(logits: torch.Tensor, labels: torch.Tensor, input_ids: torch.Tensor, frame_end_id: int,
                   stream_loss_weight: float = 1.0) -> torch.Tensor:
    """Weighted CE over labelled positions: α where the input is ``frame_end_id``
    (:attr:`~livecue.data.labels.Markers.frame_end`), 1 elsewhere.

    Shape:
        logits: (B, T, V); labels: (B, T) position-aligned targets (-100 = not learned); input_ids: (B, T).

    Returns:
        A scalar; 0 (with a graph) when nothing is labelled.
    """
    if logits.shape[:2] != labels.shape or labels.shape != input_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and input_ids "
                         f"{tuple(input_ids.shape)} must agree on (B, T)")
    mask = labels != IGNORE
    count = mask.sum()
    if count == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[mask].float(), labels[mask], reduction="none")  # (N,)
    weights = torch.where(input_ids[mask] == frame_end_id, stream_loss_weight, 1.0).to(ce.dtype)  # (N,)
    return (weights * ce).sum() / count

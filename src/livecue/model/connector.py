"""The connector (projector) from vision features to LM embeddings (SPEC §1).

``Linear(D_vision → H) → GELU (exact erf) → Linear(H → H)``, with bias, fully trained. Built as an
``nn.Sequential`` so its state-dict names are upstream's: ``connector.0.*`` and ``connector.2.*``.
"""

from __future__ import annotations

from torch import nn


def build_connector(vision_hidden: int, lm_hidden: int, kind: str = "mlp2x_gelu") -> nn.Sequential:
    """Shape: (..., D_vision) -> (..., H)."""
    if kind != "mlp2x_gelu":
        raise ValueError(f"unknown connector kind {kind!r}; livecue knows 'mlp2x_gelu'")
    return nn.Sequential(nn.Linear(vision_hidden, lm_hidden), nn.GELU(approximate="none"),
                         nn.Linear(lm_hidden, lm_hidden))

"""LiveModel: a frame encoder, a connector and any Hugging Face causal LM, composed (never subclassed).

The token sequence holds ``<v>`` placeholders where frame tokens go (SPEC §1). Upstream never resizes the LM's
embedding table for ``<v>``: ids are clamped to ``vocab - 1`` for the lookup, then every ``<v>`` position is
overwritten, in order, with the projected frame tokens. So the model can never emit ``<v>``. livecue does the same,
but raises when the number of ``<v>`` positions and of frame tokens differ (upstream silently broadcasts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import LiveConfig
from ..data.labels import IGNORE
from . import lm as lm_api
from .connector import build_connector
from .loss import streaming_loss
from .vision import FrameEncoder


@dataclass
class LiveOutput:
    """Logits, the streaming loss (when labels were given) and the KV cache (when asked for)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    cache: Any = None


class LiveModel(nn.Module):
    """Frame encoder + connector + causal LM.

    Args:
        vision: the frame encoder, or ``None`` for a model fed only precomputed frame features.
        lm: any ``AutoModelForCausalLM``.
        cfg: the model's :class:`~livecue.config.LiveConfig`.
        v_token_id: the tokenizer's ``<v>`` id.
        vision_hidden: the vision feature width (needed when ``vision`` is ``None``).
    """

    def __init__(self, vision: FrameEncoder | None, lm: nn.Module, cfg: LiveConfig, v_token_id: int,
                 vision_hidden: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.lm = lm
        self.v_token_id = int(v_token_id)
        width = vision.hidden_size if vision is not None else vision_hidden
        if width is None:
            raise ValueError("LiveModel without a vision tower needs vision_hidden (the feature width)")
        param = next(lm.parameters())
        self.connector = build_connector(width, lm_api.hidden_size(lm), cfg.connector.kind).to(param.device,
                                                                                                  param.dtype)

    # ---- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.connector.parameters()).dtype

    @property
    def vocab_size(self) -> int:
        """Rows of the LM's embedding table (``<v>`` lies beyond it when the tokenizer grew)."""
        return int(lm_api.input_embeddings(self.lm).num_embeddings)

    @property
    def frame_num_tokens(self) -> int:
        return self.cfg.frame_num_tokens

    # ---- frames -------------------------------------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Vision features of uint8 frames.

        Shape: (F, 3, H, W) uint8 -> (F, K, D_vision).
        """
        if self.vision is None:
            raise ValueError("this LiveModel has no vision tower: pass frame_features instead of frames")
        return self.vision(frames)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Connector. Shape: (F, K, D_vision) -> (F, K, H)."""
        if features.ndim != 3 or features.shape[1] != self.frame_num_tokens:
            raise ValueError(f"frame features must have shape (F, {self.frame_num_tokens}, D), "
                             f"got {tuple(features.shape)}")
        width = self.connector[0].in_features
        if features.shape[2] != width:
            raise ValueError(f"frame features are {features.shape[2]} wide but this model's connector takes {width} "
                             f"(features from another vision config? e.g. a feature cache encoded with another "
                             f"vision.frame_colour_bins; this model's is {self.cfg.vision.frame_colour_bins})")
        return self.connector(features.to(self.device, self.dtype))

    def frame_embeddings(self, frames: torch.Tensor | None = None,
                         frame_features: torch.Tensor | None = None) -> torch.Tensor | None:
        """Projected frame tokens from pixels or precomputed features. Shape: -> (F, K, H), or None."""
        if frames is not None and frame_features is not None:
            raise ValueError("pass frames or frame_features, not both")
        if frames is not None:
            frame_features = self.encode_frames(frames)
        return None if frame_features is None else self.project(frame_features)

    # ---- embeddings ---------------------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings with every ``<v>`` position overwritten by the frame tokens, in order.

        Shape:
            input_ids: (B, T); frame_embeds: (F, K, H) or (F*K, H) covering the ``<v>`` positions of the whole
            batch in row-major (batch, then time) order; returns (B, T, H).
        """
        table = lm_api.input_embeddings(self.lm)
        input_ids = input_ids.to(table.weight.device)  # no-op when already there (the engine passes CPU ids)
        embeds = table(input_ids.clamp(max=table.num_embeddings - 1))  # (B, T, H)
        is_v = input_ids == self.v_token_id
        n_v = int(is_v.sum())
        n_frames = 0 if frame_embeds is None else frame_embeds.shape[0] * (
            frame_embeds.shape[1] if frame_embeds.ndim == 3 else 1)
        if n_v != n_frames:
            raise ValueError(f"the input holds {n_v} <v> positions but {n_frames} frame tokens were given "
                             f"({self.frame_num_tokens} per frame)")
        if n_v:
            flat = frame_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)  # (F*K, H)
            embeds = embeds.masked_scatter(is_v[..., None], flat)
        return embeds

    # ---- forward ------------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, *, frames: torch.Tensor | None = None,
                frame_features: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                cache: Any = None, use_cache: bool = False, logits_to_keep: int = 0,
                labelled_logits_only: bool = False) -> LiveOutput:
        """Embed, splice frames, run the LM; the streaming loss when ``labels`` are given.

        Shape:
            input_ids: (B, T); frames: (F, 3, H, W) uint8 or frame_features: (F, K, D_vision) for the batch's
            <v> positions in order; labels: (B, T) position-aligned (-100 = not learned); logits: (B, T, V).

        ``labelled_logits_only`` (training): compute the vocabulary projection only at the positions some sample
        of the batch learns, which saves most of the LM head's time and memory; ``logits`` then covers only those
        positions. The loss is the same.
        """
        embeds = self.embed(input_ids, self.frame_embeddings(frames, frame_features))
        keep: Any = logits_to_keep
        if labelled_logits_only:
            if labels is None:
                raise ValueError("labelled_logits_only needs labels")
            keep = (labels != IGNORE).any(dim=0).nonzero().flatten().to(embeds.device)  # (T',)
        logits, cache = lm_api.lm_forward(self.lm, embeds, cache=cache, attention_mask=attention_mask,
                                          position_ids=position_ids, use_cache=use_cache or cache is not None,
                                          logits_to_keep=keep)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need logits for every position: leave logits_to_keep at 0")
            labels = labels.to(logits.device)
            ids = input_ids
            if labelled_logits_only:
                labels, ids = labels[:, keep], input_ids[:, keep]
            loss = streaming_loss(logits, labels, ids, self.v_token_id, self.cfg.stream.stream_loss_weight)
        return LiveOutput(logits=logits, loss=loss, cache=cache)

    def forward_streams(self, input_ids: torch.Tensor, frame_features: torch.Tensor | None, caches: list[Any],
                        lengths: list[int]) -> tuple[torch.Tensor, list[Any]]:
        """One forward for several streams (inference): stream i's ``lengths[i]`` new tokens, side by side in
        ``input_ids``, continue ``caches[i]`` (``None``: a new stream). See :func:`livecue.model.lm.ragged_forward`.

        Shape: input_ids (1, Σq); frame_features (F, K, D_vision) for the ``<v>`` positions in order; returns
        logits (N, V) at each stream's last new token and the updated caches.
        """
        embeds = self.embed(input_ids, self.frame_embeddings(frame_features=frame_features))
        return lm_api.ragged_forward(self.lm, embeds, caches, lengths)

"""LiveModel: a frame encoder, a connector and any Hugging Face causal LM, composed (never subclassed).

The token sequence holds ``<v>`` placeholders where frame tokens go (SPEC §1). Upstream never resizes the LM's
embedding table for ``<v>``: ids are clamped to ``vocab - 1`` for the lookup, then every ``<v>`` position is
overwritten, in order, with the projected frame tokens. So the model can never emit ``<v>``. livecue does the same,
but raises when the number of ``<v>`` positions and of frame tokens differ (upstream silently broadcasts).

The same composition holds a pretrained VLM (``architecture: vlm``, :mod:`livecue.model.vlm`): its frame encoder
ends with the VLM's own projector, the connector is the identity, the placeholder is the family's image token and the
LM is the VLM's language model. Such a model may need explicit positions (Qwen's M-RoPE): :meth:`LiveModel.positions`
computes them from the ids, and every forward that continues a KV cache must be given them (the streaming engine
keeps each stream's next position). Its frame features may carry per-level features after the tokens (Qwen3-VL's
DeepStack): :meth:`LiveModel.embed_frames` splices the tokens in and hands the levels to the LM, in every forward
that feeds frames (training, streaming steps, ragged batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import LiveConfig
from ..data.labels import IGNORE
from . import lm as lm_api
from .connector import build_connector
from .loss import streaming_loss

#: ``scheme(input_ids (B, T), start) -> (position ids, next position of each row (B,))`` (LiveModel.positions)
PositionScheme = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


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
        lm: any ``AutoModelForCausalLM`` (or a VLM's :class:`~livecue.model.vlm.TextLM`).
        cfg: the model's :class:`~livecue.config.LiveConfig`.
        v_token_id: the tokenizer's ``<v>`` id.
        vision_hidden: the vision feature width (needed when ``vision`` is ``None``).
        connector: the projector from frame features to the LM's embeddings; None builds ``cfg.connector``'s (a
            VLM's frame encoder ends with its own projector: ``nn.Identity()``).
        frame_end_id: the frame's last token, where the stream loss weight α applies (the placeholder, or a frame
            suffix such as Qwen's ``<|vision_end|>``); None: ``v_token_id``.
        positions: the LM's position scheme, ``scheme(input_ids, start) -> (position_ids, next)``
            (:class:`~livecue.model.vlm.MRopePositions`); None: positions are counted from the cache, as every
            1-D RoPE LM does.
    """

    def __init__(self, vision: nn.Module | None, lm: nn.Module, cfg: LiveConfig, v_token_id: int,
                 vision_hidden: int | None = None, *, frame_end_id: int | None = None,
                 connector: nn.Module | None = None, positions: PositionScheme | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision
        self.lm = lm
        self.v_token_id = int(v_token_id)
        self.frame_end_id = self.v_token_id if frame_end_id is None else int(frame_end_id)
        self.position_scheme = positions
        width = vision.hidden_size if vision is not None else vision_hidden
        if width is None:
            raise ValueError("LiveModel without a vision tower needs vision_hidden (the feature width)")
        param = next(lm.parameters())
        if connector is None:
            connector = build_connector(width, lm_api.hidden_size(lm), cfg.connector.kind)
        self.connector = connector.to(param.device, param.dtype)

    # ---- properties ---------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype frame features are cast to: the connector's (a VLM's: the LM's embeddings')."""
        param = next(self.connector.parameters(), None)
        return (param if param is not None else lm_api.input_embeddings(self.lm).weight).dtype

    @property
    def feature_width(self) -> int:
        """D: the width of the frame features the model takes (its vision encoder's output)."""
        if isinstance(self.connector, nn.Identity):  # a VLM's tokens (and their DeepStack levels, if any)
            return lm_api.hidden_size(self.lm) * (1 + lm_api.deepstack_levels(self.lm))
        return self.connector[0].in_features

    @property
    def explicit_positions(self) -> bool:
        """Whether every forward that continues a KV cache needs position ids (:meth:`positions`)."""
        return self.position_scheme is not None

    @property
    def vocab_size(self) -> int:
        """Rows of the LM's embedding table (``<v>`` lies beyond it when the tokenizer grew)."""
        return int(lm_api.input_embeddings(self.lm).num_embeddings)

    @property
    def frame_num_tokens(self) -> int:
        return self.cfg.frame_num_tokens

    # ---- positions ----------------------------------------------------------------------------------------------
    def positions(self, input_ids: torch.Tensor, start: int = 0) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The position ids of ``input_ids`` when its first token is at position ``start``, and each row's next
        position. ``None`` for 1-D RoPE LMs (transformers counts positions from the cache; the next is
        ``start + T``); a VLM's family scheme otherwise (Qwen's M-RoPE: ``(3, B, T)``).

        Shape: input_ids (B, T) -> (position ids or None, next (B,)).
        """
        if self.position_scheme is None:
            return None, torch.full((input_ids.shape[0],), start + input_ids.shape[1], dtype=torch.long)
        return self.position_scheme(input_ids, start)

    # ---- frames -------------------------------------------------------------------------------------------------
    def frame_blocks(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Each token's frame in ``input_ids`` (its placeholders, K per frame, counted per row from 0; -1 for every
        other token) when the LM lets a frame's tokens attend to each other (Gemma 3:
        :func:`livecue.model.lm.bidirectional_frames`); None for a causal LM. Shape: (B, T) -> (B, T) long.
        """
        if not lm_api.bidirectional_frames(self.lm):
            return None
        is_v = input_ids == self.v_token_id
        frame = (is_v.long().cumsum(-1) - 1).div(self.frame_num_tokens, rounding_mode="floor")
        return torch.where(is_v, frame, -1)

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
        width = self.feature_width
        if features.shape[2] != width:
            v = self.cfg.vision
            hint = ("from another model?" if self.cfg.is_vlm else "from another vision config? e.g. a feature cache "
                    f"encoded with another vision.frame_colour_bins / frame_colour_segments / frame_segment_size; "
                    f"this model's are {v.frame_colour_bins} / {v.frame_colour_segments} / {v.frame_segment_size}")
            raise ValueError(f"frame features are {features.shape[2]} wide but this model's connector takes {width} "
                             f"(features {hint})")
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
        if n_v and frame_embeds.shape[-1] != embeds.shape[-1]:
            raise ValueError(f"frame tokens are {frame_embeds.shape[-1]} wide but the LM's embeddings "
                             f"{embeds.shape[-1]} (frames with DeepStack levels: embed_frames)")
        if n_v:
            flat = frame_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)  # (F*K, H)
            embeds = embeds.masked_scatter(is_v[..., None], flat)
        return embeds

    def embed_frames(self, input_ids: torch.Tensor, frame_embeds: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, lm_api.FrameLevels | None]:
        """:meth:`embed`, for frame tokens that may carry the per-level features the LM adds after its first layers
        (Qwen3-VL's DeepStack: :func:`livecue.model.lm.deepstack_levels` = L): the tokens are spliced in, the levels
        come back for :func:`livecue.model.lm.lm_forward`. None when the LM has no levels or no frame is fed.

        Shape: frame_embeds (F, K, (1 + L) * H) -> embeddings (B, T, H) and levels (L, F*K, H) at the ``<v>``
        positions.
        """
        levels = lm_api.deepstack_levels(self.lm)
        if not levels or frame_embeds is None:
            return self.embed(input_ids, frame_embeds), None
        tokens = frame_embeds.reshape(-1, 1 + levels, frame_embeds.shape[-1] // (1 + levels))  # (F*K, 1 + L, H)
        embeds = self.embed(input_ids, tokens[:, 0])
        mask = input_ids.to(embeds.device) == self.v_token_id
        return embeds, lm_api.FrameLevels(mask, tokens[:, 1:].transpose(0, 1).to(embeds.dtype))

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

        ``position_ids``: None counts positions from the cache (1-D RoPE LMs); a model with explicit positions
        (:attr:`explicit_positions`) then computes each row's from 0, and refuses to continue a cache without them.
        """
        embeds, levels = self.embed_frames(input_ids, self.frame_embeddings(frames, frame_features))
        if position_ids is None and self.explicit_positions:
            if lm_api.cache_length(cache):
                raise ValueError("this model's positions are not the cache length: continuing a KV cache needs "
                                 "position_ids (LiveModel.positions(input_ids, start))")
            position_ids = self.positions(input_ids)[0]
        if position_ids is not None:
            position_ids = position_ids.to(embeds.device)
        keep: Any = logits_to_keep
        if labelled_logits_only:
            if labels is None:
                raise ValueError("labelled_logits_only needs labels")
            keep = (labels != IGNORE).any(dim=0).nonzero().flatten().to(embeds.device)  # (T',)
        logits, cache = lm_api.lm_forward(self.lm, embeds, cache=cache, attention_mask=attention_mask,
                                          position_ids=position_ids, use_cache=use_cache or cache is not None,
                                          logits_to_keep=keep, frame_blocks=self.frame_blocks(input_ids),
                                          frame_levels=levels)
        loss = None
        if labels is not None:
            if logits_to_keep:
                raise ValueError("labels need logits for every position: leave logits_to_keep at 0")
            labels = labels.to(logits.device)
            ids = input_ids
            if labelled_logits_only:
                labels, ids = labels[:, keep], input_ids[:, keep]
            loss = streaming_loss(logits, labels, ids, self.frame_end_id, self.cfg.stream.stream_loss_weight)
        return LiveOutput(logits=logits, loss=loss, cache=cache)

    def forward_streams(self, input_ids: torch.Tensor, frame_features: torch.Tensor | None, caches: list[Any],
                        lengths: list[int], positions: list[torch.Tensor] | None = None,
                        pooled: Any = None) -> tuple[torch.Tensor, list[Any]]:
        """One forward for several streams (inference): stream i's ``lengths[i]`` new tokens, side by side in
        ``input_ids``, continue ``caches[i]`` (``None``: a new stream), at ``positions[i]`` when the model needs
        explicit positions. See :func:`livecue.model.lm.ragged_forward`.

        Shape: input_ids (1, Σq); frame_features (F, K, D_vision) for the ``<v>`` positions in order; positions
        ``(C, 1, lengths[i])`` each; returns logits (N, V) at each stream's last new token and the updated caches.
        ``pooled``: a :class:`livecue.model.kvpool.PooledLM` whose pool holds the caches (the fast path), else None.
        """
        if positions is None and self.explicit_positions:
            raise ValueError("this model's positions are not the cache length: forward_streams needs positions")
        if lm_api.bidirectional_frames(self.lm):
            raise ValueError("this model's frames attend to each other, which ragged forwards do not mask: forward "
                             "one stream at a time (lm.supports_ragged is False)")
        embeds, levels = self.embed_frames(input_ids, self.frame_embeddings(frame_features=frame_features))
        if pooled is not None:
            return pooled.forward(embeds, caches, lengths, positions=positions, frame_levels=levels)
        return lm_api.ragged_forward(self.lm, embeds, caches, lengths, positions=positions, frame_levels=levels)

"""A pretrained VLM as a LiveModel's parts: adapters and their registry, the text LM, the frame encoder, positions.

A Hugging Face image-text-to-text model (Qwen2.5-VL, ...) is split into the two parts a :class:`LiveModel` composes,
exactly as it composes the paper's model:

* :class:`TextLM`: the VLM's language model and ``lm_head``, as a causal LM for :mod:`livecue.model.lm` (KV caches,
  ragged batches, eviction) and for LoRA by module name (``model.layers.N.self_attn.q_proj``, ``lm_head``).
* :class:`VLMFrameEncoder`: uint8 frames -> ``(F, K, H)`` tokens already in the LM's embedding space: letterboxed to
  ``vlm.frame_resolution``, normalised with the family's mean/std, through the family's own vision encoder and
  projector (one image per frame: attention never crosses frames), optionally average-pooled to a k×k grid.

The connector is then the identity (the projector is the VLM's own, inside the encoder) and the frame tokens replace
the family's image-token placeholders in order, as ``<v>`` placeholders are replaced in a composed model.

Positions are the family's. :class:`MRopePositions` is Qwen's multimodal RoPE for "an image between text": a text
token at p gets (p, p, p); a frame whose tokens start at s gets (s, s + row, s + col) over its token grid, and the
next token s + max(rows, cols). LiveModel computes them from the ids (``LiveModel.positions``), for a training batch
and for each streaming step alike, so streaming equals one full forward.

A family is one :class:`VLMAdapter` subclass in its own module, registered with :func:`register` (see
``qwen2_5_vl.py``): its Hugging Face classes, its tiny random config and tokenizer (tests), the strings of its frame
layout, its pixel layout and its positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import VLMConfig
from ...data.video import letterbox
from .. import lm as lm_api

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---- frame layout and positions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameLayout:
    """Where one frame's tokens sit: the family's token grid for a frame, and the k×k grid it is pooled to.

    Attributes:
        grid: (rows, cols) of the tokens the family's encoder gives one frame at ``vlm.frame_resolution``.
        pooled: k > 0: the grid is average-pooled to k×k; 0: kept whole.
    """

    grid: tuple[int, int]
    pooled: int = 0

    def __post_init__(self) -> None:
        if self.pooled > min(self.grid):
            raise ValueError(f"vlm.frame_pooled {self.pooled} is larger than the frame's token grid "
                             f"{self.grid[0]}x{self.grid[1]}: use at most {min(self.grid)} (or a larger "
                             "vlm.frame_resolution)")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the tokens the LM reads per frame."""
        return (self.pooled, self.pooled) if self.pooled else self.grid

    @property
    def num_tokens(self) -> int:
        """K: tokens per frame."""
        rows, cols = self.shape
        return rows * cols


@dataclass(frozen=True)
class MRopePositions:
    """Multimodal RoPE positions (temporal, row, column) of a token sequence with frames (Qwen2-VL / Qwen2.5-VL).

    Text token p -> (p, p, p). A frame is ``rows × cols`` consecutive placeholder tokens in row-major order; one
    starting at s gets (s, s + row, s + col) and the token after it s + max(rows, cols): transformers'
    ``get_rope_index`` layout for one image between text. Each frame is one image (one temporal slot, at s): the
    order of the frames is carried by the sequence, as in a multi-image prompt. Positions depend only on ``start``
    and the ids, so a sequence cut anywhere between frames continues exactly (streaming), and shifting every
    component of the tokens after an evicted span by the same amount re-bases them.

    Args:
        v: the placeholder token id.
        rows, cols: each frame's token grid.
    """

    v: int
    rows: int
    cols: int

    def __call__(self, input_ids: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of every row of ``input_ids``, all starting at ``start``.

        Shape: input_ids (B, T) -> position ids (3, B, T) and each row's next position (B,).

        Raises:
            ValueError: a row holds a frame that is not ``rows × cols`` consecutive placeholders.
        """
        k, span = self.rows * self.cols, max(self.rows, self.cols)
        if input_ids.shape[-1] == 0:
            return input_ids.new_zeros(3, *input_ids.shape), input_ids.new_full(input_ids.shape[:1], start)
        is_v = input_ids == self.v
        text = (~is_v).long()
        count = is_v.long().cumsum(-1)                      # placeholders up to and including t
        index = (count - 1).clamp(min=0)
        frames = torch.where(is_v, index // k, count // k)  # a placeholder's frame; frames before a text token
        j = torch.where(is_v, index % k, 0)                 # a placeholder's index in its frame
        broken = is_v[:, 1:] & (j[:, 1:] > 0) & ~is_v[:, :-1]
        if bool(count[:, -1].remainder(k).any()) or bool(broken.any()):
            raise ValueError(f"frames must be {k} consecutive placeholder tokens each ({self.rows}x{self.cols})")
        base = start + text.cumsum(-1) - text + span * frames  # text tokens before t, each frame span wide
        position = torch.stack([base, base + j // self.cols, base + j % self.cols])
        nxt = start + text.sum(-1) + span * (count[:, -1] // k)
        return position, nxt


# ---- the parts ------------------------------------------------------------------------------------------------------
#: ``masks(text_config, inputs_embeds, attention_mask, cache, position_ids, frame_blocks)`` -> the attention mask(s)
#: the decoder takes (e.g. a dict by layer type) for new tokens that continue ``cache``, in which the tokens of a frame
#: (same ``frame_blocks`` id >= 0, shape (B, T)) attend to each other and everything else is causal
FrameMasks = Callable[..., Any]


@dataclass
class TextLMOutput:
    """What :func:`livecue.model.lm.lm_forward` reads of a forward: the logits."""

    logits: torch.Tensor


class TextLM(nn.Module):
    """A VLM's language model and ``lm_head`` as a causal LM (what :mod:`livecue.model.lm` and LoRA need).

    Args:
        model: the decoder stack (a Hugging Face ``*TextModel``: ``.layers``, ``.embed_tokens``, rotary embedding).
        lm_head: the output projection.
        frame_masks: the family's :meth:`VLMAdapter.frame_masks`.
        deepstack_levels: the family's :meth:`VLMAdapter.deepstack_levels` (Qwen3-VL: the decoder takes
            ``visual_pos_masks`` and ``deepstack_visual_embeds``).
    """

    def __init__(self, model: nn.Module, lm_head: nn.Module, frame_masks: FrameMasks | None = None,
                 deepstack_levels: int = 0) -> None:
        super().__init__()
        self.model = model
        self.lm_head = lm_head
        self.config = model.config  # the text config (hidden size, layers, attention implementation)
        self.frame_masks = frame_masks
        self.deepstack_levels = deepstack_levels

    @property
    def bidirectional_frames(self) -> bool:
        """Whether the tokens of one frame attend to each other (the family's :meth:`VLMAdapter.frame_masks`): every
        forward then takes ``frame_blocks`` and a frame must be fed whole in one forward."""
        return self.frame_masks is not None

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_attn_implementation(self, name: str) -> None:
        """Switch the decoder's attention (the vision encoder keeps its own)."""
        self.model.set_attn_implementation(name)

    def activation_checkpointing_enable(self, **_: Any) -> None:
        """Checkpoint the decoder layers, non-reentrant (:func:`livecue.model.lm.enable_activation_checkpointing`)."""
        lm_api.enable_activation_checkpointing(self.model)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: Any = None, use_cache: bool = False,
                logits_to_keep: int | torch.Tensor = 0, frame_blocks: torch.Tensor | None = None,
                frame_levels: lm_api.FrameLevels | None = None, **kwargs: Any) -> TextLMOutput:
        """Shape: inputs_embeds (B, T, H); position_ids (B, T) or the family's (3, B, T); frame_blocks (B, T): each
        token's frame in this forward (-1: not a frame token), read when :attr:`bidirectional_frames`;
        frame_levels: the frames' DeepStack features (None: this forward has no frame tokens); logits
        (B, T', V) for all positions, the last ``logits_to_keep`` ones or those a 1-D index tensor lists."""
        if frame_levels is not None:
            if frame_levels.levels.shape[0] != self.deepstack_levels:
                raise ValueError(f"{frame_levels.levels.shape[0]} frame feature levels given, this LM adds "
                                 f"{self.deepstack_levels}")
            kwargs.update(visual_pos_masks=frame_levels.mask, deepstack_visual_embeds=list(frame_levels.levels))
        if self.frame_masks is not None and frame_blocks is not None and bool((frame_blocks >= 0).any()):
            attention_mask = self.frame_masks(self.config, inputs_embeds, attention_mask, cache, position_ids,
                                              frame_blocks)  # (text alone: the decoder's own causal masks)
        kwargs[lm_api.cache_kwarg(self.model)] = cache
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        return TextLMOutput(logits=self.lm_head(hidden[:, keep]))


class VLMFrameEncoder(nn.Module):
    """``(F, 3, H, W)`` uint8 frames -> ``(F, K, H_lm)`` frame tokens in the LM's embedding space.

    A family whose LM adds per-level frame features after its first layers (Qwen3-VL's DeepStack,
    :meth:`VLMAdapter.deepstack_levels` = L) gives ``(F, K, (1 + L) * H_lm)``: the tokens, then the L levels, so the
    feature cache and every frame path carry them unchanged (:meth:`livecue.model.live.LiveModel.embed_frames` splits
    them). Pooling to k×k averages each level like the tokens.

    Args:
        adapter: the family's adapter (patch layout and encoder call).
        tower: the VLM's vision model, projector included (its weights are what a random-init checkpoint saves).
        projector: the projector's name in ``tower`` (Qwen: ``merger``), or the names of its parts (Qwen3-VL:
            ``merger`` and ``deepstack_merger_list``).
        cfg: the ``vlm`` config section.
        layout: the frame's token grid and pooling.
        hidden_size: the width of the features: the LM's width, times 1 + L with DeepStack levels.
        mean, std: the per-channel normalisation of pixels scaled to [0, 1].
    """

    def __init__(self, adapter: VLMAdapter, tower: nn.Module, projector: str | tuple[str, ...], cfg: VLMConfig,
                 layout: FrameLayout, hidden_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.adapter = adapter
        self.tower = tower
        self.projector_names = (projector,) if isinstance(projector, str) else tuple(projector)
        self.projector_name = " + ".join(self.projector_names)
        self.cfg = cfg
        self.layout = layout
        self.hidden_size = hidden_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.set_trainable()

    @property
    def num_tokens(self) -> int:
        return self.layout.num_tokens

    @property
    def projector(self) -> nn.Module:
        """The VLM's projector (a submodule of :attr:`tower`, registered there only; several parts: a ModuleList
        of them, made on each access)."""
        parts = [self.tower.get_submodule(name) for name in self.projector_names]
        return parts[0] if len(parts) == 1 else nn.ModuleList(parts)

    @property
    def trains(self) -> bool:
        """Whether any of its weights train (``vlm.train_vision`` / ``train_projector`` / ``lora_vision`` /
        ``lora_projector``)."""
        cfg = self.cfg
        return cfg.train_vision or cfg.train_projector or cfg.lora_vision or cfg.lora_projector

    def _in_projector(self, name: str) -> bool:
        return name.startswith(tuple(p + "." for p in self.projector_names))

    def lora_targets(self) -> list[str]:
        """The (``tower.``-relative) names of the linear layers that get LoRA: the vision encoder's with
        ``vlm.lora_vision``, the projector's with ``vlm.lora_projector``."""
        return [name for name, module in self.tower.named_modules() if isinstance(module, nn.Linear)
                and (self.cfg.lora_projector if self._in_projector(name) else self.cfg.lora_vision)]

    def set_trainable(self) -> None:
        """The vision encoder trains iff ``vlm.train_vision``, the projector iff ``vlm.train_projector``, the LoRA
        layers injected into either (:func:`livecue.model.lora.apply_vision_lora`) always."""
        for name, p in self.tower.named_parameters():
            full = self.cfg.train_projector if self._in_projector(name) else self.cfg.train_vision
            p.requires_grad_(full or "lora_" in name)
        if not self.trains:
            self.tower.eval()

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The weights that train (``tower.``-relative, :func:`plain_state` names): what a checkpoint over a
        pretrained VLM saves: the parts trained in full and the LoRA layers."""
        return {name: p for name, p in plain_state(self.tower, params=True).items()
                if "lora_" in name or (self.cfg.train_projector if self._in_projector(name)
                                       else self.cfg.train_vision)}

    def train(self, mode: bool = True) -> VLMFrameEncoder:
        super().train(mode)
        if not self.trains:
            self.tower.eval()
        return self

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 (F, 3, H, W), got dtype {frames.dtype}")
        param = next(self.tower.parameters())
        boxed = letterbox(frames.to(param.device), self.cfg.frame_resolution)  # [0, 255]
        pixels = ((boxed / 255.0 - self.mean) / self.std).to(param.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.trains):
            grid = self.adapter.encode(self.tower, pixels)  # (F, rows, cols, H)
        if self.layout.pooled:
            pooled = F.adaptive_avg_pool2d(grid.permute(0, 3, 1, 2), self.layout.pooled)  # (F, H, k, k)
            return pooled.flatten(2).transpose(1, 2)  # (F, k*k, H), row-major
        return grid.flatten(1, 2)


def plain_name(name: str) -> str:
    """A parameter's name as the module without LoRA has it (``qkv.base_layer.weight`` -> ``qkv.weight``), or a LoRA
    weight's without peft's adapter name (``qkv.lora_A.default.weight`` -> ``qkv.lora_A.weight``): how checkpoints
    store a vision model whatever LoRA was injected into it."""
    return name.replace(".base_layer.", ".").replace(".default.", ".")


def plain_state(module: nn.Module, params: bool = False) -> dict[str, torch.Tensor]:
    """``module``'s state dict (its parameters only with ``params``) under :func:`plain_name` names."""
    items = module.named_parameters() if params else module.state_dict().items()
    return {plain_name(name): value for name, value in items}


def load_plain_state(module: nn.Module, state: dict[str, torch.Tensor], strict: bool) -> None:
    """Load :func:`plain_state` names into ``module`` (with or without LoRA injected); ``strict``: every tensor."""
    names = {plain_name(name): name for name in module.state_dict()}
    unknown = sorted(set(state) - set(names))
    if unknown:  # the caller checked the names against the config; this guards the mapping itself
        raise ValueError(f"no tensor named {unknown[0]!r} in {type(module).__name__}")
    module.load_state_dict({names[k]: v for k, v in state.items()}, strict=strict)


# ---- adapters -------------------------------------------------------------------------------------------------------
@dataclass
class VLMParts:
    """A loaded VLM's modules as livecue uses them (all submodules of the Hugging Face model)."""

    language_model: nn.Module
    lm_head: nn.Module
    vision: nn.Module
    projector: str | tuple[str, ...]  # the projector's name in ``vision`` (or the names of its parts)


class VLMAdapter:
    """What livecue needs to know about one VLM family; subclass it in one module per family and :func:`register`.

    Attributes:
        name: the family's name (``vlm.family``).
        model_types: the Hugging Face ``model_type`` values it drives.
        mean, std: the pixel normalisation when a model directory has no ``preprocessor_config.json``.
    """

    name: str = ""
    model_types: tuple[str, ...] = ()
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def model_class(self) -> Any:
        """The Hugging Face class that loads the whole VLM."""
        import transformers  # imported when a model is built (it costs seconds)

        return transformers.AutoModelForImageTextToText

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        """The family's config for a random model: ``random_init`` with ids and vocabulary from ``tokenizer``."""
        raise NotImplementedError

    def tiny_tokenizer(self) -> Any:
        """The packaged tiny tokenizer with the family's special tokens and chat template (``vlm.tokenizer: tiny``)."""
        raise NotImplementedError

    def init_random(self, model: nn.Module) -> None:
        """Re-draw, from the current RNG, the weights of a randomly initialised VLM that transformers sets to a
        constant which would hide the frames (Gemma 3's projector starts at zero: every frame the same). Default:
        nothing."""

    def parts(self, model: nn.Module) -> VLMParts:
        """The language model, head, vision model and projector of a loaded VLM."""
        raise NotImplementedError

    def stream_fields(self, tokenizer: Any, hf_config: Any) -> dict[str, str]:
        """``stream.*`` values the model fixes (the placeholder, the strings around a frame), read from the
        tokenizer and the config, never written down."""
        raise NotImplementedError

    def frame_grid(self, hf_config: Any, resolution: int) -> tuple[int, int]:
        """(rows, cols) of the tokens of one ``resolution``² frame; ValueError for a resolution it cannot take."""
        raise NotImplementedError

    def default_resolution(self, hf_config: Any) -> int:
        """The frame size when ``vlm.frame_resolution`` is 0: the family's own (by default its vision config's
        ``image_size``, the size it was trained at)."""
        return int(hf_config.vision_config.image_size)

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised frames through the vision model and projector, one image each.

        Shape: (F, 3, R, R) -> (F, rows, cols, H), or (F, rows, cols, (1 + L) * H) with :meth:`deepstack_levels`.
        """
        raise NotImplementedError

    def deepstack_levels(self, hf_config: Any) -> int:
        """L: how many per-level frame features the LM adds to the frame positions after its first L decoder layers
        (Qwen3-VL's DeepStack); :meth:`encode` then gives them after the tokens, ``(1 + L) * H`` wide. Default: 0."""
        return 0

    def frame_masks(self) -> FrameMasks | None:
        """The masks that let the tokens of one frame attend to each other, as the family was trained (Gemma 3), or
        None: causal attention everywhere. See :data:`FrameMasks`."""
        return None

    def positions(self, v: int, shape: tuple[int, int]) -> Any:
        """The position scheme (``scheme(input_ids, start) -> (position_ids, next)``) for frames of ``shape``
        tokens; None for 1-D positions counted from the cache."""
        return None


FAMILIES: dict[str, VLMAdapter] = {}


def register(adapter: VLMAdapter) -> VLMAdapter:
    """Make ``adapter`` known by its name and its ``model_type`` values; returns it."""
    for key in (adapter.name, *adapter.model_types):
        FAMILIES[key] = adapter
    return adapter


def adapter_for(family: str) -> VLMAdapter:
    """The adapter of a family name or Hugging Face ``model_type``."""
    if family not in FAMILIES:
        known = ", ".join(sorted({a.name for a in FAMILIES.values()}))
        raise ValueError(f"livecue has no VLM adapter for {family!r} (it knows: {known})")
    return FAMILIES[family]

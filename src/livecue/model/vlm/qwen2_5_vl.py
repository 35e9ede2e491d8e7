"""Qwen2.5-VL as a LIVE base (``vlm.family: qwen2_5_vl``; Hugging Face ``Qwen2_5_VLForConditionalGeneration``).

Frames: each frame is one image at ``vlm.frame_resolution`` (a multiple of 28): 14-pixel patches, each repeated over
the 2 temporal slots of a patch (as Qwen's processor does for a still image), through the vision transformer (window
attention within the frame: every frame is its own ``grid_thw`` row) and the patch merger (2×2 patches -> one token
of the LM's width). 224 px -> 16×16 patches -> 8×8 = 64 tokens per frame; ``vlm.frame_pooled`` pools them to k×k.
Pixels are normalised with the model's ``preprocessor_config.json`` mean/std (CLIP's by default), after livecue's
letterbox (bilinear, antialiased) where Qwen's processor resizes bicubically.

Positions: M-RoPE (:class:`~livecue.model.vlm.base.MRopePositions`), each frame laid out as one image between text.
The documented choice: a frame is an image, not a slice of a video. Qwen's video path puts a clip's frames in one
block, temporal ids ``t · second_per_grid_t · tokens_per_second`` inside it and the text after it at max + 1; a live
stream interleaves a decision token (and sometimes a reply or a question) after every frame, so every frame is its own
block and its temporal id is its start position: monotonic in stream time, one frame K + 2 + 1 positions after the
previous one when nothing was said, as in a multi-image prompt (and exactly what get_rope_index gives such a prompt,
tested). Time itself is the frame index at the stream's fps, as in LIVE: the decision after every frame carries the
timing.

Template strings come from the tokenizer and the config, never written down: the placeholder is the token of
``image_token_id`` (``<|image_pad|>``), the frame is wrapped in the tokens of ``vision_start_token_id`` /
``vision_end_token_id``, and the roles are cut out of the tokenizer's chat template (``<|im_start|>user`` ...
``<|im_end|>``).

The tiny random model of the tests (``tiny_qwen2_5_vl`` preset) uses the packaged tiny tokenizer with Qwen's special
tokens added and a chat template in Qwen's format, and a ``Qwen2_5_VLConfig`` whose ids are that tokenizer's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..tiny_tokenizer import load_tiny_tokenizer
from .base import MRopePositions, VLMAdapter, VLMParts, register

#: Qwen2.5-VL's special tokens, in the order of its tokenizer (the tiny tokenizer adds them so that it reads like it)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
#: the config's token ids and the tiny tokenizer's tokens they are read from
TOKEN_IDS = {"image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
             "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
#: a chat template in Qwen's format for the tiny test tokenizer (livecue's own; a real model brings its tokenizer's):
#: ``<|im_start|>role\n...<|im_end|>\n``, a default system turn, images as
#: ``<|vision_start|><|image_pad|><|vision_end|>``
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen25VL(VLMAdapter):
    """Qwen2.5-VL (3B, 7B, 32B, 72B and their fine-tunes)."""

    name = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        from transformers import Qwen2_5_VLConfig  # imported when a model is built (it costs seconds)

        kwargs = {k: v for k, v in random_init.items() if k != "model_type"}
        text = dict(kwargs.pop("text_config", None) or {})
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            text.setdefault(key, value)
        vision = dict(kwargs.pop("vision_config", None) or {})
        if "hidden_size" in text:
            vision.setdefault("out_hidden_size", text["hidden_size"])  # the merger projects into the LM's width
        ids = {}
        for key, token in TOKEN_IDS.items():
            ids[key] = tokenizer.convert_tokens_to_ids(token)
            if ids[key] is None or ids[key] == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token!r} token: a random {self.name} model needs Qwen's "
                                 "special tokens (vlm.tokenizer: tiny adds them)")
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **{**ids, **kwargs})

    def tiny_tokenizer(self) -> Any:
        tokenizer = load_tiny_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                                     replace_extra_special_tokens=False)
        tokenizer.bos_token = None  # Qwen's tokenizer has no bos
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|endoftext|>"
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def parts(self, model: nn.Module) -> VLMParts:
        return VLMParts(language_model=model.model.language_model, lm_head=model.lm_head, vision=model.model.visual,
                        projector="merger")

    def stream_fields(self, tokenizer: Any, hf_config: Any) -> dict[str, str]:
        def token(key: str) -> str:
            return tokenizer.convert_ids_to_tokens(int(getattr(hf_config, key)))

        return {"v_placeholder": token("image_token_id"), "frame_prefix": token("vision_start_token_id"),
                "frame_suffix": token("vision_end_token_id"), "chat_format": "template"}

    def default_resolution(self, hf_config: Any) -> int:
        """Qwen reads images at any multiple of 28 (dynamic resolution): 224 px, 8×8 = 64 tokens per frame (a 2 fps
        budget of 128 tokens a second)."""
        return 224

    def frame_grid(self, hf_config: Any, resolution: int) -> tuple[int, int]:
        vision = hf_config.vision_config
        unit = vision.patch_size * vision.spatial_merge_size
        if resolution % unit:
            near = unit * max(1, round(resolution / unit))
            raise ValueError(f"vlm.frame_resolution {resolution} must be a multiple of {unit} for {self.name} "
                             f"({vision.patch_size}-pixel patches, {vision.spatial_merge_size}x"
                             f"{vision.spatial_merge_size} merged), e.g. {near}")
        return resolution // unit, resolution // unit

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        cfg = tower.config
        p, m, t = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
        f, c, h, w = pixels.shape
        gh, gw = h // p, w // p
        # Qwen's flattened patch layout: merge blocks in row-major order, the m×m patches of a block together, each
        # patch (C, T, p, p) with the still frame repeated over the T temporal slots
        x = pixels.reshape(f, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)  # (F, gh/m, gw/m, m, m, C, T, p, p)
        patches = x.reshape(f * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]], device=pixels.device).expand(f, 3)  # one image per frame
        merged = tower(patches, grid_thw=grid).pooler_output  # (F * gh/m * gw/m, H), each frame in row-major order
        return merged.reshape(f, gh // m, gw // m, -1)

    def positions(self, v: int, shape: tuple[int, int]) -> MRopePositions:
        return MRopePositions(v, *shape)


ADAPTER = register(Qwen25VL())

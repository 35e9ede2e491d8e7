"""Qwen3-VL as a LIVE base (``vlm.family: qwen3_vl``; Hugging Face ``Qwen3VLForConditionalGeneration``), and its
mixture-of-experts sibling (``qwen3_vl_moe``; ``Qwen3VLMoeForConditionalGeneration``), which shares all of it.

What differs from Qwen2.5-VL (:mod:`.qwen2_5_vl`, whose adapter this one extends):

* **Frames**: 16-pixel patches (each repeated over the 2 temporal slots, as Qwen's processor does for a still image),
  learned position embeddings interpolated to the frame's patch grid, full attention within the frame (every frame
  is its own ``grid_thw`` row: attention never crosses frames) and the 2×2 patch merger. ``vlm.frame_resolution`` is
  a multiple of 32; the default 256 px -> 16×16 patches -> 8×8 = 64 tokens per frame (Qwen2.5-VL's budget at
  224 px). Pixels are normalised with the model's ``preprocessor_config.json`` mean/std (Qwen3-VL ships 0.5/0.5, the
  default here when a directory has none), after livecue's letterbox.
* **DeepStack**: the vision model also merges the hidden states of a few of its blocks
  (``deepstack_visual_indexes``, through ``deepstack_merger_list``) into L per-level features of each frame token,
  which the language model adds to the hidden states of the frame positions after its decoder layers 0 .. L-1.
  :meth:`Qwen3VL.encode` gives them after the tokens (``(F, rows, cols, (1 + L) * H)``), so the feature cache, the
  engine's frame steps and ragged batches carry them unchanged; :meth:`livecue.model.live.LiveModel.embed_frames`
  splices the tokens into the embeddings and hands the levels to the text model (``visual_pos_masks``,
  ``deepstack_visual_embeds``) in every forward that feeds frames, and none in a forward without frames. The
  addition is per position, so streaming, ragged multi-session batches and one full forward all add the same
  features at the same tokens: exact, like Qwen's own forward. With ``vlm.frame_pooled`` every level is pooled to
  k×k like the tokens. ``vlm.train_projector`` trains both the merger and the DeepStack mergers.
* **Positions**: M-RoPE with interleaved sections (the rotary embedding spreads T/H/W over alternating frequencies)
  but the same position ids as Qwen2.5-VL for an image between text (transformers' ``get_rope_index``):
  :class:`~livecue.model.vlm.base.MRopePositions`. Bounded memory re-bases by shifting all three components of the
  kept keys by the same amount, which is the 1-D rotation for every frequency whatever the interleaving.
* **Timestamps**: Qwen3-VL's video path writes each frame's time as text (``<t seconds>``) before it. The documented
  choice: frames are images, with no timestamp text; time is the frame's index at the stream's fps, as in LIVE (the
  decision after every frame carries the timing). A timestamp before each frame would add tokens whose text changes
  every frame for no decision.
* **Chat template**: Qwen3-VL's has no default system turn (livecue always gives one); the roles are cut out of it
  as for Qwen2.5-VL. A "Thinking" model whose generation prompt opens ``<think>`` is refused like any template whose
  generation prompt differs from its assistant turn.

The tiny random models of the tests (``tiny_qwen3_vl`` preset; ``vlm.random_init.model_type: qwen3_vl_moe`` for the
MoE one) use the packaged tiny tokenizer with Qwen's special tokens and a chat template in Qwen3-VL's format.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import VLMParts, register
from .qwen2_5_vl import TOKEN_IDS, Qwen25VL

#: a chat template in Qwen3-VL's format for the tiny test tokenizer (livecue's own; a real model brings its
#: tokenizer's): ``<|im_start|>role\n...<|im_end|>\n``, no default system turn, images as
#: ``<|vision_start|><|image_pad|><|vision_end|>``
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen3VL(Qwen25VL):
    """Qwen3-VL (2B, 4B, 8B, 32B Instruct and their fine-tunes)."""

    name = "qwen3_vl"
    model_types = ("qwen3_vl",)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    config_class = "Qwen3VLConfig"

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        import transformers  # imported when a model is built (it costs seconds)

        kwargs = {k: v for k, v in random_init.items() if k != "model_type"}
        text = dict(kwargs.pop("text_config", None) or {})
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            text.setdefault(key, value)
        vision = dict(kwargs.pop("vision_config", None) or {})
        if "hidden_size" in text:
            vision.setdefault("out_hidden_size", text["hidden_size"])  # the mergers project into the LM's width
        ids = {}
        for key, token in TOKEN_IDS.items():
            ids[key] = tokenizer.convert_tokens_to_ids(token)
            if ids[key] is None or ids[key] == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token!r} token: a random {self.name} model needs Qwen's "
                                 "special tokens (vlm.tokenizer: tiny adds them)")
        config_class = getattr(transformers, self.config_class)
        return config_class(text_config=text, vision_config=vision, **{**ids, **kwargs})

    def tiny_tokenizer(self) -> Any:
        tokenizer = super().tiny_tokenizer()  # Qwen's special tokens, eos <|im_end|>, pad <|endoftext|>, no bos
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def parts(self, model: nn.Module) -> VLMParts:
        return VLMParts(language_model=model.model.language_model, lm_head=model.lm_head, vision=model.model.visual,
                        projector=("merger", "deepstack_merger_list"))

    def default_resolution(self, hf_config: Any) -> int:
        """256 px: 16×16 patches, 8×8 = 64 tokens per frame (128 tokens a second at 2 fps)."""
        return 256

    def deepstack_levels(self, hf_config: Any) -> int:
        return len(hf_config.vision_config.deepstack_visual_indexes)

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        cfg = tower.config
        p, m, t = cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size
        f, c, h, w = pixels.shape
        gh, gw = h // p, w // p
        # Qwen's flattened patch layout (as for Qwen2.5-VL): merge blocks in row-major order, the m×m patches of a
        # block together, each patch (C, T, p, p) with the still frame repeated over the T temporal slots
        x = pixels.reshape(f, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(*x.shape[:6], t, p, p)  # (F, gh/m, gw/m, m, m, C, T, p, p)
        patches = x.reshape(f * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]], device=pixels.device).expand(f, 3)  # one image per frame
        out = tower(patches, grid_thw=grid)
        # (F * gh/m * gw/m, (1 + L) * H): the merged tokens, then each DeepStack level, each frame in row-major order
        tokens = torch.cat([out.pooler_output, *out.deepstack_features], dim=-1)
        return tokens.reshape(f, gh // m, gw // m, -1)


class Qwen3VLMoe(Qwen3VL):
    """Qwen3-VL's mixture-of-experts models (30B-A3B, 235B-A22B): the same vision model, DeepStack and positions;
    LoRA reaches the attention projections and ``lm_head`` (the experts are fused weights, not linear layers)."""

    name = "qwen3_vl_moe"
    model_types = ("qwen3_vl_moe",)
    config_class = "Qwen3VLMoeConfig"


ADAPTER = register(Qwen3VL())
MOE_ADAPTER = register(Qwen3VLMoe())

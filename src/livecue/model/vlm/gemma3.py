"""Gemma 3 as a LIVE base (``vlm.family: gemma3``; Hugging Face ``Gemma3ForConditionalGeneration``).

Frames: each frame is one image at the vision encoder's own ``image_size`` (896 px for the released models; the
SigLIP position embeddings and the projector's pooling are fixed to it, so ``vlm.frame_resolution`` is derived from
the model: 0 is filled with it, any other value is refused). The SigLIP tower's patch grid is
average-pooled by the ``multi_modal_projector`` to ``mm_tokens_per_image`` tokens (256 = 16×16), normalised and
projected into the LM's width; ``vlm.frame_pooled`` pools that grid further to k×k. Pixels are normalised with the
model's ``preprocessor_config.json`` mean/std (0.5/0.5 by default), after livecue's letterbox where Gemma's processor
squashes the image to the square.

Frame strings come from the config and the tokenizer, never written down: the placeholder is the token of
``image_token_id`` (``<image_soft_token>``), the frame is wrapped in the tokens of ``boi_token_id`` /
``eoi_token_id`` (``<start_of_image>`` ... ``<end_of_image>``), the chat roles are cut out of the tokenizer's chat
template (``<start_of_turn>user`` / ``<start_of_turn>model`` ... ``<end_of_turn>``; the template has no system role,
so the system text opens the first user turn). Documented choice: Gemma's processor also writes ``"\\n\\n"`` before
and after an image; livecue's frame is only the special tokens, because plain whitespace merges with the text next to
it (Gemma's vocabulary has one token per run of newlines: ``"user\\n" + "\\n\\n"`` is ``user`` + ``"\\n\\n\\n"``),
which would make a frame's ids depend on what precedes it; the token after a frame is the LIVE decision (the
interval or the stream turn's end) in any case.

Attention: Gemma 3 was trained with the tokens of one image attending to each other bidirectionally (causal
everywhere else; transformers builds that mask from ``token_type_ids``). livecue keeps it: :func:`frame_masks` builds
the same masks from each frame's placeholder block, for a training batch and for each streaming step alike. A frame
is always fed whole in one step, so within that step its tokens may see each other and streaming equals one full
forward. The hybrid layers (5 sliding-window layers per full one) keep their own cache layers; the engine steps such a
model one session at a time (ragged batches build causal masks only). Bounded memory re-bases the sliding layers'
keys with their own RoPE base and refuses a budget that would evict positions their window still sees
(:func:`livecue.model.lm.evict_span`; a session whose ``max_tokens - chunk`` is below the window is refused when it
is made).

Positions: 1-D RoPE, counted from the cache (no explicit positions); frames carry their order in the sequence.

The tiny random model of the tests (``tiny_gemma3`` preset) uses the packaged tiny tokenizer with Gemma's special
tokens added and a chat template in Gemma's format, and a ``Gemma3Config`` whose ids are that tokenizer's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .. import lm as lm_api
from ..tiny_tokenizer import load_tiny_tokenizer
from .base import VLMAdapter, VLMParts, register

#: Gemma 3's special tokens that the tiny tokenizer adds so that it reads like Gemma's
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                  "<end_of_image>", "<image_soft_token>")
#: the config's token ids and the tiny tokenizer's tokens they are read from
TOKEN_IDS = {"image_token_index": "<image_soft_token>", "boi_token_index": "<start_of_image>",
             "eoi_token_index": "<end_of_image>"}
#: a chat template in Gemma's format for the tiny test tokenizer (livecue's own; a real model brings its
#: tokenizer's): ``<bos>``, turns ``<start_of_turn>role\n...<end_of_turn>\n`` with ``model`` for the assistant, no
#: system role (its text opens the first user turn, then a blank line), images as ``<start_of_image>``
CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(head='', skip=0) %}"
    "{% if messages and messages[0]['role'] == 'system' %}{% set ns.skip = 1 %}"
    "{% if messages[0]['content'] is string %}{% set ns.head = messages[0]['content'] %}{% else %}"
    "{% for part in messages[0]['content'] %}{% set ns.head = ns.head + part['text'] %}{% endfor %}{% endif %}"
    "{% set ns.head = ns.head + '\n\n' %}{% endif %}"
    "{% for m in messages[ns.skip:] %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant/user/...') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{% if loop.first %}{{ ns.head }}"
    "{% endif %}{% if m['content'] is string %}{{ m['content'] | trim }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] | trim }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


class Gemma3Vision(nn.Module):
    """The SigLIP tower and the multi-modal projector (siblings in Gemma's model) as one module, under their
    Hugging Face names (``vision_tower.*``, ``multi_modal_projector.*``)."""

    def __init__(self, vision_tower: nn.Module, multi_modal_projector: nn.Module) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.multi_modal_projector = multi_modal_projector

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Shape: (F, 3, S, S) normalised at the model's image size -> (F, mm_tokens_per_image, H_lm)."""
        return self.multi_modal_projector(self.vision_tower(pixel_values=pixels).last_hidden_state)


def frame_masks(config: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, cache: Any,
                position_ids: torch.Tensor | None, frame_blocks: torch.Tensor) -> dict[str, Any]:
    """Gemma 3's attention masks with the tokens of each frame attending to each other: causal OR same frame, within
    the window in sliding-window layers (transformers' ``create_masks_for_vision_model`` for ``token_type_ids``; a
    frame is never longer than the window, :meth:`Gemma3.frame_grid`, so windowing before or after the OR agrees).

    The new tokens continue ``cache``; its tokens count as text here (the frames fed before are whole, so no new
    token shares a frame with them). Shape: frame_blocks (B, q) long: each new token's frame (-1: not a frame token)
    -> ``{"full_attention": mask, "sliding_attention": mask}`` as the attention implementation takes them.
    """
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    past = lm_api.cache_length(cache)
    blocks = nn.functional.pad(frame_blocks.to(inputs_embeds.device), (past, 0), value=-1)  # by absolute position
    kwargs = dict(config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache,
                  position_ids=position_ids, block_sequence_ids=blocks)
    return {"full_attention": create_causal_mask(**kwargs),
            "sliding_attention": create_sliding_window_causal_mask(**kwargs)}


class Gemma3(VLMAdapter):
    """Gemma 3 (4B, 12B, 27B and their fine-tunes; the text-only 1B is not a VLM)."""

    name = "gemma3"
    model_types = ("gemma3",)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        from transformers import Gemma3Config  # imported when a model is built (it costs seconds)

        kwargs = {k: v for k, v in random_init.items() if k != "model_type"}
        text = dict(kwargs.pop("text_config", None) or {})
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            text.setdefault(key, value)
        ids = {}
        for key, token in TOKEN_IDS.items():
            ids[key] = tokenizer.convert_tokens_to_ids(token)
            if ids[key] is None or ids[key] == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token!r} token: a random {self.name} model needs Gemma's "
                                 "special tokens (vlm.tokenizer: tiny adds them)")
        return Gemma3Config(text_config=text, vision_config=dict(kwargs.pop("vision_config", None) or {}),
                            **{**ids, **kwargs})

    def tiny_tokenizer(self) -> Any:
        tokenizer = load_tiny_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                                     replace_extra_special_tokens=False)
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = "<bos>", "<eos>", "<pad>"
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def init_random(self, model: nn.Module) -> None:
        projector = model.model.multi_modal_projector  # transformers starts its projection at zero
        with torch.no_grad():
            projector.mm_input_projection_weight.normal_(std=projector.mm_input_projection_weight.shape[0] ** -0.5)

    def parts(self, model: nn.Module) -> VLMParts:
        inner = model.model
        return VLMParts(language_model=inner.language_model, lm_head=model.lm_head,
                        vision=Gemma3Vision(inner.vision_tower, inner.multi_modal_projector),
                        projector="multi_modal_projector")

    def stream_fields(self, tokenizer: Any, hf_config: Any) -> dict[str, str]:
        if getattr(hf_config.get_text_config(), "use_bidirectional_attention", False):
            raise ValueError(f"this {self.name} model's language model attends bidirectionally everywhere "
                             "(use_bidirectional_attention, an embedding model): it cannot stream")

        def token(key: str) -> str:
            return tokenizer.convert_ids_to_tokens(int(getattr(hf_config, key)))

        return {"v_placeholder": token("image_token_id"), "frame_prefix": token("boi_token_id"),
                "frame_suffix": token("eoi_token_id"), "chat_format": "template"}

    def frame_grid(self, hf_config: Any, resolution: int) -> tuple[int, int]:
        size = int(hf_config.vision_config.image_size)
        if resolution != size:
            raise ValueError(f"vlm.frame_resolution {resolution} must be {size} for this {self.name} model (its vision "
                             f"encoder and projector take {size}-pixel images); fewer tokens per frame: "
                             "vlm.frame_pooled")
        tokens, window = int(hf_config.mm_tokens_per_image), hf_config.get_text_config().sliding_window
        side, patches = math.isqrt(tokens), size // int(hf_config.vision_config.patch_size)
        if side * side != tokens or patches % side:
            raise ValueError(f"mm_tokens_per_image {tokens} must be a square whose side divides the {patches}x"
                             f"{patches} patch grid")
        if window is not None and tokens > window:
            raise ValueError(f"mm_tokens_per_image {tokens} is longer than the sliding window ({window} tokens)")
        return side, side

    def frame_masks(self) -> Any:
        return frame_masks

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        tokens = tower(pixels)  # (F, K, H), row-major over the pooled grid
        side = math.isqrt(tokens.shape[1])
        return tokens.reshape(tokens.shape[0], side, side, -1)


ADAPTER = register(Gemma3())

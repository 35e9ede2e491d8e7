"""LLaVA-OneVision as the base: the adapter (``vlm.family: llava_onevision``; transformers'
``LlavaOnevisionForConditionalGeneration``: a SigLIP vision tower, a 2-layer MLP projector, a Qwen2 language model).

Frames follow the family's own **video** path (transformers' ``LlavaOnevisionModel.get_video_features``), one frame
at a time: the vision tower's hidden state at ``vision_feature_layer`` (several layers concatenated when it is a
list; the first token, a CLS, dropped when ``vision_feature_select_strategy`` is ``default``), the projector
(``multi_modal_projector``), then 2× bilinear pooling of the patch grid (``apply_pooling``: n×n patches ->
⌈n/2⌉×⌈n/2⌉ tokens), n = ⌊R / patch⌋ (the patch convolution drops the remainder). At the model's own
``image_size`` (``vlm.frame_resolution`` 0; 384 px, 14-pixel patches: 27×27 -> 14×14 = 196 tokens) this is exactly
the video path; at another
``vlm.frame_resolution`` (224 px: 16×16 -> 8×8 = 64 tokens) the tower's position embeddings are interpolated
(transformers' ``interpolate_pos_encoding``), a layout the model was not trained on: prefer the native size, and
``vlm.frame_pooled`` for a smaller budget. Pixels are normalised with the model's ``preprocessor_config.json``
mean/std (SigLIP's 0.5/0.5 when it has none), after livecue's letterbox where the family's processor squashes a frame
to the square.

The placeholder is the tokenizer's **video** token, read from the config's ``video_token_index`` (``<video>``), not
the image token: the frame tokens are the video path's pooled features, which the model read after ``<video>``
during training; its image path (anyres crops, a newline after every row) is another layout. There are no strings
around a frame (``frame_prefix`` / ``frame_suffix`` empty): in a video the frames' tokens follow one another, so a
frame's last token is its last placeholder, where the decision is read.

``image_newline``: the video path appends this learned vector once, after the last frame of a whole video. A live
stream has no last frame, so it is **not appended** (the documented choice): appending it after every frame would
put it where the model never saw it (between the frames of a video), and appending it at the end is impossible
while the stream goes on. The frames of a stream segment are separated by ``stream.frame_interval`` instead, and the
segment is closed by the chat turn's end. The parameter stays in the loaded model, unused.

Positions: Qwen2's 1-D RoPE, counted from the KV cache (``positions`` is None); eviction re-rotates the kept keys by
the evicted token count, as for a composed model.

Template strings come from the tokenizer and the config, never written down: the placeholder is the token of
``video_token_index``; the roles are cut out of the tokenizer's chat template (ChatML: ``<|im_start|>user\\n`` ...
``<|im_end|>\\n``). The tiny random model of the tests (``tiny_llava_onevision`` preset) uses the packaged tiny
tokenizer with the family's special tokens added and a chat template in its format (typed contents only, as the
family's processor template), and a ``LlavaOnevisionConfig`` whose ids are that tokenizer's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..tiny_tokenizer import load_tiny_tokenizer
from .base import VLMAdapter, VLMParts, register

#: SigLIP's pixel normalisation (the family's preprocessor configs say it; used when a directory has none)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
#: the family's special tokens after Qwen2's (the tiny tokenizer adds them so that it reads like the family's)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
#: the config's token ids and the tiny tokenizer's tokens they are read from
TOKEN_IDS = {"image_token_index": "<image>", "video_token_index": "<video>"}
#: a chat template in the family's format for the tiny test tokenizer (livecue's own; a real model brings its
#: tokenizer's): ChatML turns ``<|im_start|>role\n...<|im_end|>\n``, typed contents only, images then videos (each
#: on its own line) then the text
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% for part in m['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for part in m['content'] | selectattr('type', 'equalto', 'video') %}<video>\n{% endfor %}"
    "{% for part in m['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class OnevisionTower(nn.Module):
    """LLaVA-OneVision's vision tower and projector as one module (the frame encoder's ``tower``: what a random-init
    checkpoint saves, ``vision_tower.*`` and ``multi_modal_projector.*``).

    Args:
        vision_tower: the SigLIP vision model.
        projector: the ``multi_modal_projector``.
        config: the whole model's ``LlavaOnevisionConfig`` (feature layer, select strategy, vision config).
    """

    base_model_prefix = ""  # what peft's LoRA injection reads of a root module (vlm.lora_vision), as of a HF model

    def __init__(self, vision_tower: nn.Module, projector: nn.Module, config: Any) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.multi_modal_projector = projector
        self.config = config


class LlavaOnevision(VLMAdapter):
    """LLaVA-OneVision (0.5B, 7B, 72B; ``llava-hf/llava-onevision-qwen2-*-hf`` and their fine-tunes)."""

    name = "llava_onevision"
    model_types = ("llava_onevision",)
    mean = SIGLIP_MEAN
    std = SIGLIP_STD

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        from transformers import LlavaOnevisionConfig  # imported when a model is built (it costs seconds)

        kwargs = {k: v for k, v in random_init.items() if k != "model_type"}
        text = {"model_type": "qwen2", **dict(kwargs.pop("text_config", None) or {})}
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            text.setdefault(key, value)
        vision = {"model_type": "siglip_vision_model", **dict(kwargs.pop("vision_config", None) or {})}
        ids = {}
        for key, token in TOKEN_IDS.items():
            ids[key] = tokenizer.convert_tokens_to_ids(token)
            if ids[key] is None or ids[key] == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no {token!r} token: a random {self.name} model needs the "
                                 "family's special tokens (vlm.tokenizer: tiny adds them)")
        return LlavaOnevisionConfig(text_config=text, vision_config=vision, **{**ids, **kwargs})

    def tiny_tokenizer(self) -> Any:
        tokenizer = load_tiny_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)},
                                     replace_extra_special_tokens=False)
        tokenizer.bos_token = None  # Qwen2's tokenizer has no bos
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|endoftext|>"
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def parts(self, model: nn.Module) -> VLMParts:
        inner = model.model
        tower = OnevisionTower(inner.vision_tower, inner.multi_modal_projector, model.config)
        return VLMParts(language_model=inner.language_model, lm_head=model.lm_head, vision=tower,
                        projector="multi_modal_projector")

    def stream_fields(self, tokenizer: Any, hf_config: Any) -> dict[str, str]:
        video = tokenizer.convert_ids_to_tokens(int(hf_config.video_token_id))
        return {"v_placeholder": video, "frame_prefix": "", "frame_suffix": "", "chat_format": "template"}

    def frame_grid(self, hf_config: Any, resolution: int) -> tuple[int, int]:
        vision = hf_config.vision_config
        if resolution < vision.patch_size:
            raise ValueError(f"vlm.frame_resolution {resolution} is smaller than one {vision.patch_size}-pixel patch "
                             f"of {self.name} (the model's own size is {vision.image_size})")
        side = math.ceil(resolution // vision.patch_size / 2)  # apply_pooling: 2x bilinear, rounded up
        return side, side

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        cfg = tower.config
        vision = cfg.vision_config
        layer, n = cfg.vision_feature_layer, pixels.shape[-1] // vision.patch_size
        # transformers' get_video_features, one frame at a time: only the selected hidden states are kept
        out = tower.vision_tower(pixels, output_hidden_states=layer, return_dict=True,
                                 interpolate_pos_encoding=n != vision.image_size // vision.patch_size)
        if isinstance(layer, int):
            hidden = out.hidden_states[layer]
        else:
            hidden = torch.cat([out.hidden_states[i] for i in layer], dim=-1)
        if cfg.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]  # the CLS token
        if hidden.shape[1] != n * n:
            raise ValueError(f"the {self.name} vision tower gives {hidden.shape[1]} tokens per frame after "
                             f"vision_feature_select_strategy {cfg.vision_feature_select_strategy!r}, not the "
                             f"{n}x{n} patch grid")
        tokens = tower.multi_modal_projector(hidden)  # (F, n*n, H)
        grid = tokens.view(tokens.shape[0], n, n, -1).permute(0, 3, 1, 2)
        side = math.ceil(n / 2)
        pooled = F.interpolate(grid, size=[side, side], mode="bilinear")  # apply_pooling
        return pooled.permute(0, 2, 3, 1)  # (F, rows, cols, H)


ADAPTER = register(LlavaOnevision())

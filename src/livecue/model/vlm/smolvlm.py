"""SmolVLM2 and Idefics3 (SmolVLM v1, Idefics3-8B) as the base: a SigLIP-style vision model, a connector (pixel
shuffle + linear projection) and a Llama-style language model with 1-D RoPE.

Both model types share their code in transformers (``SmolVLMForConditionalGeneration`` / ``Idefics3ForConditional
Generation``: ``model.vision_model``, ``model.connector``, ``model.text_model``, ``lm_head``) and share it here: one
adapter class, registered as ``smolvlm`` and ``idefics3``.

Documented choices:

* **One global image per frame, no tiling.** The family's processor splits a large image into ``image_size`` tiles
  plus a global view; a live stream has no time for that, so each frame is only the global image: letterboxed to
  ``vlm.frame_resolution`` (0: the vision config's ``image_size``, the size of the processor's
  global image), through the vision model and the connector ->
  ``(R // patch / scale_factor)²`` tokens (SmolVLM2-256M/500M: 512 px, 16-pixel patches, 4×4 shuffle -> 8×8 = 64;
  SmolVLM2-2.2B: 384 px, 14-pixel patches, 3×3 -> 9×9 = 81). A smaller ``frame_resolution`` is a smaller patch grid
  (the vision embeddings place its patches on their position grid by fractional coordinates, as for any image the
  family's processor gives them); one above ``image_size`` is refused (the position grid would repeat).
* **A frame is written as the processor writes one global image:** ``<fake_token_around_image><global-img>`` +
  ``<image>`` × K + ``<fake_token_around_image>``. The strings are the tokenizer's named tokens
  (``fake_image_token``, ``global_image_token``; SmolVLM2's tokenizer config carries them and its processor reads
  them there), or else those of the Idefics3 processor built over the tokenizer; the placeholder is the config's
  ``image_token_id``. The frame's last token (``<fake_token_around_image>``) is where the model decides.
* **No text timestamps.** SmolVLM2's video prompt precedes each frame with ``Frame from MM:SS:`` and opens with a
  video intro; livecue writes none: the time is the frame's index at the stream fps, as in LIVE, and the order of
  the frames is the sequence's.
* **Chat format** cut out of the tokenizer's own template (``<|im_start|>`` once, ``User: ...<end_of_utterance>\\n``,
  ``Assistant: ...``, generation prompt ``Assistant:``). A stream segment is a user turn of frames opened like a
  text turn (``User: ``; the family's template writes ``User:`` without the space before a turn that starts with an
  image).
* **Positions:** 1-D RoPE, counted from the cache by transformers (as for a composed model).
* **Pixels:** ``image_mean`` / ``image_std`` of ``preprocessor_config.json`` (0.5 / 0.5 when there is none).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..tiny_tokenizer import load_tiny_tokenizer
from .base import VLMAdapter, VLMParts, register

#: the tiny test tokenizer's special tokens (the family's bos, pad, end of turn, image tokens)
BOS, PAD, EOS = "<|im_start|>", "<|im_end|>", "<end_of_utterance>"
#: the tiny tokenizer's named tokens, as SmolVLM2's tokenizer config names them (the processor reads them by name)
NAMED_TOKENS = {"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                "image_token": "<image>", "end_of_utterance_token": EOS}
#: a chat template in SmolVLM's format for the tiny test tokenizer (livecue's own; a real model brings its
#: tokenizer's): ``<|im_start|>`` once, then ``Role: content<end_of_utterance>\n`` per message (``Role:`` right
#: before an image), images as ``<image>``, the generation prompt ``Assistant:``
CHAT_TEMPLATE = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:"
    "{% if m['content'] is string %} {{ m['content'] }}{% else %}"
    "{% if m['content'][0]['type'] != 'image' %} {% endif %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


class PixelShuffleTower(nn.Module):
    """The VLM's vision model and connector as one module (the frame encoder's tower; the projector is
    ``connector``): normalised ``(F, 3, R, R)`` pixels -> ``(F, (R // patch / scale)², H)`` tokens in row-major
    order.

    Args:
        vision_model: the SigLIP-style vision transformer (``model.vision_model``).
        connector: pixel shuffle + projection into the LM's width (``model.connector``).
    """

    def __init__(self, vision_model: nn.Module, connector: nn.Module) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.connector = connector

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_model(pixel_values=pixels).last_hidden_state  # every patch attended (no padding)
        return self.connector(hidden)


class SmolVLM(VLMAdapter):
    """SmolVLM2 (256M, 500M, 2.2B; ``model_type`` ``smolvlm``)."""

    name = "smolvlm"
    model_types = ("smolvlm",)
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    config_class = "SmolVLMConfig"

    def random_config(self, random_init: dict[str, Any], tokenizer: Any) -> Any:
        import transformers  # imported when a model is built (it costs seconds)

        kwargs = {k: v for k, v in random_init.items() if k != "model_type"}
        text = dict(kwargs.pop("text_config", None) or {})
        for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.bos_token_id),
                           ("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", tokenizer.pad_token_id)):
            text.setdefault(key, value)
        vision = dict(kwargs.pop("vision_config", None) or {})
        image = self.processor_tokens(tokenizer)[2]
        kwargs.setdefault("image_token_id", tokenizer.convert_tokens_to_ids(image))
        return getattr(transformers, self.config_class)(text_config=text, vision_config=vision, **kwargs)

    def tiny_tokenizer(self) -> Any:
        from transformers import PreTrainedTokenizerFast  # see random_config

        base = load_tiny_tokenizer()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token=BOS, eos_token=EOS,
                                            pad_token=PAD, extra_special_tokens=dict(NAMED_TOKENS))
        tokenizer.add_special_tokens({"additional_special_tokens": [BOS, PAD, *NAMED_TOKENS.values()]},
                                     replace_extra_special_tokens=False)
        tokenizer.chat_template = CHAT_TEMPLATE
        return tokenizer

    def parts(self, model: nn.Module) -> VLMParts:
        inner = model.model
        return VLMParts(language_model=inner.text_model, lm_head=model.lm_head,
                        vision=PixelShuffleTower(inner.vision_model, inner.connector), projector="connector")

    def processor_tokens(self, tokenizer: Any) -> tuple[str, str, str]:
        """(fake image token, global image token, image token) as the family's processor writes them: the
        tokenizer's named tokens, else the Idefics3 processor's (built over a copy of the tokenizer).

        Raises:
            ValueError: one of them is not a token of the tokenizer.
        """
        names = ("fake_image_token", "global_image_token", "image_token")
        found = tuple(getattr(tokenizer, key, None) for key in names)
        if not all(isinstance(t, str) and t for t in found):
            from transformers import Idefics3Processor
            from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

            processor = Idefics3Processor(Idefics3ImageProcessorPil(), copy.deepcopy(tokenizer))
            found = (processor.fake_image_token, processor.global_image_tag, processor.image_token)
        vocab = tokenizer.get_vocab()
        missing = [t for t in found if t not in vocab]
        if missing:
            raise ValueError(f"the tokenizer has no {missing[0]!r} token: a {self.name} model needs its image tokens "
                             f"{list(found)} (vlm.tokenizer: tiny adds them)")
        fake, glob, image = found
        return fake, glob, image

    def stream_fields(self, tokenizer: Any, hf_config: Any) -> dict[str, str]:
        fake, glob, _ = self.processor_tokens(tokenizer)
        image = tokenizer.convert_ids_to_tokens(int(hf_config.image_token_id))
        return {"v_placeholder": image, "frame_prefix": fake + glob, "frame_suffix": fake, "chat_format": "template"}

    def frame_grid(self, hf_config: Any, resolution: int) -> tuple[int, int]:
        vision, scale = hf_config.vision_config, int(hf_config.scale_factor)
        patch, size = int(vision.patch_size), int(vision.image_size)
        side = resolution // patch
        if side < scale or side % scale or resolution > size:
            unit = patch * scale
            near = min(size, unit * max(1, round(resolution / unit)))
            raise ValueError(f"vlm.frame_resolution {resolution} must be at most {size} (the {self.name} vision "
                             f"model's image size) and give a patch grid divisible by {scale} ({patch}-pixel "
                             f"patches, {scale}x{scale} pixel shuffle), e.g. {near} or {size}")
        return side // scale, side // scale

    def encode(self, tower: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        tokens = tower(pixels)  # (F, rows * cols, H), row-major
        rows = pixels.shape[-1] // tower.vision_model.config.patch_size // tower.connector.scale_factor
        return tokens.reshape(pixels.shape[0], rows, rows, -1)


class Idefics3(SmolVLM):
    """Idefics3 (Idefics3-8B-Llama3, SmolVLM v1: ``model_type`` ``idefics3``), the same code as SmolVLM2."""

    name = "idefics3"
    model_types = ("idefics3",)
    config_class = "Idefics3Config"


ADAPTER = register(SmolVLM())
IDEFICS3 = register(Idefics3())

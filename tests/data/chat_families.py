"""Family-like fixture tokenizers: the packaged tiny tokenizer + each VLM family's special tokens + a chat template
written in that family's style (not copied from the family), for the golden chat-format tests.

Each :class:`Family` also carries the frame layout an adapter would fill in (``stream.v_placeholder``,
``frame_prefix``, ``frame_suffix``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livecue.data.chat_format import ChatFormat
from livecue.data.labels import Markers, add_frame_placeholder
from livecue.data.template import Template
from livecue.model.tiny_tokenizer import load_tiny_tokenizer

# ChatML (Qwen2.5-VL, LLaVA-OneVision-Qwen2): a default system prompt when the conversation gives none
CHATML_DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# ChatML without a default system prompt (Qwen3-VL style)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for part in m['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# LLaVA-OneVision style: typed content only (images first, then text), default system prompt
LLAVA_OV = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ m['role'] }}\n"
    "{% for part in m['content'] | selectattr('type', 'equalto', 'image') %}<image>\n{% endfor %}"
    "{% for part in m['content'] | selectattr('type', 'equalto', 'text') %}{{ part['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# SmolVLM2 / Idefics3 style: one <|im_start|>, capitalised roles, typed content, <end_of_utterance> ends every turn
IDEFICS3 = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}: "
    "{% for part in m['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}{% elif part['type'] == 'image' %}"
    "<image>{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)
# Gemma 3 style: no system role (the system text opens the first user turn), "model" answers
GEMMA3 = (
    "{{ bos_token }}{% set offset = 0 %}{% set first = '' %}"
    "{% if messages[0]['role'] == 'system' %}{% set first = messages[0]['content'] + '\n\n' %}{% set offset = 1 %}"
    "{% endif %}{% for m in messages[offset:] %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{% if loop.first %}{{ first }}{% endif %}{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """One family's fixture: its special tokens, bos/eos, chat template and frame layout."""

    name: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    chat_template: str
    v_placeholder: str
    frame_prefix: str = ""
    frame_suffix: str = ""


QWEN_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
               "<|video_pad|>")
FAMILIES = {
    "qwen2_5_vl": Family("qwen2_5_vl", QWEN_TOKENS, None, "<|im_end|>", CHATML_DEFAULT_SYSTEM, "<|image_pad|>",
                         "<|vision_start|>", "<|vision_end|>"),
    "qwen3_vl": Family("qwen3_vl", QWEN_TOKENS, None, "<|im_end|>", CHATML, "<|image_pad|>", "<|vision_start|>",
                       "<|vision_end|>"),
    "llava_onevision": Family("llava_onevision", ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<image>"), None,
                              "<|im_end|>", LLAVA_OV, "<image>"),
    "smolvlm": Family("smolvlm", ("<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>",
                                  "<image>"), "<|im_start|>", "<end_of_utterance>", IDEFICS3, "<image>",
                      "<fake_token_around_image><global-img>", "<fake_token_around_image>"),
    "gemma3": Family("gemma3", ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                                "<end_of_image>", "<image_soft_token>"), "<bos>", "<eos>", GEMMA3,
                     "<image_soft_token>", "<start_of_image>", "<end_of_image>"),
}


def family_tokenizer(name: str) -> Any:
    """The tiny tokenizer dressed as family ``name``: its special tokens, bos/eos and chat template."""
    fam = FAMILIES[name]
    tok = load_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": list(fam.specials)}, replace_extra_special_tokens=False)
    tok.add_special_tokens({"eos_token": fam.eos})
    if fam.bos is None:
        tok.bos_token = None
    else:
        tok.add_special_tokens({"bos_token": fam.bos})
    tok.chat_template = fam.chat_template
    tok.name_or_path = f"tiny-{name}"
    add_frame_placeholder(tok, fam.v_placeholder)
    return tok


def family_template(name: str, tok: Any, k: int = 2, interval: str = ",") -> tuple[Template, Markers]:
    """The family's template (chat format cut out of its chat template) with ``k`` placeholders per frame, and
    its markers."""
    fam = FAMILIES[name]
    chat = ChatFormat.from_chat_template(tok)
    tpl = Template(bos=tok.bos_token or "", eos=chat.eos, v_placeholder=fam.v_placeholder, frame_num_tokens=k,
                   frame_interval=interval, frame_prefix=fam.frame_prefix, frame_suffix=fam.frame_suffix, chat=chat)
    return tpl, Markers.from_template(tok, tpl)

"""Pretrained vision-language models as the base of a LiveModel (``architecture: vlm``).

:mod:`.base` holds what every family shares (the adapter protocol and registry, the text LM, the frame encoder, the
M-RoPE positions); :mod:`.source` loads a VLM and derives its config; each family is one adapter module
(:mod:`.qwen2_5_vl`). Importing this package registers every family.
"""

from . import qwen2_5_vl  # noqa: F401 - registers the family
from .base import FAMILIES, FrameLayout, MRopePositions, TextLM, VLMAdapter, VLMFrameEncoder, adapter_for, register
from .source import (
    build_vlm_parts,
    derive,
    dir_config,
    family_config,
    is_vlm_dir,
    load_vlm_tokenizer,
)

__all__ = ["FAMILIES", "FrameLayout", "MRopePositions", "TextLM", "VLMAdapter", "VLMFrameEncoder", "adapter_for",
           "register", "build_vlm_parts", "derive", "dir_config", "family_config", "is_vlm_dir", "load_vlm_tokenizer"]

"""Pretrained vision-language models as the base of a LiveModel (``architecture: vlm``).

:mod:`.base` holds what every family shares (the adapter protocol and registry, the text LM, the frame encoder, the
M-RoPE positions); :mod:`.source` loads a VLM and derives its config; each family is one adapter module
(:mod:`.qwen2_5_vl`, ...). Importing this package imports every other module of it, and each adapter module
registers its family (:func:`register`): adding a family is adding one file here.
"""

import importlib
import pkgutil

from .base import (
    FAMILIES,
    FrameLayout,
    MRopePositions,
    TextLM,
    VLMAdapter,
    VLMFrameEncoder,
    adapter_for,
    load_plain_state,
    plain_state,
    register,
)
from .source import (
    build_vlm_parts,
    derive,
    dir_config,
    family_config,
    is_vlm_dir,
    load_vlm_tokenizer,
)

_SHARED = ("base", "source")
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SHARED:  # a family adapter: importing it registers the family
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "FrameLayout", "MRopePositions", "TextLM", "VLMAdapter", "VLMFrameEncoder", "adapter_for",
           "register", "plain_state", "load_plain_state", "build_vlm_parts", "derive", "dir_config", "family_config",
           "is_vlm_dir", "load_vlm_tokenizer"]

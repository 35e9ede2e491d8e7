"""The one module that talks to transformers' KV-cache API.

transformers changes its cache API often (5.x renamed the forward argument ``past_key_values`` to ``cache`` and
made ``DynamicCache.crop`` reject positive lengths in some versions). Everything else in livecue calls these
functions and never touches cache objects directly.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from torch import nn

Cache = object  # opaque to the rest of livecue


@lru_cache(maxsize=None)
def _cache_kwarg(forward) -> str:
    """The name the LM's forward uses for the KV cache in this transformers version."""
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(lm: nn.Module) -> Cache:
    """An empty dynamic KV cache for ``lm``."""
    from transformers import DynamicCache

    return DynamicCache(config=lm.config)


def cache_length(cache: Cache | None) -> int:
    """Number of positions held in the cache (0 for ``None``)."""
    return 0 if cache is None else int(cache.get_seq_length())


def crop_cache(cache: Cache, length: int) -> None:
    """Keep only the first ``length`` positions, in place."""
    if not 0 <= length <= cache_length(cache):
        raise ValueError(f"cannot crop a cache of {cache_length(cache)} positions to {length}")
    cache.crop(length - cache_length(cache) if length else -cache_length(cache))


def lm_forward(lm: nn.Module, inputs_embeds: torch.Tensor, *, cache: Cache | None = None,
               attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
               use_cache: bool = False, logits_to_keep: int | torch.Tensor = 0) -> tuple[torch.Tensor, Cache | None]:
    """One causal-LM forward on embeddings.

    Shape:
        inputs_embeds: (B, T, H); returns logits (B, T', V): all T positions, the last ``logits_to_keep`` ones,
        or the positions listed by a 1-D index tensor.

    Returns:
        ``(logits, cache)``; ``cache`` is the updated cache when ``use_cache`` (created if ``None``).
    """
    if use_cache and cache is None:
        cache = new_cache(lm)
    kwargs = {_cache_kwarg(type(lm).forward): cache if use_cache else None}
    out = lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
             use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
    return out.logits, (cache if use_cache else None)


def input_embeddings(lm: nn.Module) -> nn.Module:
    """The LM's token embedding table."""
    return lm.get_input_embeddings()


def hidden_size(lm: nn.Module) -> int:
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return int(cfg.hidden_size)

"""Grouped-query attention for streaming steps without materialising the grouped KV heads.

A streaming frame step feeds a few tokens (a frame's ``<v>`` tokens and its separator) on top of a long KV cache, so
the attention needs a mask (bottom-right causal). transformers' ``sdpa`` path then expands every KV head to its
query heads (``repeat_kv``): for a Llama with 4 query heads per KV head that copies the whole cache ×4 per layer per
step, the largest single cost of a frame step at long context (measured: ~50% of a tiny-model frame at 17K cached
tokens on CPU). Here the query heads sharing a KV head are folded into that head's query rows instead
(``(B, H, q, d) -> (B, H_kv, G*q, d)``, mask tiled G times), which is exact and needs no copy of the cache; the same
trick transformers already uses for single-token decoding.

:func:`use_stream_attention` switches an ``sdpa`` LM to it (an ``AttentionInterface`` registration: every other case,
e.g. training without a cache, single-token steps, soft-capping, attention sinks, falls through to transformers'
own ``sdpa`` function). The same function runs the attention of ragged multi-stream forwards
(:func:`livecue.model.lm.ragged_forward`: one forward, each stream attending to its own cache).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

NAME = "livecue_sdpa"
_FALLBACK_KWARGS = ("softcap", "position_bias", "s_aux", "sinks")


def packed_gqa_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers ``sdpa`` attention, with masked multi-token GQA computed on the KV heads directly.

    Shape:
        query: (B, H, q, d); key, value: (B, H_kv, T, d); attention_mask: (B or 1, 1, q, T) bool or additive;
        returns ((B, q, H, d_v), None) like transformers' attention functions.
    """
    # transformers is imported where it is used (it costs seconds to import); by now the LM has loaded it
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ragged = kwargs.pop("livecue_ragged", None)
    if ragged is not None:  # several streams in one forward (lm.ragged_forward, kvpool.PooledLM): theirs
        return ragged.attend(module, query, scaling)
    groups = int(getattr(module, "num_key_value_groups", 1))
    b, h, q, d = query.shape
    if (groups == 1 or q == 1 or attention_mask is None or attention_mask.ndim != 4 or attention_mask.shape[1] != 1
            or attention_mask.shape[2] != q or any(kwargs.get(k) is not None for k in _FALLBACK_KWARGS)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    folded = query.reshape(b, h // groups, groups * q, d)  # query head g*j + i uses KV head j: rows i*q .. i*q+q-1
    mask = _folded_mask(attention_mask, groups, query.dtype)  # (B, 1, G*q, T)
    out = F.scaled_dot_product_attention(folded, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.reshape(b, h, q, value.shape[-1]).transpose(1, 2).contiguous(), None


_memo: tuple = (None, 0, None, None)  # (mask given, groups, dtype, folded additive mask): one forward's layers share it


def _folded_mask(mask: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask tiled for folded queries, additive in ``dtype``. Every layer of a forward gets the same mask object:
    it is built once per forward (sdpa would otherwise convert a boolean mask to an additive one in every layer).

    Shape: (B or 1, 1, q, T) -> (B or 1, 1, G*q, T).
    """
    global _memo
    given, memo_groups, memo_dtype, folded = _memo
    if given is mask and memo_groups == groups and memo_dtype == dtype:
        return folded
    mb, _, q, kv = mask.shape
    tiled = mask.expand(mb, groups, q, kv).reshape(mb, 1, groups * q, kv)
    if tiled.dtype == torch.bool:
        zero = torch.zeros((), dtype=dtype, device=tiled.device)
        tiled = torch.where(tiled, zero, torch.full((), float("-inf"), dtype=dtype, device=tiled.device))
    _memo = (mask, groups, dtype, tiled)
    return tiled


def _register() -> None:
    from transformers import AttentionInterface  # see packed_gqa_sdpa
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, packed_gqa_sdpa)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_stream_attention(lm: nn.Module) -> bool:
    """Switch an LM that uses ``sdpa`` attention to :func:`packed_gqa_sdpa` (same results; it also runs ragged
    multi-stream forwards). Returns whether the LM now uses it; LMs with another attention implementation (eager,
    flash, ...) are left alone."""
    config = getattr(lm, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return getattr(config, "_attn_implementation", None) == NAME
    _register()
    lm.set_attn_implementation(NAME)
    log.debug("%s: livecue attention (GQA without repeat_kv, ragged batches)", type(lm).__name__)
    return True

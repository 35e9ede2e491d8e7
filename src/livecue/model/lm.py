"""The one module that talks to transformers' KV-cache API.

transformers changes its cache API often (5.x renamed the forward argument ``past_key_values`` to ``cache`` and
made ``DynamicCache.crop`` reject positive lengths in some versions). Everything else in livecue calls these
functions and never touches cache objects directly. transformers itself is imported inside the functions that use
it (importing it costs seconds; by the time they run, the LM has loaded it).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Cache = object  # opaque to the rest of livecue


@dataclass(frozen=True)
class FrameLevels:
    """Per-level features of the frame tokens that an LM adds to the hidden states of the frame positions after its
    first decoder layers (Qwen3-VL's DeepStack: level l after layer l; :func:`deepstack_levels`).

    Attributes:
        mask: (B, T) bool, the frame positions of the forward's tokens.
        levels: (L, N, H), level l's feature of each of the N frame positions, in row-major (batch, then time) order.
    """

    mask: torch.Tensor
    levels: torch.Tensor


@functools.cache
def _cache_kwarg(forward) -> str:
    """The name the LM's forward uses for the KV cache in this transformers version."""
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(module: nn.Module) -> str:
    """The name ``module``'s forward gives the KV cache in this transformers version (``cache``, formerly
    ``past_key_values``)."""
    return _cache_kwarg(type(module).forward)


def new_cache(lm: nn.Module) -> Cache:
    """An empty dynamic KV cache for ``lm`` whose full-attention layers append in place (:func:`_growing_layer`) and
    whose sliding-window layers can undo their last update (:func:`_sliding_layer`)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache = DynamicCache(config=lm.config)
    growing, sliding = _growing_layer(), _sliding_layer()
    cache.layers = [growing() if type(layer) is DynamicLayer else sliding(layer.sliding_window)
                    if type(layer) is DynamicSlidingWindowLayer else layer for layer in cache.layers]
    if getattr(cache, "layer_class_to_replicate", None) is DynamicLayer:
        cache.layer_class_to_replicate = growing
    return cache


@functools.cache
def _sliding_layer() -> type:
    """A ``DynamicSlidingWindowLayer`` that drops the positions fallen out of its window at its next update instead
    of right away: it holds the last ``sliding_window - 1`` positions before the last update plus that update's, so
    :func:`crop_cache` can undo the last forward (evaluation scores future frames, then crops them; transformers'
    layer refuses once the window is full). Attention and masks are the base class's."""
    from transformers.cache_utils import DynamicSlidingWindowLayer

    class SlidingLayer(DynamicSlidingWindowLayer):
        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            self.cumulative_length += key_states.shape[-2]
            if self.keys.ndim != 4 or self.keys.shape[-2] == 0:
                self.keys, self.values = key_states, value_states
            else:
                drop = max(0, self.keys.shape[-2] - (self.sliding_window - 1))
                self.keys = torch.cat([self.keys[..., drop:, :], key_states], dim=-2)
                self.values = torch.cat([self.values[..., drop:, :], value_states], dim=-2)
            return self.keys, self.values

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop a sliding-window cache layer by a negative count, got {tokens_to_remove}")
            n, held = -tokens_to_remove, self.keys.shape[-2] if self.keys is not None and self.keys.ndim == 4 else 0
            if held - n < min(self.cumulative_length - n, self.sliding_window - 1):
                raise ValueError(f"cannot remove the last {n} positions of a sliding-window cache layer (window "
                                 f"{self.sliding_window}): it no longer holds the {self.sliding_window - 1} before "
                                 "them; only the last forward can be undone")
            if n:
                self.keys, self.values = self.keys[..., :held - n, :], self.values[..., :held - n, :]
                self.cumulative_length -= n

    return SlidingLayer


@functools.cache
def _growing_layer() -> type:
    """A ``DynamicLayer`` whose keys/values are prefix views of buffers with spare room.

    ``DynamicLayer.update`` concatenates, which copies (and reallocates) the whole layer cache on every step: O(T)
    per step, and at long context mostly page faults on fresh allocations. Here new entries are written in place
    and the buffer grows by a quarter (at least 256 positions) when full, so appending costs O(new tokens)
    amortised. ``keys``/``values`` stay ordinary ``(B, H, T, D)`` tensors (views), so crop and eviction, which
    assign or slice them, keep working: an update adopts whatever tensors it finds. With autograd recording, or
    when an inference-mode buffer would be written outside inference mode, it concatenates like the base class.
    """
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        _buf_k: torch.Tensor | None = None
        _buf_v: torch.Tensor | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            if torch.is_grad_enabled() and (key_states.requires_grad or value_states.requires_grad):
                return super().update(key_states, value_states, *args, **kwargs)
            keys, values = self.keys, self.values
            n = keys.shape[-2] if keys.ndim == 4 else 0
            end = n + key_states.shape[-2]
            buf_k, buf_v = self._buf_k, self._buf_v
            usable = (buf_k is not None and end <= buf_k.shape[-2] and buf_k.shape[:2] == key_states.shape[:2]
                      and buf_k.shape[-1] == key_states.shape[-1] and buf_v.shape[-1] == value_states.shape[-1]
                      and buf_k.dtype == key_states.dtype and buf_k.device == key_states.device
                      and (torch.is_inference_mode_enabled() or not buf_k.is_inference()))
            if not usable:  # (re)allocate with room to grow
                b, h, _, d = key_states.shape
                capacity = end + max(256, end // 4)
                buf_k = key_states.new_empty(b, h, capacity, d)
                buf_v = value_states.new_empty(b, value_states.shape[1], capacity, value_states.shape[-1])
                self._buf_k, self._buf_v = buf_k, buf_v
            if n and not (keys.data_ptr() == buf_k.data_ptr() and keys.stride() == buf_k.stride()):
                buf_k[..., :n, :].copy_(keys)  # adopt tensors assigned from outside (eviction) or a new buffer
                buf_v[..., :n, :].copy_(values)
            buf_k[..., n:end, :].copy_(key_states)
            buf_v[..., n:end, :].copy_(value_states)
            self.keys, self.values = buf_k[..., :end, :], buf_v[..., :end, :]
            return self.keys, self.values

        def reset(self) -> None:
            self._buf_k = self._buf_v = None
            super().reset()

    return GrowingLayer


def new_pool_cache(lm: nn.Module, pool) -> Cache:
    """An empty cache for ``lm`` held in a slot of ``pool`` (a :class:`livecue.model.kvpool.KVPool`): every layer
    reads and writes that slot in place (:func:`_pool_layer`); the slot is released when the cache is garbage
    collected. Needs an LM whose layers all cache full attention (:func:`supports_ragged`)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.config)
    slot = pool.acquire()
    layer = _pool_layer()
    cache.layers = [layer(pool, slot, i) for i in range(len(cache.layers))]
    cache.livecue_pool = (pool, slot)
    weakref.finalize(cache, pool.release, slot)
    return cache


def pool_slot(cache: Cache | None) -> tuple[object, int] | None:
    """``(pool, slot)`` of a cache made by :func:`new_pool_cache`, else None."""
    return getattr(cache, "livecue_pool", None)


def advance_pool_cache(cache: Cache, n: int) -> None:
    """Count ``n`` positions written to the cache's slot by a pooled round (:func:`livecue.model.kvpool.
    pooled_forward` writes every stream's rows in one call, then advances each stream's layers)."""
    for layer in cache.layers:
        layer.length += n


@functools.cache
def _pool_layer() -> type:
    """A ``DynamicLayer`` whose keys/values live in a slot of a KV pool: ``keys``/``values`` are ``(1, H_kv, T, d)``
    views of the slot's first T positions; assigning them (crop, eviction) copies into the slot; an update writes
    its new positions in place. Attention and masks are the base class's (a dynamic cache's)."""
    from transformers.cache_utils import DynamicLayer

    class PoolLayer(DynamicLayer):
        def __init__(self, pool, slot: int, index: int) -> None:
            self.pool, self.slot, self.index = pool, slot, index
            self.held = [0, 0]  # positions of keys, values: equal but while an eviction assigns one, then the other
            super().__init__()

        @property
        def length(self) -> int:
            return self.held[0]

        @length.setter
        def length(self, n: int) -> None:
            self.held = [n, n]

        def _get(self, which: int) -> torch.Tensor | None:
            if self.index not in self.pool.keys:
                return None
            return self.pool.view(self.index, self.slot, self.held[which])[which]

        def _set(self, which: int, value: torch.Tensor | None) -> None:
            if value is None:  # the base class's initialisation
                return
            self.pool.assign(self.index, self.slot, which, value)
            self.held[which] = value.shape[-2]

        keys = property(lambda self: self._get(0), lambda self, v: self._set(0, v))
        values = property(lambda self: self._get(1), lambda self, v: self._set(1, v))
        is_initialized = property(lambda self: self.index in self.pool.keys, lambda self, v: None)

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.pool.ensure_layer(self.index, key_states[0], value_states[0])

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            q = key_states.shape[-2]
            self.pool.reserve(self.length + q)
            start = self.slot * self.pool.capacity + self.length
            self.pool.write(self.index, torch.arange(start, start + q, device=key_states.device), key_states,
                            value_states)
            self.length += q
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError(f"crop a pooled cache layer by a negative count, got {tokens_to_remove}")
            self.length = max(0, self.length + tokens_to_remove)

        def reset(self) -> None:
            self.length = 0

    return PoolLayer


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
               use_cache: bool = False, logits_to_keep: int | torch.Tensor = 0,
               frame_blocks: torch.Tensor | None = None,
               frame_levels: FrameLevels | None = None) -> tuple[torch.Tensor, Cache | None]:
    """One causal-LM forward on embeddings.

    Shape:
        inputs_embeds: (B, T, H); returns logits (B, T', V): all T positions, the last ``logits_to_keep`` ones,
        or the positions listed by a 1-D index tensor. frame_blocks: (B, T), each token's frame (-1: none), for an
        LM whose frames attend to each other (:func:`bidirectional_frames`; passed on only when given).
        frame_levels: the frames' per-level features, for an LM that adds them after its first layers
        (:func:`deepstack_levels`; passed on only when given).

    Returns:
        ``(logits, cache)``; ``cache`` is the updated cache when ``use_cache`` (created if ``None``).
    """
    if use_cache and cache is None:
        cache = new_cache(lm)
    kwargs = {_cache_kwarg(type(lm).forward): cache if use_cache else None}
    if frame_blocks is not None:
        kwargs["frame_blocks"] = frame_blocks
    if frame_levels is not None:
        kwargs["frame_levels"] = frame_levels
    out = lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
             use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
    return out.logits, (cache if use_cache else None)


def bidirectional_frames(lm: nn.Module) -> bool:
    """Whether the tokens of one frame attend to each other in ``lm`` (a VLM trained that way, e.g. Gemma 3:
    :class:`livecue.model.vlm.TextLM`); every forward then takes the frames' blocks and feeds each frame whole."""
    return bool(getattr(lm, "bidirectional_frames", False))


def deepstack_levels(lm: nn.Module) -> int:
    """How many per-level frame features ``lm`` adds to the frame positions after its first decoder layers (Qwen3-VL's
    DeepStack: :class:`FrameLevels`); 0 for every other LM. Frame features are then ``(1 + L) * H`` wide: the tokens
    spliced into the embeddings, then the L levels."""
    return int(getattr(lm, "deepstack_levels", 0))


def enable_activation_checkpointing(lm: nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward (non-reentrant ``torch.utils.checkpoint``): what
    transformers 5.24 calls ``activation_checkpointing_enable``, earlier 5.x ``gradient_checkpointing_enable``."""
    kwargs = {"use_reentrant": False}
    if hasattr(lm, "activation_checkpointing_enable"):
        lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def input_embeddings(lm: nn.Module) -> nn.Module:
    """The LM's token embedding table."""
    return lm.get_input_embeddings()


def hidden_size(lm: nn.Module) -> int:
    cfg = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return int(cfg.hidden_size)


# ---- bounded memory: evicting a span of the cache -------------------------------------------------------------------
def rope_inv_freq(lm: nn.Module, layer_type: str | None = None) -> torch.Tensor:
    """The rotary embedding's inverse frequencies (RoPE models only); those of ``layer_type`` layers when the model
    has one rotary embedding per layer type (Gemma 3: ``sliding_attention`` / ``full_attention``)."""
    for name in ((f"{layer_type}_inv_freq",) if layer_type else ()) + ("inv_freq",):
        for module in lm.modules():
            inv = getattr(module, name, None)
            if isinstance(inv, torch.Tensor):
                return inv
    raise ValueError(f"{type(lm).__name__} has no rotary position embedding: bounded memory needs a RoPE model "
                     "(Llama, Qwen2, SmolLM, Gemma, ...)")


def _rotate(keys: torch.Tensor, shift: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """Move RoPE-rotated keys ``shift`` positions (negative = earlier). Shape: (B, H, T, D)."""
    rot = 2 * inv_freq.shape[0]  # partial rotary: only the first ``rot`` channels are rotated
    angles = shift * inv_freq.to(keys.device, torch.float32)
    cos = torch.cat([angles.cos(), angles.cos()]).to(keys.dtype)
    sin = torch.cat([angles.sin(), angles.sin()]).to(keys.dtype)
    k, rest = keys[..., :rot], keys[..., rot:]
    half = rot // 2
    rotated_half = torch.cat([-k[..., half:], k[..., :half]], dim=-1)
    return torch.cat([k * cos + rotated_half * sin, rest], dim=-1)


@torch.no_grad()
def evict_span(lm: nn.Module, cache: Cache, start: int, end: int, shift: int | None = None) -> None:
    """Remove cache entries ``[start, end)`` in place; later keys are re-rotated ``shift`` positions back (default
    ``end - start``: one position per token), so the kept entries sit at contiguous positions and new tokens continue
    right after them (RoPE relative distances as if the evicted span had never been there). Deeper layers' entries
    still carry what their tokens attended to when computed (as in StreamingLLM); for a 1-layer model the result
    equals a fresh forward over the kept tokens.

    ``shift`` is the position distance of the evicted span when positions are not one per token (Qwen's M-RoPE: a
    frame spans max(rows, cols) positions). Shifting all three M-RoPE components by the same amount is the 1-D
    rotation by that amount for every frequency, so the same re-rotation re-bases them.

    A sliding-window layer (Gemma 3, Mistral) holds only the positions its window still sees: the span must lie
    before them (ValueError otherwise: its layers would need positions they no longer hold); its kept keys are
    re-rotated and its length lowered, so it equals a fresh forward over the kept tokens as well. Each layer's keys
    are rotated with its own layer type's frequencies."""
    length = cache_length(cache)
    if not 0 <= start <= end <= length:
        raise ValueError(f"cannot evict [{start}, {end}) from a cache of {length} positions")
    if start == end:
        return
    shift = end - start if shift is None else shift
    layers = [(i, layer) for i, layer in enumerate(cache.layers)
              if getattr(layer, "is_initialized", True) and layer.keys is not None and layer.keys.numel()]
    for _, layer in layers:
        seen = getattr(layer, "sliding_window", 0) - 1  # what a sliding-window layer's next token still sees
        if getattr(layer, "is_sliding", False) and end > layer.cumulative_length - seen:
            raise ValueError(f"cannot evict [{start}, {end}): this model's sliding-window layers still attend to the "
                             f"last {seen} positions (from {layer.cumulative_length - seen}); bounded memory must "
                             f"keep at least {seen} tokens after the evicted ones (a larger memory max_tokens - chunk)")
    types = getattr(lm.config, "layer_types", None) or []
    for i, layer in layers:
        inv_freq = rope_inv_freq(lm, types[i] if i < len(types) else None)
        if getattr(layer, "is_sliding", False):  # it holds only positions after the span
            keep = min(layer.keys.shape[-2], layer.sliding_window - 1)
            layer.keys = _rotate(layer.keys[..., -keep:, :], -shift, inv_freq)
            layer.values = layer.values[..., -keep:, :]
            layer.cumulative_length -= end - start
            continue
        tail_k = _rotate(layer.keys[..., end:, :], -shift, inv_freq)
        layer.keys = torch.cat([layer.keys[..., :start, :], tail_k], dim=-2)
        layer.values = torch.cat([layer.values[..., :start, :], layer.values[..., end:, :]], dim=-2)


# ---- ragged batches: several streams' new tokens in one forward --------------------------------------------------
def causal_rows(q: int, total: int, groups: int, device: torch.device) -> torch.Tensor | None:
    """The mask of a stream's ``q`` new tokens over its cache of ``total`` positions (them included), tiled for
    ``groups``-folded queries: query r (at position total - q + r) sees keys 0 .. total - q + r. ``None`` for a
    single query (it sees everything). Shape: (groups * q, total)."""
    if q == 1:
        return None
    rows = torch.arange(q, device=device)[:, None] + (total - q)
    return (torch.arange(total, device=device)[None] <= rows).repeat(groups, 1)


class _RaggedCache:
    """The cache object of a ragged forward: the new tokens of N streams sit side by side in one ``(1, Σq)`` row;
    each layer's update appends every stream's slice to that stream's own cache (in place, :func:`_growing_layer`)
    and keeps the stream's whole keys/values for the attention of the same layer (:meth:`attend`)."""

    def __init__(self, caches: list[Cache], bounds: list[tuple[int, int]]) -> None:
        self.caches, self.bounds = caches, bounds
        self.kv: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.masks: dict[int, torch.Tensor | None] = {}  # per stream: the same in every layer, built once

    def mask(self, i: int, q: int, total: int, groups: int, device: torch.device) -> torch.Tensor | None:
        """Stream i's mask (:func:`causal_rows`), built once for all layers."""
        if i not in self.masks:
            self.masks[i] = causal_rows(q, total, groups, device)
        return self.masks[i]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.kv[layer_idx] = [cache.update(key_states[:, :, a:b], value_states[:, :, a:b], layer_idx)
                              for cache, (a, b) in zip(self.caches, self.bounds)]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def attend(self, module: nn.Module, query: torch.Tensor, scaling: float | None):
        """Each stream's queries attend to that stream's cache only (bottom-right causal within its new tokens).

        Shape: query (1, H, Σq, d) -> ((1, Σq, H, d_v), None), like transformers' attention functions.
        """
        kv = self.kv.pop(module.layer_idx)
        _, h, _, d = query.shape
        outs = []
        for i, ((a, b), (keys, values)) in enumerate(zip(self.bounds, kv)):
            q, h_kv = b - a, keys.shape[1]
            folded = query[:, :, a:b].reshape(1, h_kv, (h // h_kv) * q, d)  # GQA without copying the cache
            mask = self.mask(i, q, keys.shape[-2], h // h_kv, query.device)
            out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=mask, scale=scaling)
            outs.append(out.reshape(1, h, q, values.shape[-1]))
        return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def sliding_window(lm: nn.Module) -> int | None:
    """The shortest sliding window of ``lm``'s cache layers (tokens a query sees, itself included), or None when
    every layer attends to the whole cache. Bounded memory must keep at least that many tokens (:func:`evict_span`)."""
    windows = [layer.sliding_window for layer in new_cache(lm).layers if getattr(layer, "is_sliding", False)]
    return min(windows, default=None)


def supports_ragged(lm: nn.Module) -> bool:
    """Whether :func:`ragged_forward` is exact for ``lm``: every layer caches full attention (no sliding-window,
    chunked or recurrent layers) and attention is causal (no frames attending to each other), the masks the ragged
    attention builds."""
    growing = _growing_layer()
    return not bidirectional_frames(lm) and all(type(layer) is growing for layer in new_cache(lm).layers)


def ragged_forward(lm: nn.Module, inputs_embeds: torch.Tensor, caches: list[Cache | None],
                   lengths: list[int], positions: list[torch.Tensor] | None = None,
                   frame_levels: FrameLevels | None = None) -> tuple[torch.Tensor, list[Cache]]:
    """One LM forward for N streams: stream i's ``lengths[i]`` new tokens (in order, side by side in
    ``inputs_embeds``) continue stream i's cache at its own positions; the projections and MLPs run once for all.
    Needs an LM whose attention is livecue's (:func:`livecue.model.attention.use_stream_attention`).

    ``positions``: each stream's explicit position ids (``(C, 1, lengths[i])``, e.g. C = 3 for M-RoPE), for models
    whose positions are not the cache length counted on; None: counted from each stream's cache.
    ``frame_levels``: the frames' per-level features over the ``(1, Σq)`` row (an LM with :func:`deepstack_levels`);
    they are added position by position, so streams side by side get exactly their own.

    Shape: inputs_embeds (1, Σq, H) -> logits (N, V) at each stream's last new token; caches updated in place
    (``None`` ones created). Each stream's result equals its own :func:`lm_forward` up to float rounding.
    """
    if inputs_embeds.shape[:2] != (1, sum(lengths)) or min(lengths, default=0) < 1:
        raise ValueError(f"ragged forward: {tuple(inputs_embeds.shape)} embeddings for segment lengths {lengths}")
    caches = [new_cache(lm) if c is None else c for c in caches]
    device = inputs_embeds.device
    bounds, counted, start = [], [], 0
    for cache, n in zip(caches, lengths):
        bounds.append((start, start + n))
        past = cache_length(cache)
        counted.append(torch.arange(past, past + n))
        start += n
    if positions is None:
        position_ids = torch.cat(counted)[None]
    else:
        if [p.shape[-1] for p in positions] != list(lengths):
            raise ValueError(f"ragged forward: positions for {[p.shape[-1] for p in positions]} tokens, segment "
                             f"lengths {lengths}")
        position_ids = torch.cat([p.reshape(p.shape[0], 1, -1) for p in positions], dim=-1)  # (C, 1, Σq)
    ragged = _RaggedCache(caches, bounds)
    last = torch.tensor([b - 1 for _, b in bounds], device=device)
    dummy_mask = torch.ones(1, 1, start, 1, dtype=torch.bool, device=device)  # 4-D: transformers builds no mask
    kwargs = {_cache_kwarg(type(lm).forward): ragged}
    if frame_levels is not None:
        kwargs["frame_levels"] = frame_levels
    out = lm(inputs_embeds=inputs_embeds, attention_mask=dummy_mask, position_ids=position_ids.to(device),
             use_cache=True, logits_to_keep=last, livecue_ragged=ragged, **kwargs)
    return out.logits[0], caches

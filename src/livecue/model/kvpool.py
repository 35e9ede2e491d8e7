"""The KV pool: every stream's KV cache in one preallocated tensor per layer (the static cache of the fast path).

The dynamic cache (:func:`livecue.model.lm.new_cache`) gives each stream its own tensors, so a batched round must
attend stream by stream (one attention call per stream per layer) and its shapes change every step. The pool instead
holds, per layer, keys and values of shape ``(H_kv, (slots + 1) * capacity, d)``: slot ``s`` owns positions
``[s * capacity, (s + 1) * capacity)``, the last slot is scratch for the padding rows of bucketed rounds. A stream's
cache is a slot (:class:`livecue.model.lm.PoolLayer` views it), so

* a round of N streams writes its new keys with **one** ``index_copy_`` per layer and attends with **one** call over
  the pool (FlexAttention with a block mask that lets each query see its own slot's first ``position + 1`` keys, or
  one SDPA over the gathered slots): :func:`livecue.model.lm.pooled_forward`;
* every tensor a round touches has a static shape (the pool's, and the round's padded to a bucket), which is what
  ``torch.compile`` (CUDA graphs with ``reduce-overhead``) needs.

The pool grows (and compiled steps re-trace once) when a stream outgrows ``capacity`` or more streams than ``slots``
are open: nothing is refused for lack of room. A slot is released when its cache is garbage-collected. Pure tensor
code: transformers' cache objects live in :mod:`livecue.model.lm`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import lm as lm_api

BLOCK = 128  # positions per block of FlexAttention's block mask; capacity is a multiple of it
ATTENTION = ("loop", "padded", "flex")  # how a pooled round attends (PooledLM.attention)
_MIN_BUCKET = 16
RECOMPILE_LIMIT = 64  # graphs of a compiled pooled step: buckets (16 ... 1024 rows) x pool shapes


def _round_up(n: int, k: int) -> int:
    return max(k, math.ceil(n / k) * k)


class KVPool:
    """Preallocated keys/values of up to ``slots`` streams of up to ``capacity`` positions each, per layer.

    Args:
        capacity: positions per stream (rounded up to a multiple of :data:`BLOCK`); doubles when exceeded.
        slots: streams at once; doubles when exceeded.

    Tensors are allocated at a layer's first write, with that write's heads, head size, dtype and device.
    """

    def __init__(self, capacity: int = 1024, slots: int = 4) -> None:
        if capacity < 1 or slots < 1:
            raise ValueError(f"a KV pool needs capacity >= 1 and slots >= 1, got capacity={capacity}, slots={slots}")
        self.capacity = _round_up(int(capacity), BLOCK)
        self.slots = int(slots)
        self.keys: dict[int, torch.Tensor] = {}    # layer -> (H_kv, (slots + 1) * capacity, d)
        self.values: dict[int, torch.Tensor] = {}
        self._free = list(range(self.slots))
        self._lock = threading.Lock()  # acquire/release may come from a garbage collection on another thread
        self.version = 0  # bumped when the tensors are reallocated (compiled steps re-trace on their new shapes)

    # ---- slots ------------------------------------------------------------------------------------------------------
    def acquire(self) -> int:
        """A free slot (the pool doubles its slots when none is left)."""
        with self._lock:
            if not self._free:
                self._resize(self.capacity, self.slots * 2)
            return self._free.pop(0)

    def release(self, slot: int) -> None:
        with self._lock:
            if slot not in self._free and 0 <= slot < self.slots:
                self._free.append(slot)
                self._free.sort()

    @property
    def in_use(self) -> int:
        return self.slots - len(self._free)

    @property
    def scratch(self) -> int:
        """The slot the padding rows of a bucketed round write to (never a stream's)."""
        return self.slots

    def reserve(self, length: int) -> None:
        """Make room for streams of ``length`` positions (the capacity at least doubles: each growth re-traces a
        compiled step once per bucket)."""
        if length > self.capacity:
            with self._lock:
                self._resize(_round_up(max(length, self.capacity * 2), BLOCK), self.slots)

    def _resize(self, capacity: int, slots: int) -> None:
        old_c = self.capacity
        with torch.inference_mode(False):
            self._move(old_c, capacity, slots)
        self._free += list(range(self.slots, slots))
        self.capacity, self.slots = capacity, slots
        self.version += 1

    def _move(self, old_c: int, capacity: int, slots: int) -> None:
        for store in (self.keys, self.values):
            for layer, old in store.items():
                new = old.new_zeros(old.shape[0], (slots + 1) * capacity, old.shape[-1])
                for s in range(self.slots):  # each stream's positions move to its slot's new start
                    new[:, s * capacity:s * capacity + old_c].copy_(old[:, s * old_c:(s + 1) * old_c])
                store[layer] = new

    # ---- tensors ----------------------------------------------------------------------------------------------------
    def ensure_layer(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Allocate ``layer``'s tensors like ``keys``/``values`` (``(..., H_kv, q, d)``) if not yet there."""
        if layer not in self.keys:
            total = (self.slots + 1) * self.capacity
            with torch.inference_mode(False):  # normal tensors: written in and out of inference mode, and by graphs
                self.keys[layer] = keys.new_zeros(keys.shape[-3], total, keys.shape[-1])
                self.values[layer] = values.new_zeros(values.shape[-3], total, values.shape[-1])

    def view(self, layer: int, slot: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot ``slot``'s first ``length`` keys and values of ``layer`` as ``(1, H_kv, length, d)`` views."""
        a = slot * self.capacity
        return self.keys[layer][None, :, a:a + length], self.values[layer][None, :, a:a + length]

    def write(self, layer: int, rows: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``keys``/``values`` ``(1, H_kv, n, d)`` at the pool rows ``rows`` ``(n,)`` (slot * capacity +
        position), in place."""
        self.ensure_layer(layer, keys, values)
        self.keys[layer].index_copy_(1, rows, keys[0].to(self.keys[layer].dtype))
        self.values[layer].index_copy_(1, rows, values[0].to(self.values[layer].dtype))

    def assign(self, layer: int, slot: int, which: int, value: torch.Tensor) -> None:
        """Slot ``slot``'s first ``value.shape[-2]`` keys (``which`` = 0) or values (1) of ``layer`` := ``value``
        ``(1, H_kv, T, d)`` (a crop or an eviction rewrote them)."""
        self.reserve(value.shape[-2])
        self.ensure_layer(layer, value, value)
        self.view(layer, slot, value.shape[-2])[which].copy_(value)

    def bytes(self) -> int:
        """Bytes held by the pool's tensors."""
        return sum(t.numel() * t.element_size() for store in (self.keys, self.values) for t in store.values())


# ---- a round of N streams over the pool -------------------------------------------------------------------------
def flex_available() -> bool:
    """Whether this torch has FlexAttention (``torch.nn.attention.flex_attention``, torch >= 2.5)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def bucket(n: int) -> int:
    """The padded size of a compiled round of ``n`` rows (powers of two from 16): few shapes, few compilations."""
    return max(_MIN_BUCKET, 1 << (n - 1).bit_length())


@dataclass
class _Round:
    """What a pooled forward's attention needs, per row of the round (padding rows last): its pool row, its
    stream's slot and its position in that slot; per stream: its rows ``bounds`` and cache length after the round."""

    pool: KVPool
    rows: torch.Tensor           # (R,) pool rows written (slot * capacity + position)
    slots: list[int]
    bounds: list[tuple[int, int]]
    totals: list[int]            # each stream's cache length including this round's tokens
    attention: str
    block_mask: Any = None       # FlexAttention's, for attention == "flex"
    masks: dict[int, Any] = field(default_factory=dict)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.pool.write(layer_idx, self.rows, key_states, value_states)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    def attend(self, module: nn.Module, query: torch.Tensor, scaling: float | None) -> tuple[torch.Tensor, None]:
        """Each stream's queries attend to its own slot (bottom-right causal within its new tokens); padding rows
        get zeros. Shape: query (1, H, R, d) -> ((1, R, H, d_v), None)."""
        layer = module.layer_idx
        if self.attention == "flex":
            from torch.nn.attention.flex_attention import flex_attention

            keys, values = self.pool.keys[layer][None], self.pool.values[layer][None]
            out = flex_attention(query, keys, values, block_mask=self.block_mask, scale=scaling,
                                 enable_gqa=keys.shape[1] != query.shape[1])
            return out.transpose(1, 2).contiguous(), None
        if self.attention == "padded":
            return self._padded(layer, query, scaling)
        _, h, r, d = query.shape
        outs = []
        for i, ((a, b), slot, total) in enumerate(zip(self.bounds, self.slots, self.totals)):
            keys, values = self.pool.view(layer, slot, total)
            q, h_kv = b - a, keys.shape[1]
            folded = query[:, :, a:b].reshape(1, h_kv, (h // h_kv) * q, d)  # GQA without copying the slot
            if i not in self.masks:
                self.masks[i] = lm_api.causal_rows(q, total, h // h_kv, query.device)
            out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=self.masks[i], scale=scaling)
            outs.append(out.reshape(1, h, q, values.shape[-1]))
        pad = r - self.bounds[-1][1]
        if pad:
            outs.append(query.new_zeros(1, h, pad, self.pool.values[layer].shape[-1]))
        return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None

    def _padded(self, layer: int, query: torch.Tensor, scaling: float | None) -> tuple[torch.Tensor, None]:
        """One SDPA call: the round's slots gathered ``(N, H_kv, T_max, d)``, queries padded to the longest."""
        _, h, r, d = query.shape
        pool_k, pool_v = self.pool.keys[layer], self.pool.values[layer]
        h_kv, c, groups = pool_k.shape[0], self.pool.capacity, h // pool_k.shape[0]
        n, t_max = len(self.slots), max(self.totals)
        q_max = max(b - a for a, b in self.bounds)
        idx = torch.tensor(self.slots, device=query.device)
        keys = pool_k.view(h_kv, -1, c, pool_k.shape[-1])[:, idx, :t_max].transpose(0, 1)  # (N, H_kv, T, d)
        values = pool_v.view(h_kv, -1, c, pool_v.shape[-1])[:, idx, :t_max].transpose(0, 1)
        queries = query.new_zeros(n, h, q_max, d)
        for i, (a, b) in enumerate(self.bounds):
            queries[i, :, :b - a] = query[0, :, a:b]
        if "padded" not in self.masks:
            rows = torch.arange(q_max, device=query.device)
            lengths = torch.tensor([b - a for a, b in self.bounds], device=query.device)
            totals = torch.tensor(self.totals, device=query.device)
            # query row j of stream i sits at position totals[i] - lengths[i] + j; padded rows see key 0 only
            limit = torch.where(rows[None] < lengths[:, None], totals[:, None] - lengths[:, None] + rows[None], 0)
            mask = torch.arange(t_max, device=query.device)[None, None] <= limit[..., None]  # (N, q_max, T)
            self.masks["padded"] = mask[:, None].repeat(1, 1, groups, 1)  # (N, 1, G*q_max, T)
        folded = queries.reshape(n, h_kv, groups * q_max, d)
        out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=self.masks["padded"], scale=scaling)
        out = out.reshape(n, h, q_max, values.shape[-1])
        rows_out = [out[i, :, :b - a] for i, (a, b) in enumerate(self.bounds)]
        pad = r - self.bounds[-1][1]
        if pad:
            rows_out.append(query.new_zeros(h, pad, values.shape[-1]))
        return torch.cat(rows_out, dim=1)[None].transpose(1, 2).contiguous(), None


class _BlockMasks:
    """FlexAttention block masks of pooled rounds, one per (pool shape, padded row count), refreshed in place each
    round: a compiled step sees the same objects every round (no re-tracing), only their contents change."""

    def __init__(self) -> None:
        self._masks: dict[tuple[int, int, int], tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def get(self, pool: KVPool, slot_of_row: list[int], pos_of_row: list[int], device: torch.device) -> Any:
        from torch.nn.attention.flex_attention import BlockMask

        r, c = len(slot_of_row), pool.capacity
        total = (pool.slots + 1) * c
        n_q, n_kv = math.ceil(r / BLOCK), total // BLOCK
        counts = torch.zeros(1, 1, n_q, dtype=torch.int32)
        indices = torch.zeros(1, 1, n_q, n_kv, dtype=torch.int32)
        for qb in range(n_q):  # the kv blocks a query block needs: each of its streams' blocks up to its last row
            reach: dict[int, int] = {}
            for slot, pos in zip(slot_of_row[qb * BLOCK:(qb + 1) * BLOCK], pos_of_row[qb * BLOCK:(qb + 1) * BLOCK]):
                reach[slot] = max(reach.get(slot, 0), pos)
            blocks = [b for slot, pos in sorted(reach.items()) for b in range(slot * c // BLOCK,
                                                                                  (slot * c + pos) // BLOCK + 1)]
            counts[0, 0, qb] = len(blocks)
            indices[0, 0, qb, :len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        slot_t = torch.tensor(slot_of_row, device=device)
        pos_t = torch.tensor(pos_of_row, device=device)
        key = (pool.version, r, str(device))
        if key not in self._masks:
            if len(self._masks) > 16:
                self._masks.clear()
            slots, positions = slot_t.clone(), pos_t.clone()

            def mask_mod(b, h, q_idx, kv_idx):
                return (kv_idx // c == slots[q_idx]) & (kv_idx % c <= positions[q_idx])

            mask = BlockMask.from_kv_blocks(counts.to(device), indices.to(device), BLOCK_SIZE=BLOCK,
                                            mask_mod=mask_mod, seq_lengths=(r, total))
            self._masks[key] = (mask, slots, positions)
        mask, slots, positions = self._masks[key]
        mask.kv_num_blocks.copy_(counts)
        mask.kv_indices.copy_(indices)
        slots.copy_(slot_t)
        positions.copy_(pos_t)
        return mask


class PooledLM:
    """An LM's batched rounds over a :class:`KVPool`: every stream's new tokens in one forward, one attention call
    per layer (``attention``: ``loop`` = one SDPA per stream, ``padded`` = one SDPA over the gathered slots,
    ``flex`` = one FlexAttention call over the pool), optionally through ``torch.compile`` (``compile_mode``: None
    = eager; ``default``; ``reduce-overhead`` = CUDA graphs). Compiled rounds are padded to :func:`bucket` rows and
    streams, and use ``flex`` (static shapes: the pool's).

    Args:
        lm: a causal LM whose layers all cache full attention (:func:`livecue.model.lm.supports_ragged`) and whose
            attention is livecue's (:func:`livecue.model.attention.use_stream_attention`).
        pool: the KV pool of its streams.
    """

    def __init__(self, lm: nn.Module, pool: KVPool, attention: str = "loop", compile_mode: str | None = None) -> None:
        if attention not in ATTENTION:
            raise ValueError(f"pooled attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
        if attention == "flex" and not flex_available():
            raise ValueError("attention 'flex' needs torch.nn.attention.flex_attention (torch >= 2.5)")
        if compile_mode is not None and attention != "flex":
            raise ValueError("a compiled pooled step attends with 'flex' (static shapes)")
        if not lm_api.supports_ragged(lm):
            raise ValueError(f"{type(lm).__name__} has sliding-window, chunked or bidirectional attention layers: "
                             "the KV pool holds full causal attention only")
        self.lm, self.pool, self.attention, self.compile_mode = lm, pool, attention, compile_mode
        self._forward = lm if compile_mode is None else torch.compile(lm, mode=compile_mode, dynamic=False)
        self._block_masks = _BlockMasks()

    def new_cache(self) -> Any:
        return lm_api.new_pool_cache(self.lm, self.pool)

    def forward(self, inputs_embeds: torch.Tensor, caches: list[Any], lengths: list[int],
                positions: list[torch.Tensor] | None = None,
                frame_levels: lm_api.FrameLevels | None = None) -> tuple[torch.Tensor, list[Any]]:
        """:func:`livecue.model.lm.ragged_forward` over the pool: same arguments, same results up to float rounding
        (tested), caches that are slots of this pool (``None`` ones created)."""
        if inputs_embeds.shape[:2] != (1, sum(lengths)) or min(lengths, default=0) < 1:
            raise ValueError(f"pooled forward: {tuple(inputs_embeds.shape)} embeddings for segment lengths {lengths}")
        caches = [self.new_cache() if c is None else c for c in caches]
        slots = []
        for cache in caches:
            owner = lm_api.pool_slot(cache)
            if owner is None or owner[0] is not self.pool:
                raise ValueError("pooled forward: a cache that is not a slot of this pool (sessions of one engine "
                                 "share its pool)")
            slots.append(owner[1])
        pasts = [lm_api.cache_length(c) for c in caches]
        self.pool.reserve(max(p + n for p, n in zip(pasts, lengths)))
        device, c = inputs_embeds.device, self.pool.capacity
        slot_of_row = [s for s, n in zip(slots, lengths) for _ in range(n)]
        pos_of_row = [p + j for p, n in zip(pasts, lengths) for j in range(n)]
        bounds, start = [], 0
        for n in lengths:
            bounds.append((start, start + n))
            start += n
        r, n_streams = start, len(caches)
        compiled = self.compile_mode is not None
        if compiled:  # pad rows and streams to buckets; padding rows write and read the scratch slot
            r_pad, n_pad = bucket(r), self.pool.slots  # logits of at most one row per slot
            if r_pad - r > c:
                self.pool.reserve(r_pad - r)
                c = self.pool.capacity
            slot_of_row += [self.pool.scratch] * (r_pad - r)
            pos_of_row += list(range(r_pad - r))
            inputs_embeds = F.pad(inputs_embeds, (0, 0, 0, r_pad - r))
            if positions is not None:
                positions = [*positions, torch.zeros(positions[0].shape[0], 1, r_pad - r, dtype=positions[0].dtype)]
            if frame_levels is not None:
                frame_levels = lm_api.FrameLevels(F.pad(frame_levels.mask, (0, r_pad - r)), frame_levels.levels)
            last = [b - 1 for _, b in bounds] + [r_pad - 1] * (n_pad - n_streams)
        else:
            last = [b - 1 for _, b in bounds]
        rows = torch.tensor([s * c + p for s, p in zip(slot_of_row, pos_of_row)], device=device)
        if positions is None:
            position_ids = torch.tensor([pos_of_row], device=device)
        else:
            position_ids = torch.cat([p.reshape(p.shape[0], 1, -1) for p in positions], dim=-1).to(device)
        block_mask = None
        if self.attention == "flex":
            block_mask = self._block_masks.get(self.pool, slot_of_row, pos_of_row, device)
        state = _Round(self.pool, rows, slots, bounds, [p + n for p, n in zip(pasts, lengths)], self.attention,
                       block_mask)
        dummy_mask = torch.ones(1, 1, len(slot_of_row), 1, dtype=torch.bool, device=device)  # 4-D: no mask built
        kwargs = {lm_api.cache_kwarg(self.lm): state}
        if frame_levels is not None:
            kwargs["frame_levels"] = frame_levels
        call = dict(inputs_embeds=inputs_embeds, attention_mask=dummy_mask, position_ids=position_ids,
                    use_cache=True, logits_to_keep=torch.tensor(last, device=device), livecue_ragged=state, **kwargs)
        if not compiled or not self.pool.keys:  # the first round allocates the pool, eagerly
            out = self.lm(**call)
        else:  # one graph per bucket and pool shape: more than dynamo's default 8 (past it, it would run eagerly)
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                out = self._forward(**call)
        for cache, n in zip(caches, lengths):
            lm_api.advance_pool_cache(cache, n)
        return out.logits[0, :n_streams], caches

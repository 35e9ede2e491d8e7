"""The streaming fast paths are exact: folded grouped-query attention equals transformers' sdpa, and the in-place
growing KV cache equals concatenation (through growth, crop, eviction and grad mode)."""

import pytest
import torch

from livecue.model import lm as lm_api
from livecue.model.attention import NAME, use_stream_attention

QWEN = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 8, "num_key_value_heads": 2}


def _model(over=None):
    from livecue.config import preset
    from livecue.model.build import build_model

    return build_model(preset("tiny", over or {}))[0]


def _stream(model, ids, steps, cache_factory):
    """Feed ``ids`` in chunks of ``steps`` through a cache; return every chunk's logits."""
    out, cache, pos = [], cache_factory(), 0
    with torch.inference_mode():
        for n in steps:
            r = model(ids[:, pos:pos + n], cache=cache, use_cache=True)
            cache, pos = r.cache, pos + n
            out.append(r.logits)
    return torch.cat(out, dim=1), cache


@pytest.mark.parametrize("over", [None, {"lm.random_init": QWEN}], ids=["llama", "qwen2"])
def test_folded_gqa_attention_is_exact(over):
    model = _model(over)
    ids = torch.randint(0, 1000, (1, 156))
    steps = [40] + [11, 1, 1, 11, 5] * 4
    from transformers import DynamicCache

    ref, _ = _stream(model, ids, steps, lambda: DynamicCache(config=model.lm.config))
    assert use_stream_attention(model.lm) and model.lm.config._attn_implementation == NAME
    assert use_stream_attention(model.lm)  # idempotent
    fast, _ = _stream(model, ids, steps, lambda: DynamicCache(config=model.lm.config))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    with torch.inference_mode():  # batched, left-padded, no cache: falls through to transformers' sdpa
        mask = torch.ones(2, 30, dtype=torch.long)
        mask[1, :4] = 0
        x = torch.randint(0, 1000, (2, 30))
        a = model.lm(input_ids=x, attention_mask=mask).logits
        model.lm.set_attn_implementation("sdpa")
        b = model.lm(input_ids=x, attention_mask=mask).logits
    torch.testing.assert_close(a[1, 4:], b[1, 4:])
    torch.testing.assert_close(a[0], b[0])


def test_stream_attention_leaves_other_models_alone():
    model = _model({"lm.random_init.num_key_value_heads": 4})  # no grouped heads: still switched (ragged batches)
    assert use_stream_attention(model.lm) and model.lm.config._attn_implementation == NAME
    model.lm.set_attn_implementation("eager")
    assert not use_stream_attention(model.lm) and model.lm.config._attn_implementation == "eager"


def test_growing_cache_equals_concatenation():
    from transformers import DynamicCache

    model = _model()
    ids = torch.randint(0, 1000, (1, 700))
    steps = [30] + [11] * 40 + [1] * 30 + [200]  # crosses several reallocations
    ref, ref_cache = _stream(model, ids, steps, lambda: DynamicCache(config=model.lm.config))
    fast, cache = _stream(model, ids, steps, lambda: lm_api.new_cache(model.lm))
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    layer = cache.layers[0]
    assert type(layer).__name__ == "GrowingLayer" and lm_api.cache_length(cache) == 700
    assert layer._buf_k.shape[-2] > 700 and layer.keys.data_ptr() == layer._buf_k.data_ptr()
    torch.testing.assert_close(layer.keys, ref_cache.layers[0].keys)
    with torch.inference_mode():  # crop, evict, then continue: both caches agree
        for c in (cache, ref_cache):
            lm_api.crop_cache(c, 650)
            lm_api.evict_span(model.lm, c, 20, 120)
        a = model(ids[:, 650:661], cache=cache, use_cache=True).logits
        b = model(ids[:, 650:661], cache=ref_cache, use_cache=True).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert lm_api.cache_length(cache) == 561


def test_growing_cache_outside_inference_mode_and_with_grad():
    model = _model()
    ids = torch.randint(0, 1000, (1, 40))
    with torch.inference_mode():
        cache = model(ids[:, :20], use_cache=True).cache
    with torch.no_grad():  # an inference-mode buffer cannot be written here: the layer reallocates
        nograd = model(ids[:, 20:30], cache=cache, use_cache=True).logits
    model.train()
    out = model(ids[:, 30:40], cache=cache, use_cache=True).logits  # autograd: plain concatenation
    out.sum().backward()
    model.eval()
    with torch.no_grad():
        full = model(ids).logits
    torch.testing.assert_close(nograd, full[:, 20:30], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.detach(), full[:, 30:40], atol=1e-5, rtol=1e-5)

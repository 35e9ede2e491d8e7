"""Memory policies: bounded == unbounded until the window fills; eviction re-rotates RoPE keys so the kept entries sit
at contiguous positions (exactly a fresh forward for a 1-layer model, whose keys depend only on token + position;
deeper layers keep what their tokens saw when computed, as in StreamingLLM); the cache stays bounded."""

import pytest
import torch

from livecue.inference.engine import Step, StreamEngine
from livecue.inference.memory import SinkWindow, Unbounded
from livecue.model import lm as lm_api


@pytest.fixture(scope="module")
def engine():
    from livecue.config import preset
    from livecue.model.build import build_model

    return StreamEngine(*build_model(preset("tiny")))


def feats(engine, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, engine.model.frame_num_tokens, engine.model.vision.hidden_size, generator=g)


@pytest.mark.parametrize("lm", ["llama", "qwen2"])
def test_evict_span_equals_fresh_forward(lm):
    from livecue.config import preset
    from livecue.model.build import build_model

    over = {"lm.random_init.num_hidden_layers": 1} if lm == "llama" else {"lm.random_init": {
        "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2}}
    model, _ = build_model(preset("tiny", over))
    ids = torch.randint(0, 1000, (1, 60))
    with torch.inference_mode():
        cache = model(ids[:, :50], use_cache=True).cache
        lm_api.evict_span(model.lm, cache, 8, 30)
        assert lm_api.cache_length(cache) == 28
        after = model(ids[:, 50:], cache=cache, use_cache=True).logits
        kept = torch.cat([ids[:, :8], ids[:, 30:]], dim=1)
        fresh = model(kept).logits[:, -10:]
    torch.testing.assert_close(after, fresh, atol=1e-4, rtol=1e-4)


def test_evict_needs_rope(engine):
    from livecue.config import preset
    from livecue.model.build import build_model

    model, _ = build_model(preset("tiny", {"lm.random_init": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2,
                                                               "n_head": 4}}))
    with torch.inference_mode():
        cache = model(torch.randint(0, 100, (1, 10)), use_cache=True).cache
    with pytest.raises(ValueError, match="bounded memory needs a RoPE model"):
        lm_api.evict_span(model.lm, cache, 2, 5)
    with pytest.raises(ValueError, match="cannot evict"):
        lm_api.evict_span(engine.model.lm, engine.session().cache or cache, 5, 99)


def test_bounded_equals_unbounded_until_full(engine):
    f = feats(engine, 30)
    a = engine.session("S", threshold=0.0, memory=Unbounded())
    b = engine.session("S", threshold=0.0, memory=SinkWindow(max_tokens=10_000, chunk=100))
    pa = [e.p_silence for i in range(30) for e in a.push_frame(f[i], i * 0.5)]
    pb = [e.p_silence for i in range(30) for e in b.push_frame(f[i], i * 0.5)]
    assert pa == pb and b.evicted_tokens == 0


def test_after_eviction_cache_equals_fresh_forward():
    from livecue.config import preset
    from livecue.model.build import build_model

    engine = StreamEngine(*build_model(preset("tiny", {"lm.random_init.num_hidden_layers": 1})))
    f = feats(engine, 60, seed=3)
    s = engine.session("S", threshold=0.0, max_reply_tokens=3, record=True,
                       memory=SinkWindow(max_tokens=200, chunk=50))
    s.add_query("What is it?", at=10.2)
    lengths = []
    for i in range(60):
        s.push_frame(f[i], i * 0.5)
        lengths.append(s.context_length)
    assert s.evicted_tokens > 0 and max(lengths) <= 200 + 60  # bounded by the budget plus one step
    def one_more_step():  # a program of one forward on the evicted cache (the last eviction came after a step)
        return (yield Step(s, engine.encode_text(",")))

    last = engine.run([one_more_step()])[0]
    v = engine.markers.v
    K = engine.model.frame_num_tokens
    kept_frames = s.history.count(v) // K
    kept = f[60 - kept_frames:]
    with torch.inference_mode():
        fresh = engine.model(torch.tensor([s.history]), frame_features=kept).logits[0, -1]
    torch.testing.assert_close(last, fresh, atol=1e-4, rtol=1e-4)
    # the sink (system prompt + "\n[") is still there
    assert engine.tokenizer.decode(s.history).startswith("<|bos|>S\n\n[")


def test_bounded_cache_stays_flat(engine):
    f = feats(engine, 1, seed=5)[0]
    s = engine.session("S", threshold=1.0, max_reply_tokens=4, memory=SinkWindow(max_tokens=300, chunk=60))
    lengths = []
    for i in range(150):
        s.push_frame(f, i * 0.5)
        lengths.append(s.context_length)
    assert max(lengths[50:]) <= 300 + 20 and s.evicted_tokens > 1000


def test_sink_window_validation():
    with pytest.raises(ValueError, match="max_tokens > 0"):
        SinkWindow(max_tokens=100, chunk=100)

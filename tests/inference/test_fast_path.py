"""The fast path (livecue.model.kvpool, FastPath): sessions' caches in one preallocated KV pool, every forward a round
over it with one attention call per layer (loop / padded / flex), optionally compiled with torch.compile over
bucketed static shapes. Each variant must give exactly what the default engine gives: the same events, ids fed and
caches (up to float rounding), with sessions joining and leaving, answering, speaking and evicting; on composed and
VLM bases (M-RoPE positions, DeepStack levels)."""

import gc

import pytest
import torch

from livecue.config import preset
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow
from livecue.inference.options import FastPath
from livecue.model import kvpool
from livecue.model import lm as lm_api
from livecue.model.build import build_model

# (name, first tick, frames, threshold, memory, queries)
PLAN = [
    ("talker", 0, 7, 1.0, None, [("What is there?", 1.0)]),             # speaks on every frame
    ("silent", 0, 5, 0.0, None, []),                                    # never speaks, leaves early
    ("bounded", 2, 8, 1.0, SinkWindow(max_tokens=100, chunk=30), [("Where?", 0.0)]),  # evicts
    ("late", 4, 4, 0.0, None, [("Now?", 1.0)]),                          # joins late, answers
]
SYSTEM = "You narrate."


def _base(name: str = "tiny", lm: str = "llama") -> StreamEngine:
    over = {"stream.max_reply_tokens": 4}
    if lm == "qwen2":
        over["lm.random_init"] = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    torch.manual_seed(0)
    return StreamEngine(*build_model(preset(name, over)))


def _streams(engine):
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(n, engine.model.frame_num_tokens, engine.model.vision.hidden_size, generator=g)
            for name, _, n, *_ in PLAN}


def _sessions(engine):
    out = {}
    for name, _, _, theta, memory, queries in PLAN:
        out[name] = engine.session(SYSTEM, threshold=theta, memory=memory, record=True)
        for text, at in queries:
            out[name].add_query(text, at=at)
    return out


def _sequential(engine, streams):
    sessions = _sessions(engine)
    events = {name: [e for k in range(n) for e in sessions[name].push_frame(streams[name][k], k * 0.5)]
              for name, _, n, *_ in PLAN}
    return sessions, events


def _batched(engine, streams):
    sessions = _sessions(engine)
    events = {name: [] for name in sessions}
    for tick in range(max(start + n for _, start, n, *_ in PLAN)):
        items = [(sessions[name], streams[name][tick - start], (tick - start) * 0.5)
                 for name, start, n, *_ in PLAN if start <= tick < start + n]
        for (session, _, _), evs in zip(items, engine.step(items)):
            events[next(k for k, v in sessions.items() if v is session)] += evs
    return sessions, events


def _assert_same(got, ref, p_tolerance=1e-5):
    (gs, ge), (rs, re_) = got, ref
    kinds = set()
    for name in rs:
        assert [type(e) for e in ge[name]] == [type(e) for e in re_[name]], name
        for a, b in zip(ge[name], re_[name]):
            kinds.add(type(a))
            assert getattr(a, "token_ids", None) == getattr(b, "token_ids", None), name
            assert getattr(a, "p_silence", 0) == pytest.approx(getattr(b, "p_silence", 0), abs=p_tolerance)
        assert gs[name].history == rs[name].history and gs[name].next_position == rs[name].next_position
        assert gs[name].context_length == rs[name].context_length
        for la, lb in zip(gs[name].cache.layers, rs[name].cache.layers):
            torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(la.values, lb.values, atol=1e-5, rtol=1e-4)
    assert kinds == {Reply, Silence, Answer}
    assert gs["bounded"].evicted_tokens > 0


@pytest.fixture(scope="module")
def llama():
    engine = _base()
    streams = _streams(engine)
    return engine, streams, _sequential(engine, streams)


@pytest.mark.parametrize("attention", ["loop", "padded", "flex"])
def test_pooled_rounds_equal_the_default_engine(llama, attention):
    engine, streams, ref = llama
    # a small pool: it must grow (capacity and slots) on the way, and flex's eager reference stays cheap
    fast = StreamEngine(engine.model, engine.tokenizer,
                        fast=FastPath(kv_pool=True, attention=attention, pool_capacity=128, pool_slots=2))
    calls = []
    forward = fast.pooled.forward
    fast.pooled.forward = lambda embeds, caches, lengths, **kw: calls.append(len(lengths)) or forward(
        embeds, caches, lengths, **kw)
    _assert_same(_sequential(fast, streams), ref)
    _assert_same(_batched(fast, streams), ref)
    assert max(calls) == 4 and len(calls) > 20  # really one forward for several sessions
    pool = fast.pooled.pool
    assert pool.capacity > 128 and pool.slots >= 4 and pool.version > 0  # it grew, and nothing changed


def test_pooled_rounds_on_qwen2():
    engine = _base(lm="qwen2")
    streams = _streams(engine)
    ref = _sequential(engine, streams)
    fast = StreamEngine(engine.model, engine.tokenizer, fast=FastPath(kv_pool=True, attention="padded"))
    _assert_same(_batched(fast, streams), ref)


@pytest.mark.parametrize("name", ["tiny_qwen2_5_vl", "tiny_qwen3_vl"])
def test_pooled_rounds_on_vlm_bases(name):
    """M-RoPE positions (explicit, re-based by evictions) and DeepStack levels (padded with the rows)."""
    engine = _base(name)
    streams = _streams(engine)
    ref = _sequential(engine, streams)
    for attention in ("loop", "flex"):
        fast = StreamEngine(engine.model, engine.tokenizer,
                            fast=FastPath(kv_pool=True, attention=attention, pool_capacity=256, pool_slots=4))
        _assert_same(_batched(fast, streams), ref)


def test_compiled_rounds_equal_eager(llama):
    """torch.compile over bucketed static shapes: single and batched rounds give the eager engine's events, ids and
    caches; each bucket compiles once (sessions joining, leaving, evicting and the pool's contents changing do not
    re-trace)."""
    torch._dynamo.reset()
    engine, streams, ref = llama
    fast = StreamEngine(engine.model, engine.tokenizer, fast=FastPath(compile=True, pool_slots=4))
    assert fast.pooled.compile_mode == "default" and fast.pooled.attention == "flex"  # CPU: no CUDA graphs
    rows = []
    forward = fast.pooled.forward
    fast.pooled.forward = lambda embeds, caches, lengths, **kw: rows.append(sum(lengths)) or forward(
        embeds, caches, lengths, **kw)
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    _assert_same(_sequential(fast, streams), ref, p_tolerance=1e-4)
    _assert_same(_batched(fast, streams), ref, p_tolerance=1e-4)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"] - before
    buckets = {kvpool.bucket(r) for r in rows[1:]}  # the first round runs eagerly (it allocates the pool)
    assert 0 < graphs <= len(buckets) + 1


def test_compiled_rounds_on_a_vlm_base():
    """A compiled step with M-RoPE positions (3-D position ids, padded with the rows) equals the eager engine."""
    torch._dynamo.reset()
    engine = _base("tiny_qwen2_5_vl")
    streams = _streams(engine)
    ref = _sequential(engine, streams)
    fast = StreamEngine(engine.model, engine.tokenizer, fast=FastPath(compile=True))
    _assert_same(_batched(fast, streams), ref, p_tolerance=1e-4)


def test_pool_slots_are_released_and_reused():
    engine = _base()
    fast = StreamEngine(engine.model, engine.tokenizer, fast=FastPath(kv_pool=True, pool_slots=2))
    f = _streams(engine)["talker"]
    a, b = fast.session(SYSTEM), fast.session(SYSTEM)
    fast.step([(a, f[0], 0.0), (b, f[0], 0.0)])
    pool = fast.pooled.pool
    assert pool.in_use == 2
    slot_b = lm_api.pool_slot(b.cache)[1]
    del b
    gc.collect()
    assert pool.in_use == 1
    c = fast.session(SYSTEM)
    c.push_frame(f[1], 0.0)
    assert lm_api.pool_slot(c.cache)[1] == slot_b and pool.slots == 2  # reused, not grown


def test_crop_and_continue_on_a_pool_cache():
    """Evaluation scores future frames, then crops them: a pooled cache crops like a dynamic one."""
    engine = _base()
    model = engine.model
    pool = kvpool.KVPool(capacity=128, slots=1)
    ids = torch.randint(0, 400, (1, 30), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = model(ids[:, :20], use_cache=True).cache
        lm_api.crop_cache(ref, 12)
        ref_logits = model(ids[:, 12:30], cache=ref, use_cache=True).logits
        cache = lm_api.new_pool_cache(model.lm, pool)
        model(ids[:, :20], cache=cache, use_cache=True)
        lm_api.crop_cache(cache, 12)
        assert lm_api.cache_length(cache) == 12
        logits = model(ids[:, 12:30], cache=cache, use_cache=True).logits
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-4)
    assert lm_api.cache_length(cache) == 30 and pool.capacity == 128


def test_fast_path_refusals():
    with pytest.raises(ValueError, match="attention must be one of"):
        FastPath(attention="fast")
    with pytest.raises(ValueError, match="compile needs the KV pool"):
        FastPath(compile=True, kv_pool=False)
    with pytest.raises(ValueError, match="attends with flex"):
        FastPath(compile=True, attention="loop")
    with pytest.raises(ValueError, match="pool_slots must be an integer >= 1"):
        FastPath(pool_slots=0)
    with pytest.raises(ValueError, match="capacity >= 1"):
        kvpool.KVPool(capacity=0)
    gemma = _base("tiny_gemma3")  # sliding-window layers, frames attending to each other
    with pytest.raises(ValueError, match=r"--compile: .* sliding-window or bidirectional"):
        StreamEngine(gemma.model, gemma.tokenizer, fast=FastPath(compile=True))

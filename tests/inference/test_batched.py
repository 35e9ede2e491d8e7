"""Batched multi-stream stepping: N sessions advanced by one forward per round (StreamEngine.step) give each session
the events and the KV cache it gets when stepped alone (push_frame), while sessions join and leave at any time,
some speak, some answer questions, some hold bounded memory."""

import pytest
import torch

from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow
from livecue.model import lm as lm_api


def _engine(lm: str = "llama") -> StreamEngine:
    from livecue.config import preset
    from livecue.model.build import build_model

    over = {"stream.max_reply_tokens": 6}
    if lm == "qwen2":
        over["lm.random_init"] = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    torch.manual_seed(0)
    return StreamEngine(*build_model(preset("tiny", over)))


def _feats(engine, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, engine.model.frame_num_tokens, engine.model.vision.hidden_size, generator=g)


# (name, first frame index it joins at, frames, threshold, memory, queries)
PLAN = [
    ("talker", 0, 12, 1.0, None, [("What is there?", 2.0)]),           # speaks on every frame (p < 1)
    ("silent", 0, 9, 0.0, None, []),                                    # never speaks: leaves after 9 frames
    ("asker", 3, 10, 1.0, SinkWindow(max_tokens=120, chunk=30), [("Where?", 0.0), ("Why?", 3.1)]),
    ("late", 7, 5, 0.0, None, [("Now?", 1.0)]),                          # joins late, answers one question
]


def _sessions(engine):
    out = {}
    for name, _, _, theta, memory, queries in PLAN:
        s = engine.session(threshold=theta, memory=memory, record=True)
        for text, at in queries:
            s.add_query(text, at=at)
        out[name] = s
    return out


def _key(events):
    rows = []
    for e in events:
        row = (type(e).__name__, round(e.t, 6), tuple(getattr(e, "token_ids", ()) or ()))
        rows.append(row)
    return rows


@pytest.mark.parametrize("lm", ["llama", "qwen2"])
def test_batched_equals_sequential(lm):
    engine = _engine(lm)
    assert engine.batched
    streams = {name: _feats(engine, n, seed) for seed, (name, _, n, *_) in enumerate(PLAN)}

    seq = _sessions(engine)
    seq_events = {name: [] for name in seq}
    for name, _, n, *_ in PLAN:
        for k in range(n):
            seq_events[name] += seq[name].push_frame(streams[name][k], k * 0.5)

    widths = []
    forward_streams = engine.model.forward_streams
    engine.model.forward_streams = lambda ids, f, caches, lengths, **kw: widths.append(len(lengths)) or \
        forward_streams(ids, f, caches, lengths, **kw)
    bat = _sessions(engine)
    bat_events = {name: [] for name in bat}
    rounds = []
    for tick in range(max(start + n for _, start, n, *_ in PLAN)):
        items = [(bat[name], streams[name][tick - start], (tick - start) * 0.5)
                 for name, start, n, *_ in PLAN if start <= tick < start + n]
        rounds.append(len(items))
        for (session, _, _), events in zip(items, engine.step(items)):
            name = next(k for k, v in bat.items() if v is session)
            bat_events[name] += events
    assert max(rounds) == 4 and min(rounds) < 4  # all four together at some point; joins and leaves happen
    assert max(widths) == 4 and len(widths) > 20  # really one forward for several sessions

    kinds = set()
    for name in seq:
        assert _key(bat_events[name]) == _key(seq_events[name]), name
        for a, b in zip(bat_events[name], seq_events[name]):
            kinds.add(type(a))
            if hasattr(a, "p_silence"):
                assert a.p_silence == pytest.approx(b.p_silence, abs=1e-5)
        assert bat[name].history == seq[name].history
        assert bat[name].context_length == seq[name].context_length
        for la, lb in zip(bat[name].cache.layers, seq[name].cache.layers):
            torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(la.values, lb.values, atol=1e-5, rtol=1e-4)
    assert kinds == {Reply, Silence, Answer}
    assert bat["asker"].evicted_tokens > 0  # the bounded session evicted inside batched steps


def test_ragged_forward_equals_separate_forwards():
    engine = _engine()
    model = engine.model
    g = torch.Generator().manual_seed(1)
    prefixes = [torch.randint(0, 500, (1, n), generator=g) for n in (5, 17, 0)]
    new = [torch.randint(0, 500, (1, n), generator=g) for n in (1, 4, 7)]
    with torch.inference_mode():
        alone, caches = [], []
        for p, x in zip(prefixes, new):
            cache = model(p, use_cache=True).cache if p.shape[1] else None
            out = model(x, cache=cache, use_cache=True)
            alone.append(out.logits[0, -1])
        for p in prefixes:
            caches.append(model(p, use_cache=True).cache if p.shape[1] else None)
        logits, caches = model.forward_streams(torch.cat(new, dim=1), None, caches, [x.shape[1] for x in new])
    assert logits.shape == (3, alone[0].shape[0])
    for row, ref in zip(logits, alone):
        torch.testing.assert_close(row, ref, atol=1e-5, rtol=1e-4)
    assert [lm_api.cache_length(c) for c in caches] == [6, 21, 7]


def test_step_rejects_bad_input():
    engine = _engine()
    s = engine.session()
    f = _feats(engine, 2, 0)
    with pytest.raises(ValueError, match="same session twice"):
        engine.step([(s, f[0], 0.0), (s, f[1], 0.5)])
    s.push_frame(f[0], 1.0)
    with pytest.raises(ValueError, match="earlier than the previous frame"):
        engine.step([(engine.session(), f[0], 0.0), (s, f[1], 0.5)])
    other = _engine().session()
    with pytest.raises(ValueError, match="another engine"):
        engine.step([(other, f[0], 0.0)])


def test_step_encodes_pixel_frames_in_one_batch():
    engine = _engine()
    calls = []
    encode = engine.encode
    engine.encode = lambda frames: calls.append(len(frames)) or encode(frames)
    a, b = engine.session(threshold=0.0), engine.session(threshold=0.0)
    res = engine.step([(a, torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), 0.0),
                                  (b, torch.ones(3, 32, 32, dtype=torch.uint8), 0.0)])
    assert calls == [2] and [type(e[0]) for e in res] == [Silence, Silence]


def test_continuous_batch_equals_sequential():
    """Each session takes its next frame as soon as its previous one is done (silent frames take one round, replies
    more), so sessions drift apart in stream time inside one batch; every session still sees exactly its own
    sequential behaviour."""
    engine = _engine()
    streams = [_feats(engine, 8, seed) for seed in range(3)]
    thetas = [1.0, 0.0, 0.5]

    def make():
        out = []
        for theta in thetas:
            s = engine.session(threshold=theta, record=True)
            s.add_query("Why?", at=1.2)
            out.append(s)
        return out

    seq = make()
    seq_events = [[e for k in range(8) for e in s.push_frame(streams[i][k], k * 0.5)] for i, s in enumerate(seq)]
    con = make()
    con_events: list[list] = [[] for _ in con]
    nxt = [0, 0, 0]
    batch = engine.batch()
    rounds, spread = 0, 0
    while any(n < 8 for n in nxt) or len(batch):
        busy = batch.sessions
        for i, s in enumerate(con):
            if nxt[i] < 8 and s not in busy:
                batch.add_frame(s, streams[i][nxt[i]], nxt[i] * 0.5, key=i)
                nxt[i] += 1
        for i, events in batch.round():
            con_events[i] += events
        rounds += 1
        spread = max(spread, max(nxt) - min(nxt))
    assert spread >= 3  # the silent session ran ahead of the talking one
    for i in range(3):
        assert _key(con_events[i]) == _key(seq_events[i])
        assert con[i].history == seq[i].history
    with pytest.raises(ValueError, match="already has a frame"):
        batch.add_frame(con[0], streams[0][0], 9.0)
        batch.add_frame(con[0], streams[0][1], 9.5)


def test_a_failing_program_does_not_stop_the_others():
    from livecue.inference.engine import Step

    engine = _engine()
    good, bad = engine.session(threshold=0.0), engine.session(threshold=0.0)
    f = _feats(engine, 1, 0)[0]

    def broken():
        yield Step(bad, engine.encode_text("x"))
        raise RuntimeError("boom")

    batch = engine.batch()
    batch.add_frame(good, f, 0.0, key="good")
    batch.add(broken(), key="bad")
    results = {}
    while len(batch):
        results.update(batch.round())
    assert isinstance(results["bad"], RuntimeError) and [type(e) for e in results["good"]] == [Silence]
    with pytest.raises(RuntimeError, match="boom"):
        engine.run([broken()])


def test_sliding_window_models_step_one_at_a_time():
    """A model with sliding-window layers is not batched (its masks are not the ragged ones): step() still works,
    one forward per session, with the same events as push_frame."""
    from livecue.config import preset
    from livecue.model.build import build_model

    torch.manual_seed(0)
    over = {"lm.random_init": {"model_type": "mistral", "hidden_size": 64, "intermediate_size": 128,
                               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                               "sliding_window": 8}, "stream.max_reply_tokens": 4}
    engine = StreamEngine(*build_model(preset("tiny", over)))
    assert not engine.batched and not lm_api.supports_ragged(engine.model.lm)
    assert lm_api.supports_ragged(_engine().model.lm)
    f = [_feats(engine, 4, s) for s in range(2)]
    seq = [engine.session(threshold=t, record=True) for t in (1.0, 0.0)]
    a = [[e for k in range(4) for e in s.push_frame(f[i][k], k * 0.5)] for i, s in enumerate(seq)]
    bat = [engine.session(threshold=t, record=True) for t in (1.0, 0.0)]
    b = [[], []]
    for k in range(4):
        for i, events in enumerate(engine.step([(s, f[i][k], k * 0.5) for i, s in enumerate(bat)])):
            b[i] += events
    assert [_key(x) for x in a] == [_key(x) for x in b]

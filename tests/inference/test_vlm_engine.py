"""The streaming engine on a VLM base (tiny random Qwen2.5-VL, M-RoPE positions): what it feeds is the rendered
template in Qwen's chat format, its decisions and replies equal one teacher-forced forward, batched/continuous
stepping equals sequential, bounded memory equals unbounded until the window fills and, after an eviction re-based by
the evicted units' position distance, equals a fresh forward over the kept tokens (1-layer model)."""

import pytest
import torch
from vlm_engine_invariants import (
    assert_batched_equals_sequential,
    assert_bounded_equals_unbounded_until_full,
    feats,
    theta_between,
)

from livecue.config import preset
from livecue.data.labels import tokenize_conversation
from livecue.inference.decide import decide
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow
from livecue.model.build import build_model

PRESET = "tiny_qwen2_5_vl"
SYS = "You narrate."


def _engine(**over) -> StreamEngine:
    return StreamEngine(*build_model(preset(PRESET, {"stream.max_reply_tokens": 4, **over})))


@pytest.fixture(scope="module")
def engine():
    return _engine()


def test_stream_is_the_rendered_template_and_equals_teacher_forcing(engine):
    model, tok = engine.model, engine.tokenizer
    assert model.explicit_positions and engine.batched
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
    assert s.history == ids[:len(s.history)] and len(ids) - len(s.history) == 2  # the open turn's "<|im_end|>\n"
    assert tok.decode(s.history).startswith("<|im_start|>system\nYou narrate.<|im_end|>\n<|im_start|>user\n"
                                            "<|vision_start|><|image_pad|>")
    assert s.next_position == int(model.positions(torch.tensor([s.history]))[1][0]) < len(s.history)

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
    assert_batched_equals_sequential(engine, SYS)


def test_bounded_equals_unbounded_until_full(engine):
    assert_bounded_equals_unbounded_until_full(engine, SYS)


def test_after_eviction_positions_are_rebased_and_equal_a_fresh_forward():
    """A 1-layer model (its keys depend only on token and position): after evictions the next step's logits equal a
    fresh forward over the kept tokens, whose positions restart after the sink; a frame spans 3 positions for 11
    tokens, so the re-basing shift is the evicted units' position distance, not their token count."""
    engine = _engine(**{"vlm.random_init.text_config.num_hidden_layers": 1})
    f = feats(engine, 20, seed=5)
    s = engine.session(SYS, threshold=0.0, max_reply_tokens=3, record=True, memory=SinkWindow(max_tokens=120,
                                                                                             chunk=30))
    s.add_query("What is it?", at=3.2)
    for i in range(20):
        s.push_frame(f[i], i * 0.5)
    assert s.evicted_tokens > 0 and s.context_length <= 120 + 12

    def one_more_step():
        return (yield s._step(engine.encode_text("Hi")))

    last = engine.run([one_more_step()])[0]
    K = engine.model.frame_num_tokens
    kept = f[20 - s.history.count(engine.markers.v) // K:]
    ids = torch.tensor([s.history])
    positions, nxt = engine.model.positions(ids)
    assert s.next_position == int(nxt[0])  # re-based as if the evicted units had never been there
    with torch.inference_mode():
        fresh = engine.model(ids, frame_features=kept).logits[0, -1]
    torch.testing.assert_close(last, fresh, atol=1e-4, rtol=1e-4)
    assert engine.tokenizer.decode(s.history).startswith("<|im_start|>system\nYou narrate.<|im_end|>\n<|im_start|>")


def test_replies_never_hold_frame_tokens():
    """A VLM's image token is in its vocabulary: even a model that would say nothing else never emits it (nor the
    frame prefix/suffix) in a reply, so the context stays a well-formed template."""
    engine = _engine()
    markers, execute = engine.markers, engine._execute

    def image_token_first(steps):  # the model's favourite next token is always the image token
        out = [row.clone() for row in execute(steps)]
        for row in out:
            row[markers.v] = row.max() + 10
        return out

    engine._execute = image_token_first
    s = engine.session(SYS)
    f = feats(engine, 3)
    replies = []
    for i in range(3):
        s.force(True, reply_tokens=4)
        replies += [e for e in s.push_frame(f[i], i * 0.5) if isinstance(e, Reply)]
    assert len(replies) == 3 and all(len(r.token_ids) == 4 for r in replies)
    assert not set(markers.frame_tokens) & {t for r in replies for t in r.token_ids}

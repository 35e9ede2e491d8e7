"""StreamEngine: what it feeds is the rendered template and its decisions equal a teacher-forced forward; queries and
reply caps keep the context well-formed; options resolve in one order and are checked once; decisions can be forced."""

import numpy as np
import pytest
import torch

from livecue.data.labels import tokenize_conversation
from livecue.inference.decide import SamplingConfig, decide, next_token
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow
from livecue.inference.options import StreamOptions

SYS = "You narrate."
LM_ARCHS = {
    "llama": {},  # the tiny preset
    "qwen2": {"lm.random_init": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
                                 "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}},
    "gpt2": {"lm.random_init": {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 4096}},
}


@pytest.fixture(scope="module")
def engine():
    from livecue.config import preset
    from livecue.model.build import build_model

    model, tok = build_model(preset("tiny"))
    return StreamEngine(model, tok)


def features(engine, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, engine.model.frame_num_tokens, engine.model.vision.hidden_size, generator=g)


def run(session, feats, times=None):
    events = []
    for i, f in enumerate(feats):
        events += list(session.push_frame(f, times[i] if times else i * 0.5))
    return events


# ---- the decision rule ---------------------------------------------------------------------------------------------
def test_decide_is_the_threshold_rule():
    logits = torch.tensor([2.0, 1.0, 0.0])
    p = torch.softmax(logits, 0)[0].item()
    assert decide(logits, 0, p).speak is False          # p >= θ: silent
    assert decide(logits, 0, p + 1e-6).speak is True    # p < θ: speak
    assert decide(logits, 0, 0.0).speak is False and decide(logits, 0, 1.0).speak is True
    assert decide(logits, 0, 0.5).p_silence == pytest.approx(p)


def test_sampling():
    logits = torch.tensor([0.0, 3.0, 1.0])
    assert next_token(logits, SamplingConfig(), []) == 1
    assert next_token(logits, SamplingConfig(repetition_penalty=100.0), [1]) == 2
    g = torch.Generator().manual_seed(0)
    draws = {next_token(logits, SamplingConfig(temperature=1.0, top_p=0.5), [], g) for _ in range(20)}
    assert draws == {1}  # top-p 0.5 keeps only the most likely token
    with pytest.raises(ValueError, match=r"top_p must be a finite number in \(0, 1\]"):
        SamplingConfig(top_p=0.0)


# ---- streaming == teacher forcing -----------------------------------------------------------------------------------
def test_decisions_equal_teacher_forced_forward(engine):
    feats = features(engine, 40)
    probe = engine.session(SYS, threshold=0.0)  # never speaks: collect p(silence) along the stream
    p = [e.p_silence for e in run(probe, feats)]
    theta = float(np.median(p))
    session = engine.session(SYS, threshold=theta, max_reply_tokens=3, record=True)
    events = run(session, feats)
    kinds = [type(e).__name__ for e in events]
    assert len(events) == 40 and 0 < kinds.count("Reply") < 40

    # one teacher-forced forward over exactly what the engine fed
    ids = torch.tensor([session.history])
    with torch.inference_mode():
        logits = engine.model(ids, frame_features=feats).logits[0]
    v = engine.markers.v
    K = engine.model.frame_num_tokens
    frame_ends = [i for i, x in enumerate(session.history) if x == v][K - 1::K]
    assert len(frame_ends) == 40
    for event, end in zip(events, frame_ends):
        d = decide(logits[end], engine.markers.silence, theta)
        assert d.p_silence == pytest.approx(event.p_silence, rel=1e-4, abs=1e-7)
        assert d.speak == isinstance(event, Reply)
        if isinstance(event, Reply):
            # the greedy reply is the argmax chain of the teacher-forced logits after "]\nAssistant:"
            prompt = engine.encode_text("]\nAssistant:")
            start = end + 1 + len(prompt)
            assert session.history[end + 1:start] == prompt
            assert session.history[start:start + len(event.token_ids) - 1] == event.token_ids[:-1]
            chain = [int(logits[start - 1 + j].argmax()) for j in range(len(event.token_ids))]
            assert chain == event.token_ids


@pytest.mark.parametrize("lm", list(LM_ARCHS))
def test_engine_feeds_the_rendered_template(lm):
    """The engine drives a stream (decisions forced at frames 3, 8 and 20, the reply text steered through the logits,
    a query after a reply, one inside the stream, an instruction): the ids it fed through the KV cache are the
    template's rendering of the same conversation, tokenized at once as training tokenizes it, and every forward's
    last logits (each decision, prompt and reply token) equal a teacher-forced forward over those ids."""
    from livecue.config import preset
    from livecue.model.build import build_model

    model, tok = build_model(preset("tiny", LM_ARCHS[lm]))
    engine = StreamEngine(model, tok)
    reply = engine.encode_text(" A blue circle moves left.")
    s = engine.session(SYS, record=True)
    s.add_query("Who is there?", at=1.6)           # after the reply of frame 3 (t = 1.5), before frame 4
    s.add_query("And now?", at=2.2)                # inside the stream, before frame 5
    s.add_query("Narrate.", at=5.0, answer=False)  # an instruction, read after frame 10
    turn = {"k": None}  # in a turn: the index of the reply token the next forward is steered to
    ends, seen = [], []  # each forward's last position and its logits (before steering)

    def on_step(step):
        ends.append(len(s.history) - 1)  # history already holds the step's ids
        fresh = turn["k"] is None or turn["k"] == len(reply) - 1
        turn["k"] = None if step.features is not None else 0 if fresh else turn["k"] + 1

    def steer(module, inputs, output):
        seen.append(output[0, -1].clone())
        if turn["k"] is None:
            return output
        output = output.clone()
        output[..., reply[turn["k"]]] = 1e4
        return output

    s.on_step = on_step
    feats = features(engine, 24)
    handle = model.lm.get_output_embeddings().register_forward_hook(steer)
    try:
        events = []
        for i in range(24):
            s.force(i in (3, 8, 20), reply_tokens=len(reply))
            events += s.push_frame(feats[i], i * 0.5)
    finally:
        handle.remove()
    assert "".join(type(e).__name__[0] for e in events) == "SSSRASASSSRS" + "S" * 9 + "RSSS"
    assert all(e.token_ids == reply for e in events if isinstance(e, (Reply, Answer)))

    said = {"role": "assistant", "content": "A blue circle moves left."}
    messages = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 4}, said,
                {"role": "user", "content": "Who is there?"}, said, {"role": "stream", "num_frames": 1},
                {"role": "user", "content": "And now?"}, said, {"role": "stream", "num_frames": 4}, said,
                {"role": "stream", "num_frames": 2}, {"role": "user", "content": "Narrate."},
                {"role": "stream", "num_frames": 10}, said, {"role": "stream", "num_frames": 3}]
    ids = tokenize_conversation(engine.template.render(messages), tok, engine.markers, engine.template).input_ids
    assert s.history == ids[:-1] and tok.decode(ids[-1:]) == "]"  # the stream is still open
    assert s.context_length == len(s.history) > 300  # the growing cache reallocated on the way

    with torch.inference_mode():
        logits = model(torch.tensor([s.history]), frame_features=feats).logits[0]
    assert len(seen) == len(ends) == 24 + 5 * len(reply)  # a forward per frame, R per turn (the last token waits)
    torch.testing.assert_close(torch.stack(seen), logits[ends], atol=1e-4, rtol=1e-4)
    K = model.frame_num_tokens
    frame_ends = [i for i, x in enumerate(s.history) if x == engine.markers.v][K - 1::K]
    decisions = [e for e in events if isinstance(e, (Silence, Reply))]
    assert len(decisions) == 23  # frame 10 read the instruction instead of deciding
    for e in decisions:
        p = torch.softmax(logits[frame_ends[e.frame]].float(), dim=-1)[engine.markers.silence].item()
        assert p == pytest.approx(e.p_silence, rel=1e-4, abs=1e-7)


# ---- context well-formedness ----------------------------------------------------------------------------------------
F = "<v>" * 10


def test_queries_and_reply_cap_keep_context_well_formed(engine):
    tok = engine.tokenizer
    s = engine.session(SYS, threshold=0.0, max_reply_tokens=2, record=True)  # θ = 0: never speaks by itself
    s.add_query("Who is there?", at=0.0)   # before the first frame: asked at the frame's time -> after it
    s.add_query("Hello?", at=-1.0)         # strictly before the first frame
    s.add_query("And now?", at=1.2)        # between the frames at 1.0 and 1.5
    events = run(s, features(engine, 4))
    events += list(s.finish())
    answers = [e for e in events if isinstance(e, Answer)]
    assert [a.query for a in answers] == ["Hello?", "Who is there?", "And now?"]
    assert [a.t for a in answers] == [-1.0, 0.0, 1.2]
    assert all(a.truncated and len(a.token_ids) == 2 for a in answers)  # the cap was hit every time
    a1, a2, a3 = (tok.decode(a.token_ids) for a in answers)
    expected = (f"<|bos|>{SYS}\n\nUser: Hello?\nAssistant:{a1}<|eos|>"
                f"\n[{F}]\nUser: Who is there?\nAssistant:{a2}<|eos|>"
                f"\n[{F},{F}]\nUser: And now?\nAssistant:{a3}<|eos|>"
                f"\n[{F}")
    assert tok.decode(s.history) == expected
    # frame 0.0 carries the answer to the query asked at 0.0 instead of a decision
    assert [type(e).__name__ for e in events] == ["Answer", "Answer", "Silence", "Silence", "Answer", "Silence"]


def test_reply_closed_by_eos_and_by_cap(engine):
    tok = engine.tokenizer
    eos = engine.markers.eos
    head = engine.model.lm.lm_head
    calls = {"n": 0}

    def force_eos_on_second_token(module, inputs, output):
        calls["n"] += 1
        if calls["n"] % 3 == 0:  # per frame: frame forward, "]\nAssistant:" -> 1st token, 1st token -> eos
            output = output.clone()
            output[..., eos] = 1e4
        return output

    s = engine.session(SYS, threshold=1.0, max_reply_tokens=5, record=True)  # θ = 1: speaks on every frame
    handle = head.register_forward_hook(force_eos_on_second_token)
    try:
        events = run(s, features(engine, 2))
    finally:
        handle.remove()
    assert all(isinstance(e, Reply) for e in events)
    assert [len(e.token_ids) for e in events] == [1, 1] and not any(e.truncated for e in events)
    r1, r2 = (tok.decode(e.token_ids) for e in events)
    assert tok.decode(s.history) == (f"<|bos|>{SYS}\n\n[{F}]\nAssistant:{r1}<|eos|>\n[{F}]\nAssistant:{r2}")
    # the cap: the last token and eos are fed with the next frame
    s2 = engine.session(SYS, threshold=1.0, max_reply_tokens=3, record=True)
    events = run(s2, features(engine, 2))
    assert all(e.truncated and len(e.token_ids) == 3 for e in events)
    r1 = tok.decode(events[0].token_ids)
    assert tok.decode(s2.history).startswith(f"<|bos|>{SYS}\n\n[{F}]\nAssistant:{r1}<|eos|>\n[{F}]\nAssistant:")


def test_sessions_are_independent(engine):
    feats_a, feats_b = features(engine, 6, seed=1), features(engine, 6, seed=2)
    alone = [e.p_silence for e in run(engine.session(SYS, threshold=0.0), feats_a)]
    a, b = engine.session(SYS, threshold=0.0), engine.session("Other.", threshold=0.0)
    mixed = []
    for i in range(6):
        mixed += [e.p_silence for e in a.push_frame(feats_a[i], i * 0.5)]
        list(b.push_frame(feats_b[i], i * 0.5))
    assert mixed == pytest.approx(alone, rel=1e-5)


def test_pixels_and_features_agree(engine):
    frames = [np.random.default_rng(i).integers(0, 256, (24, 40, 3), dtype=np.uint8) for i in range(3)]
    by_pixels = [e.p_silence for i, f in enumerate(frames)
                 for e in engine.session(SYS, threshold=0.0).push_frame(f, 0.0)]
    feats = engine.encode(frames)
    by_feats = [e.p_silence for i in range(3) for e in engine.session(SYS, threshold=0.0).push_frame(feats[i], 0.0)]
    assert by_pixels == pytest.approx(by_feats, rel=1e-5)


def test_default_session_contract(engine):
    engine.reset(SYS, threshold=0.0)
    engine.add_query("What is it?", at=0.2)
    events = list(engine.push_frame(features(engine, 1)[0], 0.0)) + list(engine.push_frame(features(engine, 1)[0], 0.5))
    assert [type(e) for e in events] == [Silence, Answer, Silence]
    assert [e.to_dict()["type"] for e in events] == ["silence", "answer", "silence"]
    assert events[1].to_dict()["t"] == 0.2 and "text" in events[1].to_dict()


def test_bad_inputs_are_explained(engine):
    s = engine.session(SYS)
    list(s.push_frame(features(engine, 1)[0], 1.0))
    with pytest.raises(ValueError, match="frame time 0.5 is earlier than the previous frame's 1.0"):
        list(s.push_frame(features(engine, 1)[0], 0.5))
    with pytest.raises(TypeError, match="uint8"):
        list(s.push_frame(np.zeros((4, 4, 3), dtype=np.float64), 2.0))
    with pytest.raises(ValueError, match=r"frame features must have shape \(10, D\)"):
        list(s.push_frame(torch.randn(3, 32), 2.0))
    with pytest.raises(ValueError, match="non-empty string"):
        s.add_query("  ")
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, 1\], got '2.0'"):
        engine.session(SYS, threshold=2.0)


def test_special_tokens_in_queries_are_plain_text(engine):
    s = engine.session(SYS, threshold=0.0, max_reply_tokens=1, record=True)
    s.add_query("is <v> or <|eos|> here?", at=0.0)
    events = run(s, features(engine, 1))
    assert isinstance(events[0], Answer)
    assert s.history.count(engine.markers.v) == engine.model.frame_num_tokens  # no injected <v>


def test_instruction_without_answer_matches_training_text(engine):
    """A user instruction the model does not answer: the context reads like the training records."""
    from livecue.data.template import Template

    tok = engine.tokenizer
    s = engine.session(SYS, threshold=0.0, record=True)
    s.add_query("Narrate what happens.", at=0.0, answer=False)
    events = run(s, features(engine, 3))
    assert [type(e).__name__ for e in events] == ["Silence", "Silence"]  # frame 0 carries the instruction
    tpl = Template.from_config(engine.model.cfg, tok)
    expected = tpl.render([{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 1},
                           {"role": "user", "content": "Narrate what happens."},
                           {"role": "stream", "num_frames": 2}]).text
    assert tok.decode(s.history) == expected[:-1]  # the open stream has no closing "]" yet


def test_on_token_streams_every_reply_token(engine):
    seen = []
    s = engine.session(SYS, threshold=1.0, max_reply_tokens=3,
                       on_token=lambda kind, t, ids, query: seen.append((kind, t, list(ids), query)))
    s.add_query("Now?", at=0.2)
    events = run(s, features(engine, 2))
    reply, answer, reply2 = events
    assert [x for x in seen if x[0] == "reply"][:3] == [("reply", 0.0, reply.token_ids[:k], None) for k in (1, 2, 3)]
    assert [x[2] for x in seen if x[0] == "answer"] == [answer.token_ids[:k] for k in (1, 2, 3)]
    assert all(x[3] == "Now?" for x in seen if x[0] == "answer")


# ---- options ---------------------------------------------------------------------------------------------------------
def test_options_resolve_in_order_and_are_checked_once(engine):
    """Keywords, then the session's options, then the engine's, then the model's stream.*; session.options holds
    every resolved value; the one check is StreamOptions' (also when θ changes between frames)."""
    cfg = engine.model.cfg.stream
    assert engine.session().options == StreamOptions(
        threshold=cfg.threshold, fps=cfg.fps, system_prompt=cfg.system_prompt, max_reply_tokens=cfg.max_reply_tokens,
        temperature=0.0, top_p=1.0, repetition_penalty=1.0, memory="unbounded")
    defaults = StreamOptions(threshold=0.3, temperature=0.5, memory="sink:500")
    shared = StreamEngine(engine.model, engine.tokenizer, defaults)
    s = shared.session(options=StreamOptions(threshold=0.4, system_prompt="Mine.", top_p=0.9), max_reply_tokens=7)
    assert (s.threshold, s.system_prompt, s.max_reply_tokens, s.options.fps) == (0.4, "Mine.", 7, cfg.fps)
    assert s.sampling == SamplingConfig(temperature=0.5, top_p=0.9)
    assert s.memory == SinkWindow(500, 62) and s.options.memory == "sink:500:62"
    assert shared.session().threshold == 0.3
    assert shared.session(threshold=0.9, options=StreamOptions(threshold=0.4)).threshold == 0.9
    assert shared.session(sampling=SamplingConfig()).sampling == SamplingConfig()  # keywords replace all sampling
    assert shared.session(memory=SinkWindow(64, 8)).options.memory == "sink:64:8"
    s.threshold = 0.6
    assert s.options.threshold == 0.6
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, 1\], got 'nan'"):
        s.threshold = float("nan")
    with pytest.raises(ValueError, match=r"max_reply_tokens must be an integer in \[1, 4096\]"):
        engine.session(max_reply_tokens=0)
    with pytest.raises(ValueError, match="system_prompt must be a non-empty system prompt"):
        engine.session("  ")
    # the old keywords of the engine still work
    assert StreamEngine(engine.model, engine.tokenizer, sampling=SamplingConfig(top_p=0.5)).session().sampling.top_p \
        == 0.5


def test_forced_decisions_and_reply_length(engine):
    eos = engine.markers.eos
    feats = features(engine, 4, seed=4)
    alone = [e.p_silence for e in run(engine.session(SYS, threshold=0.0), feats)]
    s = engine.session(SYS, threshold=0.0, max_reply_tokens=2)  # θ = 0 alone never speaks
    s.force(True, reply_tokens=5)
    head = engine.model.lm.get_output_embeddings()

    def eos_first(module, inputs, output):  # eos is every step's argmax: only the forcing keeps replies going
        output = output.clone()
        output[..., eos] = 1e4
        return output

    handle = head.register_forward_hook(eos_first)
    try:
        forced = run(s, feats[:2])
    finally:
        handle.remove()
    assert all(isinstance(e, Reply) and len(e.token_ids) == 5 and e.truncated and eos not in e.token_ids
               for e in forced)
    s2 = engine.session(SYS, threshold=1.0)
    s2.force(False)
    silent = run(s2, feats)
    assert all(isinstance(e, Silence) for e in silent)
    assert [e.p_silence for e in silent] == pytest.approx(alone, rel=1e-5)  # p(silence) is still reported
    s2.force(None)  # θ = 1 decides again: speaks
    assert isinstance(s2.push_frame(feats[0], 9.0)[0], Reply)
    with pytest.raises(ValueError, match="max_reply_tokens must be an integer"):
        s2.force(True, reply_tokens=0)

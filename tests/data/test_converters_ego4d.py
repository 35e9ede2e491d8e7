"""Ego4D narration / refined converters, augmentation and robustness items: fixtures in the official formats,
exact expected records."""

from __future__ import annotations

import argparse
import json
import random

import numpy as np
import pytest

from livecue.cli import main as cli
from livecue.data.converters import augment as aug
from livecue.data.converters import ego4d
from livecue.data.records import num_frames, read_records, validate_record

INSTR = ego4d.INSTRUCTION


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return str(path)


def _n(time, text, ann):  # all_narrations_redacted.json item
    return {"time": time, "text": text, "_annotation_uid": ann, "_clip_time_start": time}


@pytest.fixture
def files(tmp_path):
    """all_narrations_redacted.json (wrapped), ego4d.json and benchmark split files."""
    v1 = [_n(2.6, "#c c picks up a cup,\n", "a1"), _n(1.2, "#C C looks around .", "a1"), _n(0.0, "#C C stands", "a2"),
          _n(1.4, "#C C looks around", "a1"), _n(2.9, "#C C drinks #unsure", "a1"),
          _n(3.1, "#O a man X  talks   to C.", "a1"), _n(0.2, "#C C walks", "a2"), _n(4.0, "#C C", "a1"),
          _n(5.0, "@c nods", "a1"), _n(5.5, "#unsure pICKS a pen ,.", "a1"), _n(20.0, "#C C leaves the room", "a1"),
          _n(21.0, "#C C comes back", "a1")]
    videos = {"v1": {"narrations": v1, "summaries": []}}
    for uid in ("v2", "v3", "v4"):
        videos[uid] = {"narrations": [_n(1.0, "#C C opens the door", "b"), _n(2.0, "#C C closes the door", "b")]}
    return {
        "narrations": _write(tmp_path / "all_narrations_redacted.json", {"videos": videos}),
        "durations": _write(tmp_path / "ego4d.json", {"videos": [{"video_uid": "v1", "duration_sec": 10.2},
                                                                 {"video_uid": "v2", "duration_sec": 60.0}]}),
        "val": [_write(tmp_path / "nlq_val.json", {"version": "v2", "videos": [{"video_uid": "v2", "clips": []}]}),
                _write(tmp_path / "fho_lta_val.json", {"clips": [{"video_uid": "v3", "clip_uid": "c"}]})],
        "test": [_write(tmp_path / "nlq_test_unannotated.json", {"videos": [{"video_uid": "v4"}]})],
    }


def _args(files, **kw):
    base = dict(narrations=files["narrations"], durations=files["durations"], val_split=files["val"],
                test_split=files["test"], split="train", fps=2.0, max_num_frames=1200, video_dir="",
                rewriter=None, cache=None, batch_size=2, max_new_tokens=64, device=None, seed=0)
    return argparse.Namespace(**dict(base, **kw))


def S(t, n, learn=True):
    return {"role": "stream", "time": t, "num_frames": n, "learn": learn}


def A(t, text, learn=True):
    return {"role": "assistant", "time": t, "content": text, "learn": learn}


def U(t, text):
    return {"role": "user", "time": t, "content": text}


PASS1 = {"id": "ego4d/v1/pass1", "video": "v1.mp4", "fps": 2.0, "start": 0.0, "duration": 0.5,
         "messages": [S(0.0, 1, False), U(0.0, INSTR), A(0.0, "C stands."), S(0.5, 1), A(0.5, "C walks.")],
         "meta": {"video_uid": "v1", "pass": 1, "annotation_uid": "a2", "video_duration": 10.2}}
# a1: frames 3 (1.2 s), dup skipped, 6 (2.6 s) overwritten by 2.9 s, 7, 4.0/5.0 s dropped (1 word), 11, 40 -> clamp 20
PASS2 = {"id": "ego4d/v1/pass2", "video": "v1.mp4", "fps": 2.0, "start": 1.5, "duration": 8.5,
         "messages": [S(0.0, 1, False), U(0.0, INSTR), A(0.0, "C looks around."), S(0.5, 3), A(1.5, "C drinks."),
                      S(2.0, 1), A(2.0, "A man X talks to C."), S(2.5, 4), A(4.0, "Picks a pen."),
                      S(4.5, 9), A(8.5, "C leaves the room.")],
         "meta": {"video_uid": "v1", "pass": 2, "annotation_uid": "a1", "video_duration": 10.2}}


@pytest.mark.parametrize("src,expected", [
    ("#C C looks around .", "C looks around."),
    ("#c c picks up a cup,\n", "C picks up a cup."),
    ("#O a man X  talks   to C.", "A man X talks to C."),
    ("#unsure pICKS a pen ,.", "Picks a pen."),
    ("@c C  drinks #Unsure", "C drinks."),
    ("  ,.C opens the door..,\n", "C opens the door."),
    ("#C C", None), ("@c nods.", None), ("#Unsure", None), ("", None),
])
def test_clean_text(src, expected):
    assert ego4d.clean_text(src) == expected


def test_narration_records_exact(files):
    records = list(ego4d.convert(_args(files), "ego4d-narration"))
    assert records == [PASS1, PASS2]
    for r in records:
        validate_record(r)


def test_narration_json_format_without_wrapper(tmp_path):
    data = {"vx": {"narration_pass_2": {"narrations": [
                       {"timestamp_sec": 0.7, "timestamp_frame": 21, "narration_text": "#C C cuts an onion",
                        "annotation_uid": "p2"}]},
                   "narration_pass_1": {"narrations": [
                       {"timestamp_sec": 3.0, "narration_text": "#C C washes a pan", "annotation_uid": "p1"},
                       {"timestamp_sec": 0.30000000000000004, "narration_text": "#C C opens the tap",
                        "annotation_uid": "p1"}],
                       "summaries": [{"summary_text": "#Summary C cooks"}]}}}
    args = argparse.Namespace(narrations=_write(tmp_path / "narration.json", data), durations=None, val_split=[],
                              test_split=[], split="train", fps=10.0, max_num_frames=1200, video_dir="videos")
    records = list(ego4d.convert(args, "ego4d-narration"))
    # 0.30000000000000004 s at 10 fps is frame 3 (float noise ignored), 3.0 s is frame 30
    assert records == [
        {"id": "ego4d/vx/pass1", "video": "videos/vx.mp4", "fps": 10.0, "start": 0.3, "duration": 2.7,
         "messages": [S(0.0, 1, False), U(0.0, INSTR), A(0.0, "C opens the tap."), S(0.1, 27),
                      A(2.7, "C washes a pan.")],
         "meta": {"video_uid": "vx", "pass": 1, "annotation_uid": "p1", "video_duration": None}},
        {"id": "ego4d/vx/pass2", "video": "videos/vx.mp4", "fps": 10.0, "start": 0.7, "duration": 0.0,
         "messages": [S(0.0, 1, False), U(0.0, INSTR), A(0.0, "C cuts an onion.")],
         "meta": {"video_uid": "vx", "pass": 2, "annotation_uid": "p2", "video_duration": None}}]
    for r in records:
        validate_record(r)


def test_truncation(files):
    records = list(ego4d.convert(_args(files, max_num_frames=5), "ego4d-narration"))
    assert records[0] == PASS1
    # streams 1 + 3 + 1 = 5 frames fit; the next stream (4 frames) would make 9 > 5: cut before it
    assert records[1] == dict(PASS2, duration=2.0, messages=PASS2["messages"][:7])
    assert num_frames(records[1]) == 5


def test_splits(files):
    ids = {s: [r["id"] for r in ego4d.convert(_args(files, split=s), "ego4d-narration")]
           for s in ("train", "val", "test")}
    assert ids == {"train": ["ego4d/v1/pass1", "ego4d/v1/pass2"], "val": ["ego4d/v2/pass1", "ego4d/v3/pass1"],
                   "test": ["ego4d/v4/pass1"]}
    val = list(ego4d.convert(_args(files, split="val"), "ego4d-narration"))
    assert val[0]["start"] == 1.0 and val[0]["messages"][3:] == [S(0.5, 2), A(1.0, "C closes the door.")]
    with pytest.raises(ValueError, match="--val-split"):
        list(ego4d.convert(_args(files, split="val", val_split=[]), "ego4d-narration"))


def test_refined_with_fake_rewriter(files, tmp_path):
    calls = []

    def fake(texts):
        calls.append(list(texts))
        return [None if "walks" in t else "" if "drinks" in t else t.replace("C ", "You ", 1) if t[:2] == "C " else t
                for t in texts]

    cache = tmp_path / "cache.json"
    records = list(ego4d.convert(_args(files, rewriter=fake, cache=str(cache)), "ego4d-refined"))
    assert sum(map(len, calls)) == 9  # every distinct cleaned text of the train videos, in batches of 2
    assert max(map(len, calls)) == 2
    instr = [random.Random(f"0/ego4d-refined/v1/pass{k}").choice(ego4d.REFINED_INSTRUCTIONS) for k in (1, 2)]
    assert records[0] == {
        "id": "ego4d-refined/v1/pass1", "video": "v1.mp4", "fps": 2.0, "start": 0.0, "duration": 0.5,
        "messages": [S(0.0, 1, False), U(0.0, instr[0]), A(0.0, "You stands."), S(0.5, 1),
                     A(0.5, "Not sure what you are doing.")],
        "meta": PASS1["meta"]}
    assert [m["content"] for m in records[1]["messages"] if m["role"] == "assistant"] == [
        "You looks around.", "Not sure what you are doing.", "A man X talks to C.", "Picks a pen.",
        "You leaves the room."]
    assert records[1]["messages"][1] == U(0.0, instr[1])
    assert json.loads(cache.read_text())["C walks."] is None

    def broken(texts):
        raise AssertionError("the cache must answer")

    again = list(ego4d.convert(_args(files, rewriter=broken, cache=str(cache)), "ego4d-refined"))
    assert again == records
    assert len(ego4d.REFINED_INSTRUCTIONS) == 10 == len(set(ego4d.REFINED_INSTRUCTIONS))


def test_rewrite_prompt_and_parse():
    prompt = ego4d.rewrite_prompt("C drinks.")
    assert "[C looks around.] -> [You look around.]" in prompt and prompt.count("] -> [") >= 5
    assert "[C drinks.]" in prompt
    assert ego4d.parse_rewrite("You drink.] extra") == "You drink."
    assert ego4d.parse_rewrite("You  drink.\n]") == "You drink."
    assert ego4d.parse_rewrite("You drink.") is None
    assert ego4d.parse_rewrite(" ]") is None


def test_cli_in_process(files, tmp_path):
    out = tmp_path / "out" / "ego4d.jsonl"
    rc = cli(["convert-data", "ego4d-narration", "--narrations", files["narrations"], "--durations",
              files["durations"], "--val-split", files["val"][0], "--val-split", files["val"][1],
              "--test-split", files["test"][0], "--max-num-frames", "1200", "--out", str(out)])
    assert rc == 0
    assert read_records(out) == [PASS1, PASS2]


def test_skipped_and_clamped_narrations_are_counted(tmp_path, caplog):
    """Narrations without text, without a numeric time, with one word, or at a negative time: one warning with
    the counts, naming the file (the negative one is clamped to frame 0, as upstream)."""
    items = [_n(-1.5, "#C C opens the door", "a"), _n(2.0, "#C C closes the door", "a"), _n(3.0, "", "a"),
             {"text": "#C C waves", "_annotation_uid": "a"}, _n(float("nan"), "#C C jumps", "a"),
             _n(4.0, "#C C", "a"), {"time": 5.0, "_annotation_uid": "a"}]
    path = tmp_path / "narr.json"
    path.write_text(json.dumps({"videos": {"v": {"narrations": items}}}).replace("NaN", '"NaN"'))
    with caplog.at_level("WARNING", logger="livecue.data"):
        videos = ego4d.load_narrations(path)
    assert videos["v"][0][2] == [(-1.5, "C opens the door."), (2.0, "C closes the door.")]
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and str(path) in warning[0]
    for part in ("2 narrations without text (skipped)", "2 narrations without a numeric time (skipped)",
                 "1 narrations with a one-word text (skipped, as upstream)",
                 "1 narrations with a negative time (clamped to frame 0)"):
        assert part in warning[0], warning[0]
    record = ego4d.narration_record("v", 1, "a", videos["v"][0][2], fps=2.0, duration=None, instruction="N.",
                                    max_num_frames=100)
    assert record["start"] == 0.0 and record["messages"][3] == S(0.5, 4)  # -1.5 s clamped to frame 0


def test_cli_reports_counts_and_why_nothing_was_written(tmp_path, capsys):
    unusable = _write(tmp_path / "narr.json", {"videos": {"v": {"narrations": [
        _n(1.0, "", "a"), _n(2.0, "#C C", "a"), {"text": "#C C opens it", "_annotation_uid": "a"}]}}})
    out = tmp_path / "o.jsonl"
    assert cli(["convert-data", "ego4d-narration", "--narrations", unusable, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "warning: " + unusable + ": 1 narrations without text (skipped)" in err
    errors = [line for line in err.splitlines() if line.startswith("livecue convert-data: error:")]
    assert errors == [f"livecue convert-data: error: no records: 1 videos in {unusable}, 0 with usable narrations "
                      "(a numeric time and a text of at least 2 words), 1 in split train; none has both"]
    assert not out.exists()


@pytest.mark.parametrize("text,where", [
    ('{"videos": {"v": {"narrations": [\n  {"time": 1.0, "text": "a b",}]}}}', ":2:31: "),
    ('{"videos": {"v": {"narrations": [{"time": NaN, "text": "a b"}]}}}', ": "),
    ("", ":1:1: "),
])
def test_malformed_annotation_json_names_file_and_position(tmp_path, text, where):
    path = tmp_path / "all_narrations_redacted.json"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        ego4d.load_narrations(path)
    message = str(e.value)
    assert message.startswith(f"{path}{where}not a valid JSON file (annotation file)") and "\n" not in message


def test_durations_must_be_numbers(tmp_path):
    bad = _write(tmp_path / "ego4d.json", {"videos": [{"video_uid": "v", "duration_sec": "long"}]})
    with pytest.raises(ValueError, match=r"ego4d.json: videos\[0\]: the duration must be a finite number"):
        ego4d.load_durations(bad)


# ---- augmentation --------------------------------------------------------------------------------------------------
REC = {"id": "r", "video": "r.mp4", "fps": 2.0, "start": 0.0, "duration": 2.5,
       "messages": [S(0.0, 1, False), U(0.0, "Narrate."), A(0.0, "A."), S(0.5, 3), A(1.5, "B."), S(2.0, 2),
                    A(2.5, "C.")]}


class Scripted:
    """An rng whose choices are given in advance."""

    def __init__(self, picks, rand):
        self.picks, self.rand = list(picks), rand

    def choice(self, seq):
        value = self.picks.pop(0)
        assert value in seq
        return value

    def random(self):
        return self.rand


HEAD = REC["messages"][:3]
SORRY = "(Sorry, the last response is wrong) B."


@pytest.mark.parametrize("fake,rand,case,tail", [
    ("A.", 0.1, "correct", [S(0.5, 3), A(1.5, "A.", False), S(2.0, 1), A(2.0, SORRY), S(2.5, 1), A(2.5, "C.")]),
    (None, 0.1, "delay", [S(0.5, 4, 2), A(2.0, "B."), S(2.5, 1), A(2.5, "C.")]),
    ("", 0.9, "wrong", [S(0.5, 3), A(1.5, "", False), S(2.0, 2, False), A(2.5, "C.")]),
    (None, 0.9, "drop", [S(0.5, 5, 2), A(2.5, "C.")]),
])
def test_augment_cases_exact(fake, rand, case, tail):
    out = aug.augment_record(REC, Scripted([4, fake], rand))
    assert out == {**REC, "id": "r/aug", "messages": HEAD + tail,
                   "meta": {"augment": {"case": case, "index": 4, "fake": fake}}}
    validate_record(out)
    assert num_frames(out) == num_frames(REC)


def test_augment_invariants_seeded():
    records = [REC, dict(REC, id="single", messages=REC["messages"][:3] + [S(0.5, 2), A(1.0, "Z.")])]
    cases = set()
    for seed in range(60):
        out = list(aug.augment_records(records, seed=seed, p=1.0))
        assert out == list(aug.augment_records(records, seed=seed, p=1.0))  # deterministic
        for r in out:
            validate_record(r)
            if "augment" not in r.get("meta", {}):
                continue
            a = r["meta"]["augment"]
            cases.add(a["case"])
            src = records[0] if r["id"] == "r/aug" else records[1]
            real = src["messages"][a["index"]]["content"]
            assert num_frames(r) == num_frames(src)
            msgs = r["messages"]
            if a["fake"] is not None:  # the wrong reply is present and never learned
                assert msgs[a["index"]] == A(src["messages"][a["index"]]["time"], a["fake"], False)
                assert a["fake"] != real
            if a["case"] == "correct":
                assert msgs[a["index"] + 1]["num_frames"] == 1
                assert msgs[a["index"] + 2]["content"] == f"(Sorry, the last response is wrong) {real}"
            elif a["case"] == "delay":
                assert msgs[a["index"]]["content"] == real
                assert msgs[a["index"]]["time"] == src["messages"][a["index"]]["time"] + 0.5
            learned = {m["content"] for m in msgs if m["role"] == "assistant" and m.get("learn")}
            before = {m["content"] for m in src["messages"] if m["role"] == "assistant" and m.get("learn")}
            assert learned <= before | {f"(Sorry, the last response is wrong) {real}"}  # nothing wrong is learned
    assert cases == {"correct", "delay", "wrong", "drop"}
    assert list(aug.augment_records(records, seed=0, p=0.0)) == records
    both = list(aug.augment_records(records, seed=1, p=1.0, keep_original=True))
    assert both[0] == REC and len(both) >= 3


def test_augment_borrows_fake_from_dataset():
    single = dict(REC, messages=REC["messages"][:3] + [S(0.5, 2), A(1.0, "A.")])  # both replies "A."
    out = aug.augment_record(single, Scripted([2, "Q.", "Q."], 0.9), pool=["A.", "Q."])
    assert out["messages"][2] == A(0.0, "Q.", False) and out["meta"]["augment"]["case"] == "wrong"


def test_augment_and_robustness_cli(files, tmp_path):
    src = tmp_path / "narr.jsonl"
    assert cli(["convert-data", "ego4d-narration", "--narrations", files["narrations"], "--out", str(src)]) == 0
    out = tmp_path / "aug.jsonl"
    assert cli(["convert-data", "augment", "--records", str(src), "--seed", "3", "--out", str(out)]) == 0
    augmented, original = read_records(out), read_records(src)
    assert len(augmented) == len(original)
    assert all(a["id"] in (o["id"], o["id"] + "/aug") for a, o in zip(augmented, original))
    assert any(a["id"].endswith("/aug") for a in augmented)
    rob = tmp_path / "rob" / "robustness.jsonl"
    assert cli(["convert-data", "robustness", "--n", "2", "--resolution", "8", "--seed", "1", "--out", str(rob)]) == 0
    records = read_records(rob)
    assert [r["id"] for r in records] == ["robustness/greeting_0", "robustness/greeting_1", "robustness/noise_0",
                                          "robustness/noise_1", "robustness/black_0", "robustness/black_1"]
    greet, noise, black = records[0], records[2], records[4]
    assert greet["video"] is None and num_frames(greet) == 0
    assert greet["messages"] == [U(0.0, "Hi!"), A(0.0, "Hi! How can I help you?")]
    assert noise["messages"][0] == S(0.0, 10, False) and noise["messages"][1]["time"] == 4.5
    assert noise["messages"][2] == A(4.5, aug.NOISE_REPLY)
    assert black["messages"][0] == S(0.0, 1, False) and black["messages"][2] == A(0.0, aug.BLACK_REPLY)
    frames = np.load(rob.parent / noise["video"])
    assert frames.shape == (10, 8, 8, 3) and frames.dtype == np.uint8 and frames.std() > 30
    dark = np.load(rob.parent / black["video"])
    assert dark.shape == (1, 8, 8, 3) and not dark.any()
    again = tmp_path / "rob2" / "robustness.jsonl"
    assert cli(["convert-data", "robustness", "--n", "2", "--resolution", "8", "--seed", "1", "--out", str(again)]) == 0
    assert read_records(again) == records
    assert np.array_equal(np.load(again.parent / noise["video"]), frames)


@pytest.mark.realism
@pytest.mark.slow
def test_hf_rewriter_with_smollm2():
    from livecue import pretrained

    if not (pretrained.cache_dir() / "models" / pretrained.SMOLLM2 / "config.json").exists():
        if not pretrained.available(pretrained.SMOLLM2):
            pytest.skip(f"SmolLM2-135M-Instruct is not installed: {pretrained.INSTALL_HINT}")
        pytest.importorskip("gguf", reason="converting SmolLM2's GGUF file needs the gguf package ([models] extra)")
    rewriter = ego4d.HFRewriter(pretrained.resolve(pretrained.SMOLLM2), device="cpu", max_new_tokens=8)
    assert rewriter.prompt("C looks around.").endswith("[C looks around.] -> [")
    (out,) = rewriter(["C looks around."])
    assert out is None or (isinstance(out, str) and out and "]" not in out)

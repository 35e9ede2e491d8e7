"""The built-in streaming world: determinism, disjoint splits, valid records, event timing on real pixels, answers,
and the ``livecue world`` command."""

import json

import numpy as np
import pytest

from livecue import cli
from livecue.commands import world as world_cmd
from livecue.data.records import num_frames, read_records, validate_record
from livecue.data.world import (
    EVENT_TYPES,
    INSTRUCTION,
    WorldConfig,
    WorldObject,
    ask,
    generate_stream,
    generate_world,
    simulate_stream,
    stream_seed,
)
from livecue.data.world_render import png_bytes, save_png
from livecue.data.world_scene import narrate

SMALL = dict(resolution=48, duration=20.0)


def _narrated_frames(record):
    """Frame index of every narration (an assistant turn right after a stream) and of every question."""
    frames, narrations, questions = 0, {}, {}
    prev = None
    for msg in record["messages"]:
        if msg["role"] == "stream":
            frames += msg["num_frames"]
        elif msg["role"] == "assistant" and prev == "stream":
            narrations[frames - 1] = msg["content"]
        elif msg["role"] == "user" and frames > 1:
            questions[frames - 1] = msg["content"]
        prev = msg["role"]
    return narrations, questions


def test_deterministic_by_seed():
    cfg = WorldConfig(**SMALL, noise=6.0, texture=0.4, drift=1.0, jitter=1)
    f1, r1 = generate_stream(cfg, 11)
    f2, r2 = generate_stream(cfg, 11)
    assert np.array_equal(f1, f2) and json.dumps(r1) == json.dumps(r2)
    f3, r3 = generate_stream(cfg, 12)
    assert not np.array_equal(f1, f3) and r1["messages"] != r3["messages"]


def test_rendering_knobs_do_not_change_the_story():
    plain, _ = generate_stream(WorldConfig(**SMALL), 3)
    noisy_frames, noisy = generate_stream(WorldConfig(**SMALL, noise=10.0, texture=0.5, drift=2.0, jitter=2), 3)
    _, plain_rec = generate_stream(WorldConfig(**SMALL), 3)
    assert noisy["messages"] == plain_rec["messages"] and noisy["meta"]["events"] == plain_rec["meta"]["events"]
    assert not np.array_equal(plain, noisy_frames)


def test_records_validate_and_cover_every_event_type():
    cfg = WorldConfig(resolution=32, duration=30.0)
    seen = set()
    for seed in range(40):
        frames, record = generate_stream(cfg, seed)
        validate_record(record)
        assert frames.shape == (60, 32, 32, 3) and frames.dtype == np.uint8 and num_frames(record) == 60
        msgs = record["messages"]
        assert msgs[0] == {"role": "stream", "time": 0.0, "num_frames": 1, "learn": False}
        assert msgs[1] == {"role": "user", "time": 0.0, "content": INSTRUCTION}
        assert record["meta"]["source"] == "world" and record["meta"]["seed"] == seed
        seen.update(e["type"] for e in record["meta"]["events"])
        names_each_frame = [[o.name for o in s] for s in simulate_stream(cfg, seed).states]
        assert all(len(set(n)) == len(n) for n in names_each_frame), "colour + shape must be unique"
    assert seen == set(EVENT_TYPES)


def test_narrations_sit_on_the_frames_that_change():
    cfg = WorldConfig(**SMALL, event_rate=0.5)
    cell = cfg.resolution / cfg.grid
    for seed in range(8):
        frames, record = generate_stream(cfg, seed)
        story = simulate_stream(cfg, seed)
        events = record["meta"]["events"]
        narrations, questions = _narrated_frames(record)
        assert narrations == {e["frame"]: e["text"] for e in events}
        assert all(abs(e["time"] - e["frame"] / cfg.fps) < 1e-9 for e in events)
        changed = {k for k in range(1, len(frames)) if not np.array_equal(frames[k], frames[k - 1])}
        spans = {k for e in events for k in range(e["start_frame"], e["end_frame"] + 1)}
        assert changed == spans, "silent frames must not change and every event frame must"
        assert not set(questions) & spans
        for e in events:
            k = e["frame"]
            diff = np.any(frames[k] != frames[k - 1], axis=-1)
            assert diff.any(), f"event {e['text']!r} is not visible at frame {k}"
            names = set(e["objects"])
            if e["type"] == "change_colour":
                names.add(f"{e['colour']} {e['objects'][0].split()[1]}")
            involved = [o for s in (story.states[k - 1], story.states[k]) for o in s if o.name in names]
            assert involved
            mask = np.zeros_like(diff)
            for o in involved:
                x0, x1 = int((o.x - o.side / 2) * cell) - 1, int((o.x + o.side / 2) * cell) + 2
                y0, y1 = int((o.y - o.side / 2) * cell) - 1, int((o.y + o.side / 2) * cell) + 2
                mask[max(0, y0):y1, max(0, x0):x1] = True
            assert not (diff & ~mask).any(), f"{e['text']!r}: pixels changed outside the objects' region"


def test_questions_are_answered_from_the_scene():
    cfg = WorldConfig(**SMALL, question_rate=4.0)
    for seed in range(6):
        _, record = generate_stream(cfg, seed)
        story = simulate_stream(cfg, seed)
        assert len(record["meta"]["questions"]) == 4
        msgs = record["messages"]
        for q in record["meta"]["questions"]:
            i = next(i for i, m in enumerate(msgs) if m["role"] == "user" and m["time"] == q["time"])
            assert msgs[i - 1]["role"] == "stream" and msgs[i - 1]["learn"] == msgs[i - 1]["num_frames"] - 1
            assert msgs[i + 1] == {"role": "assistant", "time": q["time"], "content": q["answer"], "learn": True}
            objs = story.states[q["frame"]]
            target = next((o for o in objs if o.name in q["objects"]), None)
            last = [e["text"] for e in story.events if e["frame"] < q["frame"]]
            assert ask(q["type"], objs, cfg.grid, target=target, last_narration=last[-1] if last else None) == \
                (q["question"], q["answer"])


def test_answer_function_on_a_hand_built_scene():
    red_square = WorldObject("square", "red", "small", 0.5, 0.5)
    blue_circle = WorldObject("circle", "blue", "large", 5.5, 5.5)
    green_circle = WorldObject("circle", "green", "small", 3.5, 2.5)
    star = WorldObject("star", "yellow", "small", 2.5, 0.5)
    scene = [red_square, blue_circle, green_circle]
    assert ask("colour", scene, 6, target=red_square) == ("What colour is the square?", "Red.")
    assert ask("count", scene, 6) == ("How many objects are there?", "Three.")
    assert ask("count", scene[:1], 6)[1] == "One."
    assert ask("what_happened", scene, 6) == ("What just happened?", "Nothing yet.")
    assert ask("what_happened", scene, 6, last_narration="The red square grows.")[1] == "The red square grows."
    assert ask("where", scene, 6, target=red_square) == ("Where is the red square?", "In the top left.")
    assert ask("where", scene, 6, target=blue_circle)[1] == "In the bottom right."
    assert ask("where", scene, 6, target=green_circle)[1] == "In the centre."
    assert ask("where", scene + [star], 6, target=star)[1] == "At the top."
    assert ask("where", [WorldObject("cross", "white", "large", 0.5, 3.5)], 6,
               target=WorldObject("cross", "white", "large", 0.5, 3.5))[1] == "On the left."
    with pytest.raises(ValueError, match="ambiguous"):
        ask("colour", scene, 6, target=blue_circle)
    with pytest.raises(ValueError, match="target"):
        ask("where", scene, 6, target=star)
    with pytest.raises(ValueError, match="unknown question kind"):
        ask("why", scene, 6)
    assert narrate("appear", [], [WorldObject("star", "orange", "small", 1.5, 1.5)]) == "An orange star appears."
    assert narrate("collide", [red_square, green_circle], []) == "The red square and the green circle collide."
    assert narrate("change_colour", [star], [WorldObject("star", "red", "small", 2.5, 0.5)]) == \
        "The yellow star turns red."


def test_splits_are_disjoint(tmp_path):
    cfg = WorldConfig(resolution=32, duration=3.0)
    out = {s: generate_world(tmp_path, 3, 0, split=s, cfg=cfg, video_format="npy") for s in ("train", "val", "test")}
    ids = [r["id"] for recs in out.values() for r in recs]
    seeds = [r["meta"]["seed"] for recs in out.values() for r in recs]
    assert len(set(ids)) == len(ids) == 9 and len(set(seeds)) == 9
    all_seeds = {stream_seed(s, split, i) for s in range(3) for split in ("train", "val", "test") for i in range(50)}
    assert len(all_seeds) == 3 * 3 * 50
    with pytest.raises(ValueError, match="split"):
        stream_seed(0, "dev", 0)


@pytest.mark.parametrize("field,value", [("resolution", 33), ("resolution", 8), ("fps", 0.0), ("duration", 0.1),
                                         ("max_objects", 0), ("event_rate", -1.0), ("shapes", ["hexagon"]),
                                         ("colours", ["mauve"]), ("noise", -1.0), ("texture", 2.0), ("grid", 2),
                                         ("event_types", ["explode"]), ("min_event_gap", 0), ("jitter", 50)])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field) as err:
        WorldConfig(**{field: value})
    assert repr(value) in str(err.value) or str(value) in str(err.value)


def test_config_round_trip():
    cfg = WorldConfig(resolution=64, shapes=["star", "circle"], colours=["red", "blue"])
    assert WorldConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown WorldConfig field"):
        WorldConfig.from_dict({"colour": "red"})


def test_cli_writes_mp4_that_decodes_to_the_recorded_frames(tmp_path, capsys):
    import av

    out = tmp_path / "w"
    assert world_cmd.main(["--out", str(out), "--n", "2", "--seed", "5", "--resolution", "64",
                           "--duration", "6", "--split", "val"]) == 0
    assert "wrote 2 val streams" in capsys.readouterr().out
    records = read_records(out / "val.jsonl")
    assert [r["id"] for r in records] == ["world-val-5-00000", "world-val-5-00001"]
    for r in records:
        with av.open(str(out / r["video"])) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert len(decoded) == num_frames(r) == 12
        exact, _ = generate_stream(WorldConfig(resolution=64, duration=6.0), r["meta"]["seed"])
        assert np.abs(decoded.astype(int) - exact).mean() < 4.0
    assert not list((out / "videos").glob(".*")), "no temporary files left behind"


def test_cli_npy_resume_and_errors(tmp_path, capsys):
    out = tmp_path / "w"
    args = ["--out", str(out), "--n", "2", "--seed", "1", "--resolution", "32", "--duration", "3", "--format", "npy"]
    assert world_cmd.main(args) == 0
    r = read_records(out / "train.jsonl")[1]
    frames = np.load(out / r["video"])
    assert frames.shape == (num_frames(r), 32, 32, 3) and frames.dtype == np.uint8
    stamp = (out / r["video"]).stat().st_mtime_ns
    assert world_cmd.main(args + ["--resume"]) == 0
    assert (out / r["video"]).stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="--resolution"):
        world_cmd.main(["--out", str(out), "--n", "1", "--seed", "0", "--resolution", "33"])
    capsys.readouterr()
    for bad, message in ((["--n", "0"], "argument --n: must be an integer in [1, 1000000], got '0'"),
                         (["--events-per-second", "-1"], "argument --events-per-second: must be a finite number"),
                         (["--fps", "nan"], "argument --fps: must be a finite number in (0, 240], got 'nan'"),
                         (["--duration", "inf"], "argument --duration: must be a finite number in (0, 86400]"),
                         (["--seed", "-1"], "argument --seed: must be an integer in [0, 2147483647]")):
        argv = ["world", "--out", str(out), "--n", "1", "--seed", "0", *bad]
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and message in err[-1], (bad, err)
    # a stream too big to render in memory is refused up front, naming the options
    assert cli.main(["world", "--out", str(out), "--n", "1", "--seed", "0", "--fps", "240", "--duration",
                     "86400"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "GiB in memory" in err and "--duration" in err


def test_png_writer_round_trips(tmp_path):
    import av

    frames, _ = generate_stream(WorldConfig(resolution=32, duration=1.0), 0)
    path = save_png(tmp_path / "f.png", frames[0])
    assert path.read_bytes() == png_bytes(frames[0])
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.array_equal(decoded, frames[0])

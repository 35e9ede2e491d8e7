"""The bad-input corpus: hostile or broken inputs for every command, generated into a directory (no committed
binaries), each with the exit code and the fragment its one-line error must contain.

:func:`build` writes corrupt videos, images, feature caches, JSON, JSONL and YAML under ``root`` and returns the
cases; ``tests/commands/test_bad_inputs.py`` runs them through ``livecue.cli.main`` in-process. Arguments may use
``{d}`` for ``root``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FPS_RANGE = "must be a finite number in (0, 240]"


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: a short name (the pytest id).
        argv: the command line after ``livecue`` (``{d}`` is the corpus directory).
        code: the expected exit code (2: argparse refused an option value; 1: the command refused the input).
        fragment: text the command's one ``error:`` line must contain (it names the value, file or option); for
            ``code == 0`` a text that stderr must contain (a warning).
        jsonl: a file (relative to the corpus directory) the command writes that must be valid strict JSON lines.
    """

    id: str
    argv: tuple[str, ...]
    code: int
    fragment: str
    jsonl: str | None = None

    def args(self, root: Path) -> list[str]:
        return [a.replace("{d}", str(root)) for a in self.argv]


def _case(id_: str, argv: str | list[str], code: int, fragment: str, jsonl: str | None = None) -> Case:
    return Case(id_, tuple(argv.split() if isinstance(argv, str) else argv), code, fragment, jsonl)


# ---- files --------------------------------------------------------------------------------------------------------
def _frames(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _write_png(path: Path, frame: np.ndarray) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png")
        s.width, s.height, s.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
        for packet in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def _record(rid: str, video: str | None, frames: int = 3, fps: float = 2.0) -> dict:
    return {"id": rid, "video": video, "fps": fps,
            "messages": [{"role": "stream", "time": 0.0, "num_frames": frames, "learn": True},
                         {"role": "assistant", "time": (frames - 1) / fps, "content": "Hi.", "learn": True}]}


def _jsonl(path: Path, records: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _yaml(path: Path, text: str) -> None:
    path.write_text(text)


def write_files(d: Path) -> None:
    """Every broken (and the few good) input files the cases use."""
    from livecue.data.world_render import save_mp4, video_codec

    rng = np.random.default_rng(0)
    # videos
    videos = d / "videos"
    videos.mkdir(parents=True)
    (videos / "random.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "text.mp4").write_text("this is not a video\n" * 50)
    save_mp4(d / "good.mp4", _frames(4), 2.0, codec=video_codec())
    data = (d / "good.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[:len(data) // 3])
    (d / "one_second.mp4").write_bytes(data)  # 4 frames at 2 fps
    (d / "dir.mp4").mkdir()
    # images
    (d / "corrupt_images").mkdir()
    (d / "corrupt_images" / "a.png").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (d / "corrupt_images" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("no pictures here")
    (d / "good_then_bad").mkdir()
    _write_png(d / "good_then_bad" / "0.png", _frames(1, 16)[0])
    (d / "good_then_bad" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (d / "good_images").mkdir()
    for i in range(3):
        _write_png(d / "good_images" / f"{i}.png", _frames(1, 16, seed=i)[0])
    # .npy frame arrays for encode
    (d / "npy_bad").mkdir()
    np.save(d / "npy_bad" / "wrong_shape.npy", np.zeros((2, 8, 8), np.float32))
    (d / "npy_bad" / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    # configs
    _yaml(d / "bad.yaml", "base: tiny\nstream: [1,\n  threshold: }\n")
    _yaml(d / "tab.yaml", "base: tiny\nstream:\n\tthreshold: 0.5\n")
    _yaml(d / "list.yaml", "- a\n- b\n")
    _yaml(d / "unknown_key.yaml", "base: tiny\ntrain:\n  nope: 1\n")
    _yaml(d / "neg_lr.yaml", "base: tiny\ntrain:\n  learning_rate: -1.0e-4\n")
    _yaml(d / "nan_lr.yaml", "base: tiny\ntrain:\n  learning_rate: .nan\n")
    _yaml(d / "inf_lr.yaml", "base: tiny\ntrain:\n  learning_rate: .inf\n")
    _yaml(d / "bad_base.yaml", "base: no_such_preset\n")
    _yaml(d / "neg_layers.yaml", "base: tiny\nlm:\n  random_init:\n    model_type: llama\n    hidden_size: 64\n"
                                 "    num_attention_heads: 4\n    num_hidden_layers: -2\n")
    _yaml(d / "fps_yaml.yaml", "base: tiny\nstream:\n  fps: 1.0e9\n")
    (d / "binary.yaml").write_bytes(b"base: tiny\n\xff\xfe\x00garbage")
    # records
    _jsonl(d / "one.jsonl", [_record("r0", "good.mp4")])
    (d / "not_jsonl.jsonl").write_text("this is not JSON\n")
    (d / "bad_line3.jsonl").write_text(json.dumps(_record("a", "good.mp4")) + "\n"
                                       + json.dumps(_record("b", "good.mp4")) + "\n{\"id\": \"c\", \"fps\": }\n")
    (d / "empty.jsonl").write_text("\n\n")
    (d / "binary.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    (d / "nan_fps.jsonl").write_text(json.dumps(_record("r", "good.mp4")).replace('"fps": 2.0', '"fps": NaN') + "\n")
    _jsonl(d / "dup.jsonl", [_record("same", "good.mp4"), _record("same", "good.mp4")])
    _jsonl(d / "missing_video.jsonl", [_record(f"m{i}", "videos/nope.mp4") for i in range(3)])
    _jsonl(d / "corrupt_video.jsonl", [_record(f"c{i}", "videos/random.mp4") for i in range(3)])
    _jsonl(d / "array.jsonl", [[1, 2, 3]])
    for name, data_file in (("train_missing", "{d}/missing.jsonl"), ("train_not_jsonl", "{d}/not_jsonl.jsonl"),
                            ("train_bad_line", "{d}/bad_line3.jsonl"), ("train_empty", "{d}/empty.jsonl"),
                            ("train_binary", "{d}/binary.jsonl"), ("train_dup", "{d}/dup.jsonl")):
        _yaml(d / f"{name}.yaml", f"base: tiny\ntrain:\n  train_data: {data_file.replace('{d}', str(d))}\n"
                                  f"  output_dir: {d / 'runs' / name}\n  max_steps: 1\n")
    _yaml(d / "train_no_data.yaml", f"base: tiny\ntrain:\n  output_dir: {d / 'runs' / 'none'}\n")
    # feature caches
    (d / "cache_bad_index").mkdir()
    (d / "cache_bad_index" / "index.json").write_text('{"fps": 2.0, "videos": {')
    (d / "cache_no_fps").mkdir()
    (d / "cache_no_fps" / "index.json").write_text('{"videos": {}}')
    (d / "cache_corrupt_file" / "features").mkdir(parents=True)
    (d / "cache_corrupt_file" / "features" / "good.mp4.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    (d / "cache_corrupt_file" / "index.json").write_text(json.dumps(
        {"version": 1, "fps": 2.0, "videos": {"good.mp4": {"file": "features/good.mp4.safetensors",
                                                           "num_frames": 4, "duration": 1.5}}}))
    (d / "enc_out_bad_index").mkdir()
    (d / "enc_out_bad_index" / "index.json").write_text("{not json")
    (d / "one_video").mkdir()
    (d / "one_video" / "v.mp4").write_bytes(data)
    # checkpoint-like directories
    (d / "ckpt_empty").mkdir()
    (d / "ckpt_bad_config").mkdir()
    (d / "ckpt_bad_config" / "livecue_config.json").write_text('{"name": "x", "stream": {')
    # annotations
    _write_annotations(d)
    # other JSON
    (d / "conversation_bad.json").write_text('[{"role": "user", "content": "hi"},\n {"role": }]')


def _write_annotations(d: Path) -> None:
    a = d / "ann"
    a.mkdir()
    (a / "broken.json").write_text('{"database": {\n  "v1": {"class": "X",\n    "subset": training}}}')
    (a / "binary.json").write_bytes(b"\xff\xfe{\x00")
    (a / "coin_nan.json").write_text('{"database": {"v": {"class": "MakeTea", "subset": "training", '
                                     '"annotation": [{"segment": [NaN, 3.0], "label": "boil"}]}}}')
    (a / "coin_inf.json").write_text('{"database": {"v": {"class": "MakeTea", "subset": "training", '
                                     '"annotation": [{"segment": [1.0, Infinity], "label": "boil"}]}}}')
    (a / "coin_empty_label.json").write_text(json.dumps({"database": {"v": {
        "class": "MakeTea", "subset": "training", "annotation": [{"segment": [1.0, 2.0], "label": " "}]}}}))
    coin_ok = {"database": {"v": {"class": "MakeTea", "subset": "training", "annotation": [
        {"segment": [-2.0, 3.0], "label": "boil water"}, {"segment": [4.0, 6.0], "label": "pour"}]}}}
    (a / "coin_ok.json").write_text(json.dumps(coin_ok))
    (a / "coin_one_step.json").write_text(json.dumps({"database": {"v": {
        "class": "MakeTea", "subset": "training", "annotation": [{"segment": [1.0, 3.0], "label": "boil"}]}}}))
    (a / "list.json").write_text("[1, 2]")
    # Ego4D narrations: every narration unusable (no text, one word, no time) -> 0 records, with the reason
    bad_narr = {"videos": {"v1": {"narrations": [
        {"time": 1.0, "text": "", "_annotation_uid": "a"}, {"time": 2.0, "text": "#C", "_annotation_uid": "a"},
        {"time": 3.0, "text": "#C C", "_annotation_uid": "a"}, {"text": "#C C opens the door", "_annotation_uid": "a"},
        {"time": "x", "text": "#C C opens the door", "_annotation_uid": "a"}]}}}
    (a / "narr_unusable.json").write_text(json.dumps(bad_narr))
    neg = {"videos": {"v1": {"narrations": [
        {"time": -1.5, "text": "#C C opens the door", "_annotation_uid": "a"},
        {"time": 2.0, "text": "#C C closes the door", "_annotation_uid": "a"},
        {"time": 3.0, "_annotation_uid": "a"}]}}}
    (a / "narr_negative.json").write_text(json.dumps(neg))
    (a / "narr_broken.json").write_text('{"videos": {"v1": {"narrations": [\n  {"time": 1.0, "text": "a b",}]}}}')
    (a / "durations_bad.json").write_text(json.dumps({"videos": [{"video_uid": "v1", "duration_sec": "long"}]}))
    # LTA
    (a / "taxonomy.json").write_text(json.dumps({"verbs": ["take", "put"], "nouns": ["cup", "knife"]}))
    act = {"clip_uid": "c", "video_uid": "v", "action_idx": 0, "clip_parent_start_sec": 0.0,
           "action_clip_start_sec": 1.0, "action_clip_end_sec": 2.0, "verb_label": 0, "noun_label": 1}
    (a / "lta_short.json").write_text(json.dumps({"clips": [dict(act, action_idx=k) for k in range(5)]}))
    (a / "lta_nan.json").write_text(json.dumps({"clips": [act]}).replace('"action_clip_end_sec": 2.0',
                                                                          '"action_clip_end_sec": NaN'))
    (a / "lta_label.json").write_text(json.dumps({"clips": [dict(act, verb_label=7)]}))
    # GoalStep
    gs_video = {"video_uid": "v1", "start_time": 0.0, "end_time": 300.0, "goal_description": "make pasta",
                "segments": []}
    (a / "goalstep_no_steps.json").write_text(json.dumps({"videos": [gs_video]}))
    (a / "goalstep_bad_time.json").write_text(json.dumps({"videos": [dict(gs_video, end_time="late")]}))
    (a / "goalstep_broken.json").write_text('{"videos": [\n  {"video_uid": "v1",\n   "start_time": 0.0 "x"}]}')


# ---- cases --------------------------------------------------------------------------------------------------------
def _watch_cases() -> list[Case]:
    w = "watch {d}/good.mp4 --model tiny --quiet"
    opt = [  # (id, extra args, fragment): argparse refuses the value (exit 2)
        ("fps-nan", "--fps nan", f"argument --fps: {FPS_RANGE}, got 'nan'"),
        ("fps-inf", "--fps inf", f"argument --fps: {FPS_RANGE}, got 'inf'"),
        ("fps-huge", "--fps 1e9", f"argument --fps: {FPS_RANGE}, got '1e9'"),
        ("fps-zero", "--fps 0", f"argument --fps: {FPS_RANGE}, got '0'"),
        ("fps-negative", "--fps -2", f"argument --fps: {FPS_RANGE}, got '-2'"),
        ("fps-text", "--fps fast", f"argument --fps: {FPS_RANGE}, got 'fast'"),
        ("at-nan", "--query hi --at nan", "argument --at: must be a finite number in [0, 604800], got 'nan'"),
        ("at-inf", "--query hi --at inf", "argument --at: must be a finite number in [0, 604800], got 'inf'"),
        ("at-negative", "--query hi --at -1", "argument --at: must be a finite number in [0, 604800], got '-1'"),
        ("threshold-nan", "--threshold nan", "argument --threshold: must be a finite number in [0, 1], got 'nan'"),
        ("threshold-2", "--threshold 2", "argument --threshold: must be a finite number in [0, 1], got '2'"),
        ("max-frames-0", "--max-frames 0", "argument --max-frames: must be an integer in [1, 2147483647], got '0'"),
        ("max-frames-float", "--max-frames 2.5", "argument --max-frames: must be an integer"),
        ("max-reply-tokens-0", "--max-reply-tokens 0", "argument --max-reply-tokens: must be an integer in [1, 4096]"),
        ("max-reply-tokens-huge", "--max-reply-tokens 99999999999", "argument --max-reply-tokens: must be an integer"),
        ("temperature-nan", "--temperature nan", "argument --temperature: must be a finite number in [0, 100]"),
        ("temperature-negative", "--temperature -0.5", "argument --temperature: must be a finite number in [0, 100]"),
        ("top-p-0", "--top-p 0", "argument --top-p: must be a finite number in (0, 1], got '0'"),
        ("top-p-nan", "--top-p nan", "argument --top-p: must be a finite number in (0, 1], got 'nan'"),
        ("repetition-penalty-0", "--repetition-penalty 0", "argument --repetition-penalty: must be a finite number"),
        ("repetition-penalty-inf", "--repetition-penalty inf", "argument --repetition-penalty: must be a finite"),
        ("memory-text", "--memory lots", "argument --memory: memory must be 'unbounded', 'sink:MAX_TOKENS' or "),
        ("memory-zero", "--memory sink:0", "argument --memory: memory 'sink:0': SinkWindow needs max_tokens > 0"),
        ("batch-size-0", "--batch-size 0", "argument --batch-size: must be an integer in [1, 1024], got '0'"),
        ("batch-size-huge", "--batch-size 100000", "argument --batch-size: must be an integer in [1, 1024]"),
        ("max-lag-nan", "--max-lag nan", "argument --max-lag: must be a finite number in (0, 3600], got 'nan'"),
        ("max-lag-0", "--max-lag 0", "argument --max-lag: must be a finite number in (0, 3600], got '0'"),
    ]
    cases = [_case(f"watch-{i}", f"{w} {extra}", 2, frag) for i, extra, frag in opt]
    cases += [
        _case("watch-query-too-long", ["watch", "{d}/good.mp4", "--query", "q" * 2001], 2,
              "argument --query: must be at most 2,000 characters, got 2,001"),
        _case("watch-query-empty", ["watch", "{d}/good.mp4", "--query", "  "], 2,
              "argument --query: must be a non-empty query"),
        _case("watch-system-too-long", ["watch", "{d}/good.mp4", "--system", "s" * 8001], 2,
              "argument --system: must be at most 8,000 characters"),
        _case("watch-system-empty", ["watch", "{d}/good.mp4", "--system", " "], 2,
              "argument --system: must be a non-empty system prompt"),
        _case("watch-server-memory", "watch {d}/good.mp4 --server http://127.0.0.1:9 --memory sink:64", 1,
              "--memory is the server's with --server"),
        _case("watch-at-without-query", f"{w} --at 1", 1, "1 --at values for 0 --query values"),
        # the input itself
        _case("watch-missing-file", "watch {d}/nope.mp4 --model tiny", 1, "video file not found: '{d}/nope.mp4'"),
        _case("watch-random-bytes", "watch {d}/videos/random.mp4 --model tiny", 1, "'{d}/videos/random.mp4'"),
        _case("watch-empty-file", "watch {d}/videos/empty.mp4 --model tiny", 1,
              "empty (0 bytes): '{d}/videos/empty.mp4'"),
        _case("watch-text-file", "watch {d}/videos/text.mp4 --model tiny", 1, "not a readable video"),
        _case("watch-truncated", "watch {d}/videos/truncated.mp4 --model tiny", 1, "'{d}/videos/truncated.mp4'"),
        _case("watch-corrupt-images", "watch {d}/corrupt_images --model tiny", 1,
              "unreadable image (Invalid data found when processing input): '{d}/corrupt_images/a.png'"),
        _case("watch-no-images", "watch {d}/no_images --model tiny", 1,
              "no images (png/jpg/jpeg/bmp/webp) in directory"),
        _case("watch-good-then-bad-image", "watch {d}/good_then_bad --model tiny --quiet --jsonl {d}/gtb.jsonl", 1,
              "'{d}/good_then_bad/1.png'", jsonl="gtb.jsonl"),
        _case("watch-jsonl-is-a-directory", "watch {d}/good.mp4 --model tiny --jsonl {d}", 1,
              "--jsonl: cannot write '{d}': Is a directory"),
        _case("watch-jsonl-no-dir", "watch {d}/good.mp4 --model tiny --jsonl {d}/no/such/dir/x.jsonl", 1,
              "--jsonl directory does not exist: '{d}/no/such/dir'"),
        _case("watch-bad-yaml-model", "watch {d}/good.mp4 --model {d}/bad.yaml", 1,
              "invalid YAML in '{d}/bad.yaml' (line 3, column 14)"),
        _case("watch-unknown-preset", "watch {d}/good.mp4 --model no_such_model_anywhere", 1, "no_such_model_anywhere"),
        _case("watch-override-negative-hidden", "watch {d}/good.mp4 --model tiny --lm.random_init.hidden_size=-1", 1,
              "lm.random_init.hidden_size must be a positive integer, got -1"),
        _case("watch-override-zero-layers", "watch {d}/good.mp4 --model tiny --lm.random_init.num_hidden_layers=0",
              1, "lm.random_init.num_hidden_layers must be a positive integer, got 0"),
        _case("watch-override-vision-hidden", "watch {d}/good.mp4 --model tiny --vision.random_init.hidden_size=-3",
              1, "vision.random_init.hidden_size must be a positive integer, got -3"),
        _case("watch-override-pooled", "watch {d}/good.mp4 --model tiny --vision.frame_token_pooled=-1", 1,
              "vision.frame_token_pooled must be in 0..64"),
        _case("watch-override-fps-nan", "watch {d}/good.mp4 --model tiny --stream.fps=nan", 1,
              "config key 'stream.fps' must be a finite number, got nan"),
        _case("watch-override-heads-text", "watch {d}/good.mp4 --model tiny --lm.random_init.num_attention_heads=x",
              1, "lm.random_init.num_attention_heads must be a positive integer, got 'x'"),
        # a 1-s file at the highest fps ends (240 frames), and the events are strict JSON
        _case("watch-one-second-at-240fps", "watch {d}/one_second.mp4 --model tiny --fps 240 --quiet "
              "--max-reply-tokens 1 --jsonl {d}/fast.jsonl", 0, "", jsonl="fast.jsonl"),
    ]
    return cases


def _demo_cases() -> list[Case]:
    d = "demo --model tiny --fast"
    return [
        _case("demo-duration-nan", f"{d} --duration nan", 2,
              "argument --duration: must be a finite number in (0, 600]"),
        _case("demo-duration-0", f"{d} --duration 0", 2, "argument --duration: must be a finite number in (0, 600]"),
        _case("demo-duration-tiny", f"{d} --duration 0.1", 1, "--duration must give at least 2 frames at 2 fps"),
        _case("demo-at-inf", f"{d} --question hi --at inf", 2, "argument --at: must be a finite number in [0, 604800]"),
        _case("demo-at-nan", f"{d} --question hi --at nan", 2, "argument --at: must be a finite number"),
        _case("demo-seed-negative", f"{d} --seed -1", 2, "argument --seed: must be an integer in [0, 2147483647]"),
        _case("demo-threshold", f"{d} --threshold 1.5", 2, "argument --threshold: must be a finite number in [0, 1]"),
        _case("demo-memory", f"{d} --memory sink:x", 2, "argument --memory: memory must be 'unbounded'"),
        _case("demo-fps", f"{d} --fps 0", 2, f"argument --fps: {FPS_RANGE}, got '0'"),
        _case("demo-max-frames", f"{d} --max-frames -4", 2, "argument --max-frames: must be an integer"),
        _case("demo-question-long", ["demo", "--question", "x" * 3000], 2,
              "argument --question: must be at most 2,000 characters"),
        _case("demo-source-missing", f"{d} --source {{d}}/nope.mp4", 1, "video file not found: '{d}/nope.mp4'"),
        _case("demo-source-corrupt", f"{d} --source {{d}}/videos/random.mp4", 1, "'{d}/videos/random.mp4'"),
        _case("demo-source-empty", f"{d} --source {{d}}/videos/empty.mp4", 1, "empty (0 bytes)"),
        _case("demo-source-corrupt-images", f"{d} --source {{d}}/corrupt_images", 1, "'{d}/corrupt_images/a.png'"),
        _case("demo-source-unknown-sample", f"{d} --source sample:nope", 1, "unknown sample video 'nope'"),
        _case("demo-save-no-dir", f"{d} --save {{d}}/no/dir/out.mp4", 1, "--save directory does not exist"),
        _case("demo-save-is-dir", f"{d} --save {{d}}", 1, "--save '{d}' is a directory: give a video file name"),
        _case("demo-save-suffix", f"{d} --save {{d}}/out.xyz", 1,
              "--save '{d}/out.xyz': the video file name must end in .mp4, .mkv, .mov, .m4v"),
    ]


def _info_cases() -> list[Case]:
    return [
        _case("info-missing-model", "info --model {d}/nope_dir/", 1, "{d}/nope_dir"),
        _case("info-empty-dir", "info --model {d}/ckpt_empty", 1, "{d}/ckpt_empty"),
        _case("info-bad-config-json", "info --model {d}/ckpt_bad_config", 1, "livecue_config.json"),
        _case("info-bad-yaml", "info --model {d}/bad.yaml", 1, "invalid YAML in '{d}/bad.yaml' (line 3, column 14)"),
        _case("info-tab-yaml", "info --model {d}/tab.yaml", 1, "invalid YAML in '{d}/tab.yaml' (line 3"),
        _case("info-binary-yaml", "info --model {d}/binary.yaml", 1, "'{d}/binary.yaml'"),
        _case("info-list-yaml", "info --model {d}/list.yaml", 1, "must hold a mapping, got list"),
        _case("info-bad-base", "info --model {d}/bad_base.yaml", 1, "no_such_preset"),
        _case("info-yaml-fps", "info --model {d}/fps_yaml.yaml", 1,
              "stream.fps must be a finite number in (0, 240], got '1000000000.0'"),
        _case("info-neg-layers", "info --model {d}/neg_layers.yaml", 1,
              "lm.random_init.num_hidden_layers must be a positive integer, got -2"),
        _case("info-override-threshold", "info --model tiny --stream.threshold=2", 1,
              "stream.threshold must be a finite number in [0, 1]"),
        _case("info-override-lr-inf", "info --model tiny --train.learning_rate=inf", 1,
              "config key 'train.learning_rate' must be a finite number, got inf"),
        _case("info-override-lr-overflow", "info --model tiny --train.learning_rate=1e400", 1,
              "config key 'train.learning_rate' must be a finite number"),
        _case("info-override-unknown", "info --model tiny --stream.nope=1", 1, "unknown config key(s) 'stream.nope'"),
        _case("info-override-dtype", "info --model tiny --lm.dtype=float64", 1, "lm.dtype must be one of"),
        _case("info-override-vocab", "info --model tiny --lm.random_init.vocab_size=0", 1,
              "lm.random_init.vocab_size must be a positive integer, got 0"),
        _case("info-override-heads", "info --model tiny --vision.random_init.num_attention_heads=-2", 1,
              "vision.random_init.num_attention_heads must be a positive integer, got -2"),
        _case("info-override-image-size", "info --model tiny --vision.random_init.image_size=0", 1,
              "vision.random_init.image_size must be a positive integer, got 0"),
        _case("info-override-section", "info --model tiny --stream.fps.x=1", 1,
              "'stream.fps' is a value, not a section"),
        _case("info-override-seed", "info --model tiny --train.seed=-1", 1, "train.seed must be in [0, 2^32), got -1"),
    ]


def _eval_cases() -> list[Case]:
    e = "eval --model tiny --out {d}/eval_out"
    return [
        _case("eval-threshold-nan", f"{e} --data {{d}}/one.jsonl --threshold nan", 2,
              "argument --threshold: must be a finite number in [0, 1], got 'nan'"),
        _case("eval-batch-size-0", f"{e} --data {{d}}/one.jsonl --batch-size 0", 2, "argument --batch-size"),
        _case("eval-max-samples-0", f"{e} --data {{d}}/one.jsonl --max-samples 0", 2, "argument --max-samples"),
        _case("eval-max-frames-neg", f"{e} --data {{d}}/one.jsonl --task free --max-frames -1", 2,
              "argument --max-frames: must be an integer in [0, 2147483647], got '-1'"),
        _case("eval-tolerance-nan", f"{e} --data {{d}}/one.jsonl --tolerance nan", 2, "argument --tolerance"),
        _case("eval-beams-0", f"{e} --data {{d}}/one.jsonl --task lta --beams 0", 2, "argument --beams"),
        _case("eval-z-huge", f"{e} --data {{d}}/one.jsonl --task lta --z 1e9", 2, "argument --z"),
        _case("eval-max-new-tokens", f"{e} --data {{d}}/one.jsonl --task coin-step --max-new-tokens 0", 2,
              "argument --max-new-tokens"),
        _case("eval-free-samples", f"{e} --data {{d}}/one.jsonl --free-samples -1", 2, "argument --free-samples"),
        _case("eval-grid-nan", f"{e} --data {{d}}/one.jsonl --calibrate --grid 0.5,nan", 1,
              "--grid must be comma-separated θ values in [0, 1], got '0.5,nan'"),
        _case("eval-grid-text", f"{e} --data {{d}}/one.jsonl --calibrate --grid a,b", 1,
              "--grid must be comma-separated numbers, got 'a,b'"),
        _case("eval-memory", f"{e} --data {{d}}/one.jsonl --task free --memory sink:-4", 2, "argument --memory: "
              "memory must be 'unbounded', 'sink:MAX_TOKENS' or 'sink:MAX_TOKENS:CHUNK', got 'sink:-4'"),
        _case("eval-memory-narration", f"{e} --data {{d}}/one.jsonl --memory sink:64", 1,
              "--memory and --max-frames apply to the free-running task, not narration"),
        _case("eval-data-missing", f"{e} --data {{d}}/nope.jsonl", 1, "records file not found: '{d}/nope.jsonl'"),
        _case("eval-data-not-jsonl", f"{e} --data {{d}}/not_jsonl.jsonl", 1,
              "{d}/not_jsonl.jsonl:1:1: record 0 is not valid JSON"),
        _case("eval-data-bad-line", f"{e} --data {{d}}/bad_line3.jsonl", 1,
              "{d}/bad_line3.jsonl:3:20: record 2 is not valid JSON: Expecting value"),
        _case("eval-data-empty", f"{e} --data {{d}}/empty.jsonl", 1, "'{d}/empty.jsonl' holds no records"),
        _case("eval-data-binary", f"{e} --data {{d}}/binary.jsonl", 1, "{d}/binary.jsonl:1: record 0 is not UTF-8"),
        _case("eval-data-nan-fps", f"{e} --data {{d}}/nan_fps.jsonl", 1, "'fps' must be a positive number, got nan"),
        _case("eval-data-duplicate", f"{e} --data {{d}}/dup.jsonl", 1, "duplicate id 'same'"),
        _case("eval-data-array", f"{e} --data {{d}}/array.jsonl", 1, "record 0: must be a JSON object, got list"),
        _case("eval-every-video-missing", f"{e} --data {{d}}/missing_video.jsonl", 1,
              "video file not found: '{d}/videos/nope.mp4'"),
        _case("eval-every-video-corrupt", f"{e} --data {{d}}/corrupt_video.jsonl", 1, "'{d}/videos/random.mp4'"),
        _case("eval-free-every-video-corrupt", f"{e} --data {{d}}/corrupt_video.jsonl --task free --no-similarity",
              1, "'{d}/videos/random.mp4'"),
        _case("eval-cache-missing", f"{e} --data {{d}}/one.jsonl --feature-cache {{d}}/no_cache", 1,
              "no feature cache index at '{d}/no_cache/index.json'"),
        _case("eval-cache-bad-index", f"{e} --data {{d}}/one.jsonl --feature-cache {{d}}/cache_bad_index", 1,
              "feature cache index '{d}/cache_bad_index/index.json' is not valid JSON (line 1, column 25)"),
        _case("eval-cache-no-fps", f"{e} --data {{d}}/one.jsonl --feature-cache {{d}}/cache_no_fps", 1,
              "is not a livecue feature index"),
        _case("eval-cache-corrupt-file", f"{e} --data {{d}}/one.jsonl --feature-cache {{d}}/cache_corrupt_file",
              1, "feature file '{d}/cache_corrupt_file/features/good.mp4.safetensors' is unreadable"),
        _case("eval-categories-broken", f"{e} --data {{d}}/one.jsonl --task coin-step --categories "
              "{d}/ann/list.json --max-samples 1", 1, "{d}/ann/list.json: expected a JSON list of strings"),
    ]


def _train_cases() -> list[Case]:
    return [
        _case("train-config-missing", "train {d}/no_such_config.yaml", 1, "{d}/no_such_config.yaml"),
        _case("train-invalid-yaml", "train {d}/bad.yaml", 1, "invalid YAML in '{d}/bad.yaml' (line 3, column 14)"),
        _case("train-yaml-list", "train {d}/list.yaml", 1, "must hold a mapping, got list"),
        _case("train-unknown-key", "train {d}/unknown_key.yaml", 1, "unknown config key(s) 'train.nope'"),
        _case("train-negative-lr", "train {d}/neg_lr.yaml", 1, "train.learning_rate must be positive, got -0.0001"),
        _case("train-nan-lr", "train {d}/nan_lr.yaml", 1, "config key 'train.learning_rate' must be a finite number"),
        _case("train-inf-lr", "train {d}/inf_lr.yaml", 1, "config key 'train.learning_rate' must be a finite number"),
        _case("train-override-lr", "train tiny --train.learning_rate=-1", 1, "train.learning_rate must be positive"),
        _case("train-override-max-steps", "train tiny --train.max_steps=0", 1,
              "train.max_steps must be -1 or positive"),
        _case("train-override-grad-norm", "train tiny --train.max_grad_norm=-1", 1, "train.max_grad_norm must be >= 0"),
        _case("train-data-unset", "train {d}/train_no_data.yaml", 1, "train.train_data is not set"),
        _case("train-data-missing", "train {d}/train_missing.yaml", 1, "records file not found: '{d}/missing.jsonl'"),
        _case("train-data-not-jsonl", "train {d}/train_not_jsonl.yaml", 1, "{d}/not_jsonl.jsonl:1:1: record 0"),
        _case("train-data-corrupt-line", "train {d}/train_bad_line.yaml", 1,
              "{d}/bad_line3.jsonl:3:20: record 2 is not valid JSON"),
        _case("train-data-empty", "train {d}/train_empty.yaml", 1, "'{d}/empty.jsonl' holds no records"),
        _case("train-data-binary", "train {d}/train_binary.yaml", 1, "{d}/binary.jsonl:1: record 0 is not UTF-8"),
        _case("train-data-duplicate", "train {d}/train_dup.yaml", 1, "duplicate id 'same'"),
    ]


def _encode_cases() -> list[Case]:
    return [
        _case("encode-fps-0", "encode {d}/one_video --out {d}/enc0 --fps 0", 2,
              f"argument --fps: {FPS_RANGE}, got '0'"),
        _case("encode-fps-nan", "encode {d}/one_video --out {d}/enc0 --fps nan", 2, f"argument --fps: {FPS_RANGE}"),
        _case("encode-fps-huge", "encode {d}/one_video --out {d}/enc0 --fps 1e9", 2, f"argument --fps: {FPS_RANGE}"),
        _case("encode-batch-0", "encode {d}/one_video --out {d}/enc0 --batch-size 0", 2, "argument --batch-size"),
        _case("encode-missing-dir", "encode {d}/nope --out {d}/enc1", 1, "video directory not found: '{d}/nope'"),
        _case("encode-no-videos", "encode {d}/no_images --out {d}/enc1", 1, "no video files in '{d}/no_images'"),
        _case("encode-every-video-fails", "encode {d}/videos --out {d}/enc2 --model tiny", 1,
              "every video failed to encode (4 of 4 in '{d}/videos'); the first: empty.mp4: video file is empty "
              "(0 bytes)"),
        _case("encode-bad-npy", "encode {d}/npy_bad --out {d}/enc3 --model tiny", 1,
              "every video failed to encode (2 of 2"),
        _case("encode-corrupt-index", "encode {d}/one_video --out {d}/enc_out_bad_index --model tiny", 1,
              "the cache index '{d}/enc_out_bad_index/index.json' is not valid JSON (line 1, column 2)"),
    ]


def _convert_cases() -> list[Case]:
    a = "{d}/ann"
    return [
        _case("convert-unknown-kind", "convert-data nope --out {d}/o.jsonl", 1, "unknown converter 'nope'"),
        _case("convert-coin-fps-nan", f"convert-data coin-step --annotations {a}/coin_ok.json --out {{d}}/o.jsonl "
              "--fps nan", 2, f"argument --fps: {FPS_RANGE}, got 'nan'"),
        _case("convert-coin-missing", "convert-data coin-step --annotations {d}/nope.json --out {d}/o.jsonl", 1,
              "COIN annotation file not found: '{d}/nope.json'"),
        _case("convert-coin-broken-json", f"convert-data coin-step --annotations {a}/broken.json --out {{d}}/o.jsonl",
              1, f"{a}/broken.json:3:15: not a valid JSON file (COIN annotation file): Expecting value"),
        _case("convert-coin-binary", f"convert-data coin-step --annotations {a}/binary.json --out {{d}}/o.jsonl", 1,
              f"{a}/binary.json: not a valid JSON file (COIN annotation file): not UTF-8 text"),
        _case("convert-coin-nan", f"convert-data coin-step --annotations {a}/coin_nan.json --out {{d}}/o.jsonl", 1,
              "NaN is not a JSON number"),
        _case("convert-coin-inf", f"convert-data coin-step --annotations {a}/coin_inf.json --out {{d}}/o.jsonl", 1,
              "Infinity is not a JSON number"),
        _case("convert-coin-empty-label", f"convert-data coin-step --annotations {a}/coin_empty_label.json "
              "--out {d}/o.jsonl", 1, "annotation[0]: 'label' must be a non-empty string"),
        _case("convert-coin-wrong-split", f"convert-data coin-step --annotations {a}/coin_ok.json --split test "
              "--out {d}/o.jsonl", 1, "no records: 1 videos in {d}/ann/coin_ok.json: 1 videos not in the test subset"),
        _case("convert-coin-too-few-steps", f"convert-data coin-next --annotations {a}/coin_one_step.json "
              "--out {d}/o.jsonl", 1, "no records: 1 videos in {d}/ann/coin_one_step.json: 1 videos without a sample"),
        _case("convert-coin-negative-time-warns", f"convert-data coin-step --annotations {a}/coin_ok.json "
              "--out {d}/coin_ok.jsonl", 0, "warning: {d}/ann/coin_ok.json: 1 step segments with a negative time"),
        _case("convert-ego4d-broken-json", f"convert-data ego4d-narration --narrations {a}/narr_broken.json "
              "--out {d}/o.jsonl", 1,
              f"{a}/narr_broken.json:2:31: not a valid JSON file (annotation file): Expecting property name"),
        _case("convert-ego4d-missing", "convert-data ego4d-narration --narrations {d}/nope.json --out {d}/o.jsonl",
              1, "annotation file not found: '{d}/nope.json'"),
        _case("convert-ego4d-unusable", f"convert-data ego4d-narration --narrations {a}/narr_unusable.json "
              "--out {d}/o.jsonl", 1, "no records: 1 videos in {d}/ann/narr_unusable.json, 0 with usable narrations"),
        _case("convert-ego4d-negative-time-warns", f"convert-data ego4d-narration --narrations "
              f"{a}/narr_negative.json --out {{d}}/narr.jsonl", 0,
              "1 narrations with a negative time (clamped to frame 0), 1 narrations without text (skipped)"),
        _case("convert-ego4d-bad-durations", f"convert-data ego4d-narration --narrations {a}/narr_negative.json "
              f"--durations {a}/durations_bad.json --out {{d}}/o.jsonl", 1,
              "durations_bad.json: videos[0]: the duration must be a finite number of seconds >= 0, got 'long'"),
        _case("convert-ego4d-max-frames", f"convert-data ego4d-narration --narrations {a}/narr_negative.json "
              "--max-num-frames 0 --out {d}/o.jsonl", 2, "argument --max-num-frames: must be an integer"),
        _case("convert-lta-short", f"convert-data lta --annotations {a}/lta_short.json --taxonomy {a}/taxonomy.json "
              "--out {d}/o.jsonl", 1, "no records: 5 actions in {d}/ann/lta_short.json; skipped: 1 clips with fewer "
              "than 28 actions"),
        _case("convert-lta-nan", f"convert-data lta --annotations {a}/lta_nan.json --taxonomy {a}/taxonomy.json "
              "--out {d}/o.jsonl", 1, "NaN is not a JSON number"),
        _case("convert-lta-label", f"convert-data lta --annotations {a}/lta_label.json --taxonomy {a}/taxonomy.json "
              "--out {d}/o.jsonl", 1, "clips[0]: verb_label 7 / noun_label 1 outside the taxonomy"),
        _case("convert-lta-taxonomy-broken", f"convert-data lta --annotations {a}/lta_short.json --taxonomy "
              f"{a}/broken.json --out {{d}}/o.jsonl", 1, f"{a}/broken.json:3:15: not a valid JSON file (LTA taxonomy"),
        _case("convert-goalstep-no-steps", f"convert-data goalstep --annotations {a}/goalstep_no_steps.json "
              "--out {d}/o.jsonl", 1, "no records: the 1 videos of {d}/ann/goalstep_no_steps.json have no steps"),
        _case("convert-goalstep-bad-time", f"convert-data goalstep --annotations {a}/goalstep_bad_time.json "
              "--out {d}/o.jsonl", 1, "videos[0]: missing or malformed 'end_time' (seconds, a finite number), got "
              "'late'"),
        _case("convert-goalstep-broken", f"convert-data goalstep --annotations {a}/goalstep_broken.json "
              "--out {d}/o.jsonl", 1, f"{a}/goalstep_broken.json:3:22: not a valid JSON file (GoalStep annotation "
                                      "file): Expecting ',' delimiter"),
        _case("convert-goalstep-num-times", f"convert-data goalstep --annotations {a}/goalstep_no_steps.json "
              "--num-times 0 --out {d}/o.jsonl", 2, "argument --num-times: must be an integer in [1, 100]"),
        _case("convert-augment-p", "convert-data augment --records {d}/one.jsonl --p 1.5 --out {d}/o.jsonl", 2,
              "argument --p: must be a finite number in [0, 1], got '1.5'"),
        _case("convert-augment-empty", "convert-data augment --records {d}/empty.jsonl --out {d}/o.jsonl", 1,
              "'{d}/empty.jsonl' holds no records"),
        _case("convert-robustness-n", "convert-data robustness --n 0 --out {d}/o.jsonl", 2,
              "argument --n: must be an integer in [1, 100000], got '0'"),
        _case("convert-robustness-resolution", "convert-data robustness --resolution 100000 --out {d}/o.jsonl", 2,
              "argument --resolution: must be an integer in [1, 2048]"),
    ]


def _serve_cases() -> list[Case]:
    s = "serve --model tiny --port 0"
    return [
        _case("serve-fps-nan", f"{s} --fps nan", 2, f"argument --fps: {FPS_RANGE}, got 'nan'"),
        _case("serve-fps-over-limit", f"{s} --fps 60", 2,
              "--fps must be at most 30 on this server (its limit max_fps), got 60"),
        _case("serve-memory", f"{s} --memory sink:x", 2, "argument --memory: memory must be 'unbounded'"),
        _case("serve-memory-and-alias", f"{s} --memory sink:64 --max-context-tokens 64", 1,
              "--memory and --max-context-tokens both set the memory policy"),
        _case("serve-port-70000", "serve --model tiny --port 70000", 2, "argument --port: must be an integer in "
              "[0, 65535], got '70000'"),
        _case("serve-port-negative", "serve --model tiny --port -1", 2, "argument --port"),
        _case("serve-max-sessions-0", f"{s} --max-sessions 0", 2, "argument --max-sessions: must be an integer"),
        _case("serve-max-rate-inf", f"{s} --max-rate inf", 2, "argument --max-rate: must be a finite number"),
        _case("serve-queue-size-negative", f"{s} --queue-size -1", 2, "argument --queue-size: must be an integer"),
        _case("serve-max-pixels-0", f"{s} --max-pixels 0", 2, "argument --max-pixels: must be an integer"),
        _case("serve-max-frame-bytes-0", f"{s} --max-frame-bytes 0", 2, "argument --max-frame-bytes"),
        _case("serve-temperature-nan", f"{s} --temperature nan", 2, "argument --temperature"),
        _case("serve-top-p-0", f"{s} --top-p 0", 2, "argument --top-p"),
        _case("serve-threads-0", f"{s} --threads 0", 2, "argument --threads"),
        _case("serve-max-context-negative", f"{s} --max-context-tokens -1", 2, "argument --max-context-tokens"),
        _case("serve-max-session-frames-0", f"{s} --max-session-frames 0", 2, "argument --max-session-frames"),
        _case("serve-public-without-token", "serve --model tiny --host 0.0.0.0 --port 0", 1,
              "refusing to listen on '0.0.0.0' without a token"),
        _case("serve-log-level", f"{s} --log-level loud", 2, "argument --log-level: invalid choice: 'loud'"),
    ]


def _other_cases() -> list[Case]:
    return [
        _case("world-n-0", "world --out {d}/world --n 0 --seed 0", 2,
              "argument --n: must be an integer in [1, 1000000]"),
        _case("world-fps-nan", "world --out {d}/world --n 1 --seed 0 --fps nan", 2, f"argument --fps: {FPS_RANGE}"),
        _case("world-too-big", "world --out {d}/world --n 1 --seed 0 --fps 240 --duration 86400", 1,
              "GiB in memory, at most 4): lower --duration, --fps or --resolution"),
        _case("bench-frames-0", "bench --frames 0", 2, "argument --frames: must be comma-separated integers in [1, "),
        _case("bench-speak-nan", "bench --speak-every nan", 2, "argument --speak-every: must be a finite number"),
        _case("bench-memory", "bench --memory sink:x", 2, "argument --memory: memory must be 'unbounded'"),
        _case("bench-memory-one-of-several", "bench --memory unbounded,sink:0", 2,
              "argument --memory: memory 'sink:0': SinkWindow needs max_tokens > 0"),
        _case("bench-memory-empty", "bench --memory ,", 2, "argument --memory: must name at least one memory policy"),
        _case("bench-streams", "bench --streams 0,4", 2, "argument --streams"),
_case("bench-p99-nan", "bench --capacity --p99 nan", 2, "argument --p99: must be a finite number in (0, "),
_case("bench-capacity-max-0", "bench --capacity --capacity-max 0", 2,
      "argument --capacity-max: must be an integer in [1, 4096]"),
_case("bench-p99-without-capacity", "bench --p99 0.5", 2, "--p99 needs --capacity"),
        _case("render-bad-json", "render {d}/conversation_bad.json", 1,
              "'{d}/conversation_bad.json' is not valid JSON: Expecting value: line 2 column 11"),
        _case("config-bad-yaml", "config {d}/bad.yaml", 1, "invalid YAML in '{d}/bad.yaml' (line 3, column 14)"),
    ]


def build(root: Path) -> list[Case]:
    """Write the corpus files under ``root`` and return every case."""
    write_files(root)
    return (_watch_cases() + _demo_cases() + _info_cases() + _eval_cases() + _train_cases() + _encode_cases()
            + _convert_cases() + _serve_cases() + _other_cases())


def all_cases() -> list[Case]:
    """The cases without writing any file (for test collection)."""
    return (_watch_cases() + _demo_cases() + _info_cases() + _eval_cases() + _train_cases() + _encode_cases()
            + _convert_cases() + _serve_cases() + _other_cases())

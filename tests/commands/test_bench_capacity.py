"""livecue bench --capacity (issue 20): the search over concurrency levels (exponential, then bisection, capped),
the real-time driver on the tiny model (every frame processed, latency from arrival), the CLI and its one-line errors.
No timing asserts on absolute speed: the search is tested with an injected measure function."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from livecue.bench import BenchConfig, CapacityLevel, find_capacity, run_realtime, stream_frames
from livecue.bench.capacity import _late_limit, _verdict
from livecue.bench.core import _Streams

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine():
    from livecue.config import preset
    from livecue.inference.engine import StreamEngine
    from livecue.model.build import build_model

    return StreamEngine(*build_model(preset("tiny")))


def fake(limit: int, tried: list[int]):
    """A measure that passes up to ``limit`` streams and records the levels asked for."""
    def measure(streams: int) -> CapacityLevel:
        tried.append(streams)
        ok = streams <= limit
        return CapacityLevel(streams=streams, frames=streams * 40, measured=streams * 35, seconds=20.0, cpu_seconds=1.0,
                             offered_fps=2.0 * streams, achieved_fps=2.0 * streams, p50_ms=10.0,
                             p99_ms=100.0 if ok else 900.0, max_ms=1000.0, backlog_growth_ms=0.0, replies=streams,
                             peak_mem_mb=1.0, passed=ok, aborted=False,
                             reason="ok" if ok else f"p99 900 ms > 500 ms at {streams}")
    return measure


@pytest.mark.parametrize(("limit", "cap", "order", "capacity", "capped"), [
    (5, 256, [1, 2, 4, 8, 6, 5], 5, False),   # 4 pass, 8 fails: bisect 6 (fail), 5 (pass)
    (4, 256, [1, 2, 4, 8, 6, 5], 4, False),
    (6, 256, [1, 2, 4, 8, 6, 7], 6, False),
    (1, 256, [1, 2], 1, False),
    (100, 256, [1, 2, 4, 8, 16, 32, 64, 128, 96, 112, 104, 100, 102, 101], 100, False),
    (1000, 6, [1, 2, 4, 6], 6, True),          # the cap is tried itself, then the search stops
    (1000, 8, [1, 2, 4, 8], 8, True),
    (1000, 1, [1], 1, True),
    (5, 6, [1, 2, 4, 6, 5], 5, False),         # the cap fails: bisect below it
])
def test_search_order_bounds_and_cap(limit, cap, order, capacity, capped):
    tried: list[int] = []
    result = find_capacity(None, BenchConfig(), 0.5, fps=2.0, max_streams=cap, measure=fake(limit, tried))
    assert tried == order and [lv.streams for lv in result.levels] == order
    assert result.capacity == capacity and result.capped is capped
    assert all(lv.passed == (lv.streams <= limit) for lv in result.levels)
    if capped:
        assert "cap of" in result.reason
    else:
        assert result.reason.startswith(f"{capacity} streams pass, {capacity + 1} fail: p99 900 ms")
    assert result.target_p99_ms == 500.0 and result.max_streams == cap
    json.dumps(result.to_dict())


def test_search_fails_at_one_stream():
    tried: list[int] = []
    result = find_capacity(None, BenchConfig(), 0.5, fps=2.0, measure=fake(0, tried))
    assert tried == [1] and result.capacity == 0 and not result.capped
    assert result.reason == "1 stream fails: p99 900 ms > 500 ms at 1"


def test_search_progress_counts_levels():
    from livecue.progress import Progress

    with Progress(None, enabled=False) as bar:
        find_capacity(None, BenchConfig(), 0.5, fps=2.0, seconds=3.0, measure=fake(2, []), progress=bar)
        assert bar.postfix["last"] == "3:fail" and bar.postfix["streams"] == 3  # 1, 2, 4, then 3


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_search_refuses_bad_target(bad):
    with pytest.raises(ValueError, match="finite p99"):
        find_capacity(None, BenchConfig(), bad, fps=2.0, measure=fake(1, []))
    with pytest.raises(ValueError, match="an engine, or a measure function and fps"):
        find_capacity(None, BenchConfig(), 0.5, measure=fake(1, []))


def test_late_limit_breaks_p99_and_is_about_one_percent():
    """With ``_late_limit(n)`` latencies over the target, numpy's p99 is over it whatever the others are (so the
    early abort never fails a level that could pass), and the limit is about 1 % of the frames (so it aborts early)."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 50, 99, 100, 101, 1000, 1234):
        m = _late_limit(n)
        assert 1 <= m <= math.ceil(0.01 * (n - 1)) + 1
        for _ in range(20):
            values = np.r_[rng.uniform(0.0, 1.0, n - m), 1.0 + rng.uniform(1e-9, 1.0, m)]  # target: 1.0
            assert np.percentile(rng.permutation(values), 99) > 1.0


def test_verdict_backlog_growth_fails_a_level_under_the_target():
    """Latency growing steadily (a queue that keeps growing) fails even with p99 under the target."""
    arrival = np.arange(40.0)[None, :] / 2
    level = CapacityLevel(streams=1, frames=40, measured=40, seconds=20.0, cpu_seconds=1.0, offered_fps=2.0,
                          achieved_fps=2.0, p50_ms=None, p99_ms=None, max_ms=None, backlog_growth_ms=0.0, replies=0,
                          peak_mem_mb=1.0, passed=False, aborted=False, reason="")
    growing = _verdict(replace(level), 0.01 + arrival / 50, arrival, 0.5)
    assert growing.p99_ms < 500 and growing.backlog_growth_ms > 125 and not growing.passed
    assert growing.reason.startswith("falling behind")
    steady = _verdict(replace(level), np.full((1, 40), 0.2), arrival, 0.5)
    assert steady.passed and steady.backlog_growth_ms == 0 and steady.p99_ms == pytest.approx(200)
    slow = _verdict(replace(level), np.full((1, 40), 0.6), arrival, 0.5)
    assert not slow.passed and slow.reason == "p99 600 ms > 500 ms"


def test_streams_stagger_replies(engine):
    runs = _Streams(engine, BenchConfig(speak_every=3.0, reply_tokens=2), streams=3, frames=20, fps=2.0)
    assert [np.flatnonzero(s).tolist() for s in runs.speak] == [[6, 12, 18], [7, 13, 19], [8, 14]]


def test_realtime_driver_processes_every_frame_in_real_time(engine):
    cfg = BenchConfig(speak_every=1.0, reply_tokens=3)
    level = run_realtime(engine, cfg, streams=3, seconds=2.0, p99_s=60.0, fps=4.0, warmup=2)
    n = stream_frames(2.0, 4.0)
    assert n == 8 and level.streams == 3 and level.frames == 3 * n and level.measured == 3 * (n - 2)
    assert not level.aborted and level.passed and level.reason.startswith("p99 ")
    # real time: the last frame arrives (n - 1) / fps s after the first, so the level lasts at least that long
    assert level.seconds >= (n - 1) / 4.0
    assert 0 <= level.p50_ms <= level.p99_ms <= level.max_ms
    assert level.offered_fps == 12.0 and 0 < level.achieved_fps <= 12.0 and level.cpu_seconds > 0
    assert level.replies >= 3  # a reply every 4 frames, staggered: at least one per stream after the warm-up
    json.dumps(level.__dict__)


def test_realtime_driver_aborts_a_hopeless_level(engine):
    """A target no engine meets (1 µs): the level stops once p99 cannot meet it, well before the stream ends."""
    level = run_realtime(engine, BenchConfig(speak_every=0.0), streams=2, seconds=30.0, p99_s=1e-6, fps=2.0,
                         warmup=1)
    assert level.aborted and not level.passed and level.reason.startswith("aborted after")
    assert level.frames < 2 * 60 and level.seconds < 10
    assert level.p99_ms > 1e-3


def test_cli_capacity(tmp_path, capsys):
    from livecue.cli import main

    out = tmp_path / "capacity.json"
    assert main(["bench", "--model", "tiny", "--capacity", "--p99", "0.5", "--capacity-seconds", "3",
                 "--capacity-max", "4", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())["capacity"]
    streams = [lv["streams"] for lv in data["levels"]]
    assert streams[:2] == [1, 2] and max(streams) <= 4 and data["max_streams"] == 4
    assert data["target_p99_ms"] == 500.0 and data["stream_fps"] == 2.0 and data["max_batch"] == 16
    assert all(lv["frames"] == lv["streams"] * 6 or lv["aborted"] for lv in data["levels"])
    assert 0 <= data["capacity"] <= 4 and data["reply_tokens"] == 15
    text = capsys.readouterr().out
    assert "### capacity:" in text and "| streams | frames |" in text
    assert "end-to-end / pure model time" not in text  # --capacity replaces the stream marks and the overhead


@pytest.mark.parametrize(("args", "message"), [
    (["--capacity", "--p99", "0"], "argument --p99: must be a finite number in (0, "),
    (["--capacity", "--p99", "nan"], "argument --p99: must be a finite number in (0, "),
    (["--capacity", "--p99", "-0.5"], "got '-0.5'"),
    (["--capacity", "--p99", "inf"], "got 'inf'"),
    (["--capacity", "--capacity-max", "0"], "argument --capacity-max: must be an integer in [1, 4096]"),
    (["--capacity", "--capacity-seconds", "nan"], "argument --capacity-seconds: must be a finite number"),
    (["--capacity", "--capacity-fps", "0"], "argument --capacity-fps: must be a finite number in (0, 240]"),
    (["--capacity", "--capacity-max-batch", "0"], "argument --capacity-max-batch: must be an integer"),
    (["--p99", "0.5"], "--p99 needs --capacity"),
    (["--capacity-max", "4", "--capacity-seconds", "3"], "--capacity-max, --capacity-seconds need --capacity"),
])
def test_cli_bad_values_are_one_line(args, message, capsys):
    from livecue.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--model", "tiny", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.strip().count("\n") == 0


def test_compiled_engine_is_warmed_up_untimed_before_each_level(engine, monkeypatch):
    """With --compile, every level first runs untimed (2 frames a stream, fast, no target) so that new shapes are
    traced before the clock starts; an eager engine goes straight to the timed run."""
    import livecue.bench.capacity as bench
    from livecue.inference.options import FastPath

    calls = []
    real = bench.run_realtime

    def spy(eng, cfg, streams, seconds, p99_s, **kw):
        calls.append((streams, seconds, p99_s, kw.get("fps")))
        return real(eng, cfg, streams, seconds, p99_s, **kw)

    monkeypatch.setattr(bench, "run_realtime", spy)
    cfg = BenchConfig(speak_every=0.0)
    bench.find_capacity(engine, cfg, 30.0, seconds=1.0, max_streams=2)
    assert calls == [(1, 1.0, 30.0, 2.0), (2, 1.0, 30.0, 2.0)]
    calls.clear()
    monkeypatch.setattr(engine, "fast", FastPath(compile=True))  # read by the search only: the step stays eager
    result = bench.find_capacity(engine, cfg, 30.0, seconds=1.0, max_streams=1)
    assert calls == [(1, 2 / bench.WARM_FPS, math.inf, bench.WARM_FPS), (1, 1.0, 30.0, 2.0)]
    assert [lv.streams for lv in result.levels] == [1] and result.levels[0].frames == 2

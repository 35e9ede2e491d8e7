"""Progress of ``livecue encode`` and ``livecue bench`` on stderr: periodic plain lines off a terminal
(LIVECUE_PROGRESS_INTERVAL=0: a line per update), a tqdm bar on one; stdout and ``--json`` keep only the results.
``watch``'s live status line is drawn on a terminal only."""

import io
import json

import numpy as np
import pytest

from livecue import cli
from livecue.commands.display import Progress as StatusLine
from livecue.inference.stats import StreamStats


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def videos(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "videos"
    folder.mkdir()
    for name, frames in (("a", 5), ("b", 3)):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (frames, 24, 40, 3), dtype=np.uint8))
    return folder


def encode(videos, out):
    return cli.main(["encode", str(videos), "--out", str(out), "--model", "tiny", "--dtype", "float32",
                     "--batch-size", "2"])


def test_encode_prints_progress_lines_off_a_terminal_and_says_what_a_resumed_run_keeps(videos, tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")
    out = tmp_path / "cache"
    assert encode(videos, out) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "\r" not in captured.err and "\x1b" not in captured.err
    assert any(line.startswith("encode:  50% 1/2") for line in lines)
    assert lines[-1].startswith("encode: 100% 2/2") and "video" in lines[-1] and "frames=8" in lines[-1]
    assert any("frames=2" in line for line in lines)  # a batch of 2 frames shows before the first video is done
    # stdout: the result only
    assert captured.out.splitlines() == [line for line in captured.out.splitlines() if line.startswith("cache ")]
    assert "2 videos indexed (2 encoded here, 0 already done, 0 failed)" in captured.out

    (out / "features" / "b.npy.safetensors").unlink()  # as if killed before the second video
    assert encode(videos, out) == 0
    captured = capsys.readouterr()
    assert f"1 of 2 videos already encoded in {str(out)!r}: resuming with the other 1" in captured.err
    assert captured.err.splitlines()[-1].startswith("encode: 100% 1/1")
    assert "2 videos indexed (1 encoded here, 1 already done, 0 failed)" in captured.out
    assert "encode:" not in captured.out and "resuming" not in captured.out


def test_encode_shows_a_bar_on_a_terminal(videos, tmp_path, capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert encode(videos, tmp_path / "cache") == 0
    assert "\r" in terminal.getvalue() and "2/2" in terminal.getvalue()
    out = capsys.readouterr().out
    assert "\r" not in out and "encode:" not in out and out.startswith("cache ")


def test_encode_progress_off(videos, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")
    assert encode(videos, tmp_path / "cache") == 0
    err = capsys.readouterr().err.splitlines()  # only the random-weights notice of the tiny tower, no progress
    assert err == ["livecue encode: tiny: random weights (vision), for tests and benchmarks (pass --model default "
                   "for the trained default model)"]


BENCH = ["bench", "--model", "tiny", "--frames", "4,8", "--reply-tokens", "2", "--overhead-frames", "4",
         "--overhead-repeats", "2", "--threads", "1"]


def test_bench_prints_progress_lines_off_a_terminal_and_keeps_results_clean(tmp_path, capsys, monkeypatch):
    from livecue.bench import WARMUP

    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")
    out = tmp_path / "bench.json"
    assert cli.main([*BENCH, "--memory", "unbounded,sink:64", "--streams", "1,2", "--streams-frames", "2",
                     "--json", str(out)]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert "\r" not in captured.err and "\x1b" not in captured.err
    for memory in ("unbounded", "sink:64"):
        mine = [line for line in err if line.startswith(f"bench stream (memory {memory}):")]
        assert len(mine) >= 8 and mine[-1].startswith(f"bench stream (memory {memory}): 100% 8/8")
        assert "cached=" in mine[-1] and "ms_per_frame=" in mine[-1]
    overhead = [line for line in err if line.startswith("bench overhead:")]
    assert overhead[-1].startswith("bench overhead: 100% 8/8") and "repeat=2/2" in overhead[-1]
    streams = 3 * (1 + 2) * (2 + WARMUP)  # three modes, 1 and 2 streams, frames + warm-up each
    runs = [line for line in err if line.startswith("bench streams:")]
    assert runs[-1].startswith(f"bench streams: 100% {streams}/{streams}") and "streams=2" in runs[-1]
    assert any("mode=continuous" in line for line in runs) and any("mode=sequential" in line for line in runs)
    # stdout: the results, never a progress line; the JSON file: the results
    assert not [line for line in captured.out.splitlines() if line.startswith("bench")]
    assert "end-to-end / pure model time" in captured.out and "| streams |" in captured.out
    data = json.loads(out.read_text())
    assert [s["memory"] for s in data["streams"]] == ["unbounded", "sink:64"] and len(data["multi_stream"]) == 6


def test_bench_shows_bars_on_a_terminal(capsys, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert cli.main(BENCH) == 0
    err = terminal.getvalue()
    assert "\r" in err and "bench stream (memory unbounded)" in err and "bench overhead" in err
    out = capsys.readouterr().out
    assert "\r" not in out and "bench stream" not in out and "frames/s" in out


def test_watch_status_line_is_drawn_on_a_terminal_only(monkeypatch):
    stats = StreamStats()
    pipe = io.StringIO()
    line = StatusLine(enabled=True, file=pipe)
    line.show(stats)
    line.clear()
    assert pipe.getvalue() == "" and not line.enabled

    terminal = Terminal()
    line = StatusLine(enabled=True, file=terminal)
    line.show(stats)
    assert terminal.getvalue().startswith("\r  frames 0  t 0.0s") and terminal.getvalue().endswith("\x1b[K")
    line.clear()
    assert terminal.getvalue().endswith("\r\x1b[K")

    quiet = Terminal()
    StatusLine(enabled=False, file=quiet).show(stats)
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")
    StatusLine(enabled=True, file=quiet).show(stats)
    assert quiet.getvalue() == ""

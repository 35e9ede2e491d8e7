"""livecue.progress: a tqdm bar on a terminal, periodic plain lines otherwise, nothing when disabled."""

import io

import pytest

from livecue.progress import Progress, interval_from_env, track


def test_line_mode_prints_whole_lines_and_a_last_one():
    out = io.StringIO()
    with Progress(4, desc="encode", unit="video", file=out, interval=0) as bar:
        for _ in range(4):
            bar.update(1, loss=0.123456)
        bar.write("a result line")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines[0].startswith("encode:  25% 1/4") and "loss=0.1235" in lines[0]
    assert lines[3].startswith("encode: 100% 4/4") and lines[4] == "a result line" and len(lines) == 5


def test_line_mode_waits_for_the_interval_then_ends_with_a_line():
    out = io.StringIO()
    with Progress(None, desc="bench", unit="frame", file=out, interval=3600) as bar:
        bar.update(7)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench: 7frame [")


def test_terminal_mode_is_a_tqdm_bar_and_disabled_is_silent(monkeypatch):
    out = io.StringIO()
    assert list(track(range(3), desc="x", file=out, tty=True)) == [0, 1, 2]
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()
    quiet = io.StringIO()
    with Progress(3, file=quiet, enabled=False, tty=True) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")
    with Progress(3, file=quiet, interval=0) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "5")
    assert interval_from_env() == 5.0
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="LIVECUE_PROGRESS_INTERVAL must be a number of seconds, got 'soon'"):
        interval_from_env()

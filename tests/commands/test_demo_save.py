"""`livecue demo --save OUT.mp4`: the captioned video, its .srt/.vtt subtitles (the same cues as the burned-in
captions) and progress on stderr while it is written (periodic lines off a terminal, a tqdm bar on one), never on
stdout. Runs the tiny random model on a short world stream: fast, and it narrates on every frame.
"""

from __future__ import annotations

import io
import re
import sys

import av
import pytest

from livecue import cli
from livecue.data.captions import HOLD_SECONDS
from livecue.data.subtitles import cues_from_captions, to_srt, to_vtt

ARGS = ["demo", "--model", "tiny", "--fast", "--duration", "3", "--seed", "1", "--threshold", "0.99",
        "--max-reply-tokens", "4", "--question", "What do you see?", "--at", "1.2"]
EVENT = re.compile(r"^\[\s*(\d+\.\d)s\] (.*)$")


def printed_captions(out: str) -> list[tuple[float, str]]:
    """The narrations and answers the demo printed, as (t, caption text) (answers: ``Q: … A: …``)."""
    lines = out.splitlines()
    captions = []
    for i, line in enumerate(lines):
        m = EVENT.match(line)
        if not m or m.group(2).startswith("("):
            continue
        t, text = float(m.group(1)), m.group(2)
        if text.startswith("Q: ") and i + 1 < len(lines) and lines[i + 1].lstrip().startswith("A: "):
            text = f"{text} {lines[i + 1].strip()}"
        captions.append((t, text))
    return captions


def run_save(tmp_path, capsys, name: str) -> tuple[str, str]:
    out_path = tmp_path / name
    rc = cli.main([*ARGS, "--save", str(out_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out, captured.err


def test_save_writes_the_video_and_srt_vtt_with_the_same_cues(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIVECUE_PROGRESS_INTERVAL", "0")  # off a terminal: a line per frame, then a last one
    out, err = run_save(tmp_path, capsys, "out.mp4")
    video, srt, vtt = tmp_path / "out.mp4", tmp_path / "out.srt", tmp_path / "out.vtt"
    assert f"wrote {video} (subtitles: out.srt, out.vtt)" in out
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6  # 3 s at the model's 2 fps
    captions = printed_captions(out)
    assert len(captions) >= 3 and any(text.startswith("Q: What do you see? A: ") for _, text in captions)
    srt_text, vtt_text = srt.read_text(encoding="utf-8"), vtt.read_text(encoding="utf-8")
    # the cue times are the events' stream times (printed to 0.1 s); the texts are the printed ones
    starts = re.findall(r"^(\d\d):(\d\d):(\d\d),(\d{3}) --> ", srt_text, re.M)
    assert len(starts) == len(captions)
    for (h, m, s, ms), (t, _) in zip(starts, sorted(captions, key=lambda c: c[0])):
        assert abs(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 - t) <= 0.05
    texts = [block.splitlines()[2:] for block in srt_text.strip().split("\n\n")]
    assert sorted(" ".join(t) for t in texts) == sorted(" ".join(text.split()) for _, text in captions)
    # the VTT holds the same cues (the writers are checked against a golden text in tests/data/test_subtitles.py)
    assert vtt_text.startswith("WEBVTT\n\n") and vtt_text.count(" --> ") == len(captions)
    assert srt_text.replace(",", ".").count(" --> ") == vtt_text.count(" --> ")
    # progress: on stderr, naming the work and ending at every frame; never on stdout
    assert re.search(r"^save: .*6/6 ", err, re.M), err
    assert "save:" not in out and "frame/s" not in out


def test_save_cues_are_the_burned_in_captions(tmp_path, capsys, monkeypatch):
    """The sidecars are written from exactly the captions handed to the video writer."""
    from livecue.commands import demo
    from livecue.data import captions as captions_module

    seen = {}
    real = captions_module.write_captioned

    def spy(path, frames, captions, fps):
        seen["captions"] = list(captions)
        return real(path, frames, captions, fps)

    monkeypatch.setattr(captions_module, "write_captioned", spy)
    monkeypatch.setenv("LIVECUE_PROGRESS", "0")  # progress off: nothing on stderr from it
    out, err = run_save(tmp_path, capsys, "clip.mkv")
    cues = cues_from_captions(seen["captions"], hold=HOLD_SECONDS)
    assert cues and (tmp_path / "clip.srt").read_text(encoding="utf-8") == to_srt(cues)
    assert (tmp_path / "clip.vtt").read_text(encoding="utf-8") == to_vtt(cues)
    assert "save:" not in err
    assert demo.build_parser().format_help().count("OUT.srt") == 1


def test_save_shows_a_bar_on_a_terminal(tmp_path, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("LIVECUE_PROGRESS", raising=False)
    rc = cli.main([*ARGS, "--save", str(tmp_path / "out.mp4")])
    assert rc == 0
    bar = terminal.getvalue()
    assert "\r" in bar and re.search(r"save: 100%\|.*\| 6/6 ", bar), bar  # tqdm, redrawn in place
    assert "save:" not in capsys.readouterr().out


@pytest.mark.parametrize("name, words", [("out.avi", "must end in .mp4"), ("missing/out.mp4", "does not exist")])
def test_save_refuses_a_bad_path_before_the_model_loads(tmp_path, capsys, name, words):
    rc = cli.main([*ARGS, "--save", str(tmp_path / name)])
    assert rc == 1 and words in capsys.readouterr().err
    assert not list(tmp_path.glob("*.srt"))

"""livecue.data.subtitles: cues from captions and the SRT/WebVTT writers, against a golden text.

The same golden files (tests/data/subtitles_golden/) check the page's JavaScript writer
(serve/static/subtitles.js) in tests/serve/test_browser.py, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livecue.data.subtitles import (
    Cue,
    caption_text,
    clean_text,
    cues_from_captions,
    to_srt,
    to_vtt,
    write_sidecars,
)

GOLDEN = Path(__file__).parent / "subtitles_golden"


def golden_captions() -> list[tuple[float, str]]:
    """The golden input: events (reply/answer) as the captions the demo and the page make of them."""
    events = json.loads((GOLDEN / "captions.json").read_text(encoding="utf-8"))
    return [(e["t"], caption_text(e["kind"], e["text"], e.get("query"))) for e in events]


def golden(name: str) -> str:
    return (GOLDEN / name).read_bytes().decode("utf-8")


def test_srt_and_vtt_match_the_golden_text():
    cues = cues_from_captions(golden_captions())
    assert to_srt(cues) == golden("golden.srt")
    assert to_vtt(cues) == golden("golden.vtt")


def test_cue_timing_rules():
    # until the next later caption, or the hold; captions at one time share their end; sorted, stable
    cues = cues_from_captions([(5.0, "c"), (0.0, "a"), (1.0, "b1"), (1.0, "b2")], hold=2.0)
    assert [(c.start, c.end, c.text) for c in cues] == [(0.0, 1.0, "a"), (1.0, 3.0, "b1"), (1.0, 3.0, "b2"),
                                                        (5.0, 7.0, "c")]
    assert cues_from_captions([(1.0, " \n\t "), (2.0, "")]) == []  # nothing to show: no cue
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n"


def test_half_milliseconds_round_up_and_an_end_follows_its_start():
    srt = to_srt([Cue(0.0625, 0.0625, "x")])  # 62.5 ms: up (as JavaScript's floor(x + 0.5), not banker's 62)
    assert srt == "1\n00:00:00,063 --> 00:00:00,064\nx\n"


def test_text_is_cleaned_and_escaped():
    assert clean_text("  one \r\n\n two\rthree\n") == "one\ntwo\nthree"
    cue = [Cue(0, 1, "a --> b <i> & c")]
    assert to_srt(cue).splitlines()[2] == "a -> b <i> & c"
    assert to_vtt(cue).splitlines()[3] == "a --&gt; b &lt;i&gt; &amp; c"


@pytest.mark.parametrize("captions, hold, words", [
    ([(0.0, "a")], 0, "hold must be a finite number of seconds > 0"),
    ([(0.0, "a")], float("nan"), "hold must be a finite number"),
    ([(-1.0, "a")], 2.5, "caption time must be a finite number of seconds >= 0, got -1.0"),
    ([(float("inf"), "a")], 2.5, "caption time must be a finite number"),
])
def test_bad_input_is_named(captions, hold, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("[", r"\[")):
        cues_from_captions(captions, hold=hold)


def test_write_sidecars_beside_the_video(tmp_path):
    cues = cues_from_captions([(0.5, "hello")])
    srt, vtt = write_sidecars(tmp_path / "out.mp4", cues)
    assert (srt.name, vtt.name) == ("out.srt", "out.vtt")
    assert srt.read_text(encoding="utf-8") == "1\n00:00:00,500 --> 00:00:03,000\nhello\n"
    assert vtt.read_text(encoding="utf-8") == "WEBVTT\n\n00:00:00.500 --> 00:00:03.000\nhello\n"

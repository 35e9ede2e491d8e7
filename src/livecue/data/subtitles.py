"""Subtitles of a stream: the model's narrations and answers as timed cues, written as SubRip (.srt) or WebVTT (.vtt).

``livecue demo --save out.mp4`` writes ``out.srt`` and ``out.vtt`` beside the video with the cues it burns in; the
web page's transcript export (``serve/static/subtitles.js``) writes the same format in the browser. The two writers
are kept identical by one golden text (``tests/data/subtitles_golden/``) that both are tested against, so a change
here is a change there.

    captions = [(0.5, "A red circle appears."), (4.0, caption_text("answer", "Red.", query="What colour?"))]
    text = to_srt(cues_from_captions(captions))

The format, exactly (both writers):

* a caption's text: lines split at ``\\r\\n``, ``\\r`` or ``\\n``, control characters (U+0000-U+001F but tab,
  U+007F) removed, spaces and tabs stripped from each line, empty lines dropped (a blank line would end an SRT cue);
  a caption with no text left gives no cue;
* a cue runs from its caption's time for ``hold`` seconds (default 2.5, as the burned-in captions) or until the next
  caption that starts later, whichever is sooner; cues are in time order;
* times in whole milliseconds, ``floor(seconds * 1000 + 0.5)`` (never below 0; an end at least 1 ms after its
  start): ``HH:MM:SS,mmm`` in SRT, ``HH:MM:SS.mmm`` in WebVTT;
* SRT: ``N`` (from 1), ``start --> end``, the text lines, then an empty line between cues; ``-->`` in a text becomes
  ``->`` (it would read as a timing line);
* WebVTT: ``WEBVTT``, an empty line, then per cue ``start --> end`` and the text lines, an empty line between cues;
  ``&``, ``<`` and ``>`` escaped (cue text is markup there);
* the text ends with one newline (an empty SRT is the empty string).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOLD = 2.5  # seconds a cue stays at most (data.captions.HOLD_SECONDS for the burned-in captions)
_NEWLINE = re.compile(r"\r\n|\r|\n")
_EDGE_SPACE = re.compile(r"^[ \t]+|[ \t]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab (and the line breaks, split at)


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``text`` shown from ``start`` to ``end`` (stream seconds)."""

    start: float
    end: float
    text: str


def caption_text(kind: str, text: str, query: str | None = None) -> str:
    """What a subtitle shows for an event: a narration's text, or ``Q: <question> A: <answer>`` for an answer."""
    return f"Q: {query} A: {text}" if kind == "answer" else text


def clean_text(text: str) -> str:
    """A caption's text as subtitle lines: split at line breaks, control characters removed, spaces/tabs stripped,
    empty lines dropped."""
    lines = (_EDGE_SPACE.sub("", _CONTROL.sub("", line)) for line in _NEWLINE.split(text))
    return "\n".join(line for line in lines if line)


def cues_from_captions(captions: Iterable[tuple[float, str]], hold: float = DEFAULT_HOLD) -> list[Cue]:
    """Timed cues for ``(t, text)`` captions: each from ``t`` for ``hold`` seconds or until the next later caption.

    Raises:
        ValueError: ``hold`` is not a finite number > 0, or a time is not a finite number >= 0.
    """
    if not (isinstance(hold, (int, float)) and math.isfinite(hold) and hold > 0):
        raise ValueError(f"hold must be a finite number of seconds > 0, got {hold!r}")
    items: list[tuple[float, str]] = []
    for t, text in captions:
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise ValueError(f"a caption time must be a finite number of seconds >= 0, got {t!r}")
        cleaned = clean_text(text)
        if cleaned:
            items.append((float(t), cleaned))
    items.sort(key=lambda item: item[0])  # stable: captions at one time keep their order
    cues = []
    for i, (t, text) in enumerate(items):
        end = t + hold
        later = next((s for s, _ in items[i + 1:] if s > t), None)
        if later is not None and later < end:
            end = later
        cues.append(Cue(t, end, text))
    return cues


def _millis(seconds: float) -> int:
    return max(0, math.floor(seconds * 1000 + 0.5))


def _stamp(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _timing(cue: Cue, separator: str) -> str:
    start = _millis(cue.start)
    end = max(_millis(cue.end), start + 1)
    return f"{_stamp(start, separator)} --> {_stamp(end, separator)}"


def to_srt(cues: Sequence[Cue]) -> str:
    """The cues as SubRip text (see the module docstring for the exact format)."""
    blocks = []
    for cue in cues:
        text = clean_text(cue.text).replace("-->", "->")
        if text:
            blocks.append(f"{len(blocks) + 1}\n{_timing(cue, ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    """The cues as WebVTT text (see the module docstring for the exact format)."""
    blocks = []
    for cue in cues:
        text = clean_text(cue.text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if text:
            blocks.append(f"{_timing(cue, '.')}\n{text}\n")
    return "\n".join(["WEBVTT\n", *blocks])


def write_sidecars(video: str | Path, cues: Sequence[Cue]) -> tuple[Path, Path]:
    """Write ``<video>.srt`` and ``<video>.vtt`` beside ``video`` (same name, other suffix); their paths."""
    video = Path(video)
    srt, vtt = video.with_suffix(".srt"), video.with_suffix(".vtt")
    srt.write_text(to_srt(cues), encoding="utf-8")
    vtt.write_text(to_vtt(cues), encoding="utf-8")
    return srt, vtt

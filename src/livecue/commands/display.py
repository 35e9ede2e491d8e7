"""What the streaming commands print: one line per event, the end-of-stream summary and the live progress line.

Shared by ``watch`` (a local model), ``watch --server`` (events from a remote server, as JSON dicts) and ``demo``,
so an event reads the same whichever door it came through::

    [     4.5s] You pick up the knife
    [    12.5s] Q: What is on the table?
                A: A cutting board and two onions.
    [    14.0s] (3 frames dropped: behind real time)
    20 frames (9.5 s of stream) in 3.1 s: 6.5 FPS, 2 replies, 1 answers, 0 dropped
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ..inference.events import Event
from ..inference.stats import StreamStats

_STAMP = 12  # the width of "[    12.5s] "


def format_event(event: Event | dict[str, Any]) -> str | None:
    """The line(s) to print for an event (an :class:`~livecue.inference.events.Event` or its JSON dict); None for
    events that are not shown (silence, token deltas, ...)."""
    data = event if isinstance(event, dict) else event.to_dict()
    kind = data.get("type")
    stamp = f"[{float(data.get('t') or 0.0):8.1f}s] "
    if kind == "reply":
        return f"{stamp}{data['text']}"
    if kind == "answer":
        return f"{stamp}Q: {data['query']}\n{'':{_STAMP}}A: {data['text']}"
    if kind == "dropped":
        return f"{stamp}({data['count']} frames dropped: {data['reason']})"
    if kind == "error":
        return f"{stamp}error: {data['message']}"
    return None


def format_reference(t: float, text: str) -> str:
    """A reference event (what really happened at ``t``), printed beside the model's lines by ``demo``."""
    return f"{'':{_STAMP}}[ref {t:5.1f}s] {text}"


def format_summary(stats: StreamStats, *, interrupted: bool = False, sent: int | None = None,
                   replies: str = "replies", jsonl: str | None = None) -> str:
    """The end-of-stream line: frames (``sent`` ones too, for a remote stream), stream and wall time, speed, counts.

    Args:
        stats: the stream's counters.
        interrupted: the stream was stopped before its end.
        sent: frames sent to a server (``watch --server``), when they may differ from those watched.
        replies: what to call the replies (``demo`` says "narrations").
        jsonl: the file the events were written to, if any.
    """
    s = stats
    frames = f"{sent} frames sent, {s.frames} watched" if sent is not None else f"{s.frames} frames"
    return (f"{'interrupted: ' if interrupted else ''}{frames} ({s.last_t:.1f} s of stream) in {s.wall:.1f} s: "
            f"{s.fps:.1f} FPS, {s.replies} {replies}, {s.answers} answers, {s.dropped} dropped"
            + (f"; events in {jsonl}" if jsonl else ""))


class Progress:
    """A one-line progress display on stderr (terminals only), refreshed at most 5 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def show(self, stats: StreamStats) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        sys.stderr.write(f"\r  frames {stats.frames}  t {stats.last_t:.1f}s  {stats.fps:.1f} FPS  "
                         f"dropped {stats.dropped}  replies {stats.replies}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


__all__ = ["Progress", "format_event", "format_reference", "format_summary"]

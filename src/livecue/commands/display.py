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

import os
import shutil
import sys
import time
from typing import IO, Any

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
    """``watch``'s live status line on stderr (frames, stream time, speed, drops, replies), redrawn in place at most 5
    times a second between the event lines, cleared before each of them.

    A status line, not a bar (a live stream has no total; finite work uses :mod:`livecue.progress`): it is drawn only
    on a terminal, so a pipe or a log file never gets carriage returns or escape codes, and not at all with
    ``enabled=False`` (``--quiet``) or ``LIVECUE_PROGRESS=0``.

    Args:
        enabled: False shows nothing.
        file: where the line goes (default ``sys.stderr``, read when the line is made).
    """

    def __init__(self, enabled: bool = True, file: IO[str] | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.enabled = (enabled and os.environ.get("LIVECUE_PROGRESS", "1") != "0"
                        and bool(getattr(self.file, "isatty", lambda: False)()))
        self._last = 0.0
        self._shown = False

    def show(self, stats: StreamStats) -> None:
        """Redraw the line with ``stats`` (at most every 0.2 s), cut to the terminal's width so it never wraps."""
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        line = (f"  frames {stats.frames}  t {stats.last_t:.1f}s  {stats.fps:.1f} FPS  dropped {stats.dropped}  "
                f"replies {stats.replies}")
        width = shutil.get_terminal_size().columns - 1
        self.file.write(f"\r{line[:width]}\x1b[K")
        self.file.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (before an event line is printed, and at the end)."""
        if self._shown:
            self.file.write("\r\x1b[K")
            self.file.flush()
            self._shown = False


__all__ = ["Progress", "format_event", "format_reference", "format_summary"]

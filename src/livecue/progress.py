"""Progress of long work (training, evaluation, the θ sweep, encoding, benchmarks, ``--save``), on stderr.

One helper for every command, so that progress looks the same everywhere and never mixes into results (stdout):

* on a terminal: a tqdm bar, redrawn in place;
* not on a terminal (a pipe, a log file, CI): one plain line every ``interval`` seconds (default 30, environment
  ``LIVECUE_PROGRESS_INTERVAL``) and one when the work ends, formatted by tqdm
  (``encode: 40/120 [00:31<01:02, 1.28 video/s]``), never a carriage return;
* ``enabled=False`` (``--quiet``; environment ``LIVECUE_PROGRESS=0``): nothing.

Lines the command prints while a bar is shown go through :meth:`Progress.write` (tqdm's ``write`` on a terminal,
so the bar is redrawn below them).

    with Progress(total=len(videos), desc="encode", unit="video") as bar:
        for video in videos:
            ...
            bar.update(1, loss=0.31)          # optional postfix values
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm

DEFAULT_INTERVAL = 30.0


def interval_from_env() -> float:
    """Seconds between progress lines when stderr is not a terminal (``LIVECUE_PROGRESS_INTERVAL``, default 30)."""
    raw = os.environ.get("LIVECUE_PROGRESS_INTERVAL", "")
    try:
        value = float(raw) if raw else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"LIVECUE_PROGRESS_INTERVAL must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise ValueError(f"LIVECUE_PROGRESS_INTERVAL must be >= 0 seconds, got {raw!r}")
    return value


class Progress:
    """Progress of ``total`` units of work (None: unknown) on ``file`` (default stderr).

    Args:
        total: how many units there are, or None.
        desc: what is being done, first on the line (``"train"``, ``"encode"``).
        unit: the unit's name (``"step"``, ``"video"``, ``"frame"``).
        enabled: False shows nothing (``--quiet``); None: on unless ``LIVECUE_PROGRESS=0``.
        interval: seconds between lines when ``file`` is not a terminal (None: :func:`interval_from_env`).
        file: where progress goes (default ``sys.stderr``, read when the bar is made).
        tty: force terminal (True) or line (False) mode; None: ``file.isatty()``.
    """

    def __init__(self, total: int | None = None, *, desc: str = "", unit: str = "it", enabled: bool | None = None,
                 interval: float | None = None, file: IO[str] | None = None, tty: bool | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self.enabled = (os.environ.get("LIVECUE_PROGRESS", "1") != "0") if enabled is None else enabled
        self.tty = bool(getattr(self.file, "isatty", lambda: False)()) if tty is None else tty
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.interval = interval_from_env() if interval is None else interval
        self._start = time.monotonic()
        self._last_line = self._start
        self._closed = False
        self._printed: int | None = None  # line mode: the count the last line showed
        self._bar: tqdm | None = None
        if self.enabled and self.tty:
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True, leave=True)

    # ---- updates ---------------------------------------------------------------------------------------------------
    def update(self, n: int = 1, **postfix: Any) -> None:
        """``n`` more units done; ``postfix`` values (e.g. ``loss=0.31``) are shown after the counts."""
        self.n += n
        if postfix:
            self.postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(self._postfix_values(), refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self._print_line()

    def set_total(self, total: int | None) -> None:
        """The total became known (or changed)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def write(self, message: str) -> None:
        """Print a line of the command's own while progress is shown (on ``file``; the bar is redrawn below)."""
        if self._bar is not None:
            self._bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        """The work ended: a terminal bar stays as its last state; line mode prints a final line."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._printed != self.n:
            self._print_line()

    # ---- helpers -----------------------------------------------------------------------------------------------------
    def line(self) -> str:
        """The current state as one line (what line mode prints)."""
        elapsed = time.monotonic() - self._start
        text = tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit, ncols=0)
        values = self._postfix_values()
        if values:
            text += ", " + ", ".join(f"{k}={v}" for k, v in values.items())
        return text

    def _postfix_values(self) -> dict[str, str]:
        return {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in self.postfix.items()}

    def _print_line(self) -> None:
        self._printed = self.n
        print(self.line(), file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(iterable: Iterable[Any], *, total: int | None = None, desc: str = "", unit: str = "it",
          enabled: bool | None = None, file: IO[str] | None = None, tty: bool | None = None) -> Iterator[Any]:
    """Iterate ``iterable`` showing :class:`Progress` (``total`` defaults to ``len(iterable)`` when it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(total, desc=desc, unit=unit, enabled=enabled, file=file, tty=tty) as bar:
        for item in iterable:
            yield item
            bar.update(1)

"""Checked command-line values: argparse ``type=`` helpers that refuse a non-finite or out-of-range number in one line.

Every numeric option of a command takes one of these, so argparse refuses a bad value with one line naming the option
and the allowed range, e.g. ``livecue watch: error: argument --fps: must be a finite number in (0, 240], got 'nan'``
(exit 2). Put the range in the option's help with :attr:`Number.range`. Pure Python (no torch), so data-layer
converters and the commands share them; :mod:`livecue.commands._common` re-exports them.
"""

from __future__ import annotations

import argparse
import math

MAX_FPS = 240.0  # the highest stream clock (frames per second) livecue accepts anywhere
MAX_REPLY_TOKENS = 4096  # the largest reply cap
MAX_SECONDS = 7 * 24 * 3600.0  # a week: the longest stream time / duration a command accepts
MAX_INT = 2**31 - 1  # the largest count any option takes (seeds, frame counts, ...)


class Number:
    """An argparse ``type=`` that parses a number and checks it is finite and in a stated range.

    Args:
        kind: ``float`` or ``int``.
        lo, hi: bounds (None: unbounded on that side).
        lo_open, hi_open: exclude the bound itself.

    Raises (when called):
        argparse.ArgumentTypeError: one line, ``must be a finite number in (0, 240], got 'nan'``.
    """

    def __init__(self, kind: type = float, lo: float | None = None, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> None:
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = "integer" if kind is int else "number"  # argparse names the type by it

    @property
    def range(self) -> str:
        """The allowed interval, e.g. ``(0, 240]`` or ``[0, 1]`` or ``>= 1``."""
        def fmt(v: float) -> str:
            return f"{v:g}" if self.kind is float else str(int(v))

        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{fmt(self.lo)}, {fmt(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {fmt(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {fmt(self.hi)}"
        return "any finite value"

    def error(self, text: str) -> argparse.ArgumentTypeError:
        """The one-line error for the value written ``text``: ``must be a finite number in (0, 240], got 'nan'``."""
        what = "an integer" if self.kind is int else "a finite number"
        where = f" in {self.range}" if self.lo is not None and self.hi is not None else \
            f" {self.range}" if self.lo is not None or self.hi is not None else ""
        return argparse.ArgumentTypeError(f"must be {what}{where}, got {text!r}")

    def validate(self, name: str, value: object) -> float | int:
        """``value`` as this checker's kind (``2`` -> ``2.0`` for a float option) if it is a number in range;
        otherwise ValueError naming ``name`` in argparse's words: ``stream.fps must be a finite number in (0, 240],
        got 'nan'``. For values that do not come through argparse (configs, messages, Python)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                self.kind is int and isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{name} {self.error(str(value))}")
        try:
            return self.kind(self.check(value))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"{name} {e}") from None

    def check(self, value: float, text: str | None = None) -> float:
        """``value`` if it is finite and in range, else raise the one-line error."""
        text = str(value) if text is None else text
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(text)
        if self.lo is not None and (value < self.lo or self.lo_open and value == self.lo):
            raise self.error(text)
        if self.hi is not None and (value > self.hi or self.hi_open and value == self.hi):
            raise self.error(text)
        return value

    def __call__(self, text: str) -> float | int:
        raw = str(text).strip()
        try:
            if self.kind is int:
                value: float | int = int(raw.replace("_", ""), 10)
            else:
                value = float(raw)
        except (ValueError, OverflowError):
            raise self.error(str(text)) from None
        return self.check(value, str(text))

    def __repr__(self) -> str:
        return f"{self.__name__} {self.range}"


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> Number:
    """A finite float in ``[lo, hi]`` (bounds optional; ``*_open`` excludes them)."""
    return Number(float, lo, hi, lo_open=lo_open, hi_open=hi_open)


def positive_float(max: float | None = None) -> Number:  # noqa: A002 - reads naturally at call sites
    """A finite float in ``(0, max]``."""
    return Number(float, 0.0, max, lo_open=True)


def nonnegative_float(max: float | None = None) -> Number:  # noqa: A002
    """A finite float in ``[0, max]``."""
    return Number(float, 0.0, max)


def int_range(lo: int | None = None, hi: int | None = MAX_INT) -> Number:
    """An integer in ``[lo, hi]``."""
    return Number(int, lo, hi)


def positive_int(max: int = MAX_INT) -> Number:  # noqa: A002
    """An integer in ``[1, max]``."""
    return Number(int, 1, max)


def nonnegative_int(max: int = MAX_INT) -> Number:  # noqa: A002
    """An integer in ``[0, max]``."""
    return Number(int, 0, max)


#: a probability or fraction in [0, 1] (θ's checker: :data:`livecue.inference.options.OPTIONS`)
UNIT_INTERVAL = finite_float(0.0, 1.0)
#: a stream clock (frames per second)
FPS = positive_float(MAX_FPS)
#: a reply cap in tokens
REPLY_TOKENS = positive_int(MAX_REPLY_TOKENS)
#: a stream time in seconds (e.g. ``--at``)
STREAM_TIME = nonnegative_float(MAX_SECONDS)
#: a seed
SEED = int_range(0, MAX_INT)


def text(max_chars: int, what: str = "text") -> Text:
    """An argparse ``type=`` for a string of at most ``max_chars`` characters (not empty)."""
    return Text(max_chars, what)


class Text:
    """A non-empty string of at most ``max_chars`` characters (argparse ``type=``)."""

    def __init__(self, max_chars: int, what: str = "text") -> None:
        self.max_chars, self.what = max_chars, what
        self.__name__ = what

    def __call__(self, value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"must be a non-empty {self.what}, got {value!r}")
        if len(value) > self.max_chars:
            raise argparse.ArgumentTypeError(f"must be at most {self.max_chars:,} characters, got "
                                             f"{len(value):,} ({value[:20]!r}...)")
        return value


__all__ = ["FPS", "MAX_FPS", "MAX_INT", "MAX_REPLY_TOKENS", "MAX_SECONDS", "Number", "REPLY_TOKENS", "SEED",
           "STREAM_TIME", "Text", "UNIT_INTERVAL", "finite_float", "int_range", "nonnegative_float", "nonnegative_int",
           "positive_float", "positive_int", "text"]

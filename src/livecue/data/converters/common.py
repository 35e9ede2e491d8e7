"""Helpers every converter shares: reading annotation JSON, checking numbers, counting what was skipped, and failing
with the reason when a conversion yields nothing."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file.

    Raises:
        FileNotFoundError: the file does not exist (naming ``what`` and the file).
        ValueError: one line ``FILE:LINE:COLUMN: not a valid JSON file (WHAT): problem``; NaN and Infinity, which
            strict JSON does not have, are refused the same way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {str(path)!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a valid JSON file ({what}): not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}:{e.colno}: not a valid JSON file ({what}): {e.msg}") from None
    except _Constant as e:
        raise ValueError(f"{path}: not a valid JSON file ({what}): {e.args[0]} is not a JSON number") from None
    except RecursionError:
        raise ValueError(f"{path}: not a valid JSON file ({what}): nested too deeply") from None


class _Constant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Tally:
    """Counts of what a converter skipped or changed, by reason, reported as one warning."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    def __bool__(self) -> bool:
        return bool(self.counts)

    def summary(self) -> str:
        """``"3 without text, 1 with a negative time"`` (most frequent first)."""
        return ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common())

    def warn(self, logger: logging.Logger, what: str) -> None:
        """Log ``what: summary`` as a warning when anything was counted."""
        if self.counts:
            logger.warning("%s: %s", what, self.summary())


def require_records(records: Iterable[dict[str, Any]], why: Callable[[], str]) -> Iterator[dict[str, Any]]:
    """Pass ``records`` through; when there were none, raise ``ValueError(why())`` at the end (why 0 records)."""
    count = 0
    for record in records:
        count += 1
        yield record
    if count == 0:
        raise ValueError(f"no records: {why()}")

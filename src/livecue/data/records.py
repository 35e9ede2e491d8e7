"""Streaming-dialogue records: one JSON object per line (JSONL), the format every converter writes and every
trainer / evaluator reads. Documented in ``docs/records.md``.

A record::

    {"id": "ego4d/<video_uid>/pass1",          # unique
     "video": "videos/<video_uid>.mp4",        # file path (relative to the JSONL file) or a feature-cache key
     "fps": 2.0,                               # the record's frame clock
     "start": 0.0,                             # video time (s) of the record's frame 0
     "duration": 312.5,                        # seconds of video the record covers
     "messages": [
        {"role": "system", "content": "..."},                                   # optional, first
        {"role": "stream", "time": 0.0, "num_frames": 1, "learn": false},       # frames 0 .. 0
        {"role": "user", "time": 0.0, "content": "Please narrate ..."},
        {"role": "stream", "time": 0.5, "num_frames": 4, "learn": true},        # frames 1 .. 4
        {"role": "assistant", "time": 2.0, "content": "You pick up the cup.", "learn": true}],
     "meta": {...}}                            # optional, free-form

Timing: frame k of a record is at record time ``k / fps`` (video time ``start + k / fps``); frames are consecutive
across stream messages. A stream message's ``time`` is its first frame's time. A text message's ``time`` lies in
``[t, t + 1/fps)`` where t is the time of the last frame before it (the engine answers a query asked at tq right
after the last frame with time ≤ tq); a text message before any frame has ``time <= 0``. Times never decrease.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "stream")
EPS = 1e-6


class RecordError(ValueError):
    """A malformed record, located as ``record N (id), message M: what is wrong``."""


def _where(index: int | None, rid: Any, m: int | None = None) -> str:
    parts = []
    if index is not None:
        parts.append(f"record {index}" + (f" ({rid!r})" if isinstance(rid, str) else ""))
    elif isinstance(rid, str):
        parts.append(f"record {rid!r}")
    if m is not None:
        parts.append(f"message {m}")
    return ", ".join(parts) or "record"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_record(record: Any, index: int | None = None) -> dict[str, Any]:
    """Check one record; return it unchanged. Raises :class:`RecordError` naming the record, message and problem."""
    if not isinstance(record, dict):
        raise RecordError(f"{_where(index, None)}: must be a JSON object, got {type(record).__name__}")
    rid = record.get("id")
    at = _where(index, rid)
    if not isinstance(rid, str) or not rid:
        raise RecordError(f"{at}: 'id' must be a non-empty string, got {rid!r}")
    unknown = sorted(set(record) - {"id", "video", "fps", "start", "duration", "messages", "meta"})
    if unknown:
        raise RecordError(f"{at}: unknown field(s) {unknown}")
    video = record.get("video")
    if video is not None and (not isinstance(video, str) or not video):
        raise RecordError(f"{at}: 'video' must be a non-empty string or null, got {video!r}")
    fps = record.get("fps")
    if not _number(fps) or fps <= 0:
        raise RecordError(f"{at}: 'fps' must be a positive number, got {fps!r}")
    start = record.get("start", 0.0)
    if not _number(start) or start < 0:
        raise RecordError(f"{at}: 'start' must be a number >= 0, got {start!r}")
    duration = record.get("duration")
    if duration is not None and (not _number(duration) or duration < 0):
        raise RecordError(f"{at}: 'duration' must be a number >= 0, got {duration!r}")
    if "meta" in record and not isinstance(record["meta"], dict):
        raise RecordError(f"{at}: 'meta' must be an object, got {type(record['meta']).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{at}: 'messages' must be a non-empty list")

    frames = 0
    last_time = -math.inf
    for m, msg in enumerate(messages):
        where = _where(index, rid, m)
        if not isinstance(msg, dict):
            raise RecordError(f"{where}: must be an object, got {type(msg).__name__}")
        role = msg.get("role")
        if role not in ROLES:
            raise RecordError(f"{where}: 'role' must be one of {ROLES}, got {role!r}")
        if role == "system":
            if m != 0:
                raise RecordError(f"{where}: a system message must come first")
            if not isinstance(msg.get("content"), str):
                raise RecordError(f"{where}: system 'content' must be a string")
            continue
        time = msg.get("time")
        if not _number(time):
            raise RecordError(f"{where}: 'time' must be a number (seconds), got {time!r}")
        if time < last_time - EPS:
            raise RecordError(f"{where}: time {time} is earlier than the previous message's {last_time}")
        last_time = time
        learn = msg.get("learn", False)
        if role == "stream":
            n = msg.get("num_frames")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise RecordError(f"{where}: 'num_frames' must be an integer >= 0, got {n!r}")
            if not (isinstance(learn, bool) or (isinstance(learn, int) and learn >= 0)):
                raise RecordError(f"{where}: stream 'learn' must be true, false or a frame count >= 0, got {learn!r}")
            expected = frames / fps
            if abs(time - expected) > EPS + 1e-9 * expected:
                raise RecordError(f"{where}: stream time {time} must be its first frame's time {expected:g} "
                                  f"(frame {frames} at {fps:g} fps)")
            frames += n
            if n:
                last_time = (frames - 1) / fps
            continue
        content = msg.get("content")
        if not isinstance(content, str):
            raise RecordError(f"{where}: {role} 'content' must be a string, got {content!r}")
        if role == "user" and learn:
            raise RecordError(f"{where}: user messages cannot be learned")
        if not isinstance(learn, bool):
            raise RecordError(f"{where}: {role} 'learn' must be true or false, got {learn!r}")
        if frames == 0:
            if time > EPS:
                raise RecordError(f"{where}: a message before the first frame must have time <= 0, got {time}")
        else:
            t_last = (frames - 1) / fps
            if not t_last - EPS <= time < t_last + 1 / fps - EPS:
                raise RecordError(f"{where}: time {time} does not follow frame {frames - 1} (at {t_last:g} s): "
                                  f"it must lie in [{t_last:g}, {t_last + 1 / fps:g})")
    if duration is not None and frames and (frames - 1) / fps > duration + EPS:
        raise RecordError(f"{at}: {frames} frames at {fps:g} fps run past the duration {duration}")
    return record


def num_frames(record: dict[str, Any]) -> int:
    """Total frames of a record."""
    return sum(m.get("num_frames", 0) for m in record["messages"] if m.get("role") == "stream")


def truncate(record: dict[str, Any], max_num_frames: int) -> dict[str, Any]:
    """Cut the record before the first stream message that would take it past ``max_num_frames`` frames."""
    total = 0
    for m, msg in enumerate(record["messages"]):
        if msg.get("role") == "stream":
            if total + msg.get("num_frames", 0) > max_num_frames:
                out = dict(record, messages=record["messages"][:m])
                out["duration"] = max(0.0, (total - 1) / record["fps"]) if total else 0.0
                return out
            total += msg.get("num_frames", 0)
    return record


def template_messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's messages as :meth:`Template.render` takes them (times are dropped)."""
    return [{k: v for k, v in m.items() if k != "time"} for m in record["messages"]]


# ---- JSONL ---------------------------------------------------------------------------------------------------------
def read_records(path: str | Path, *, validate: bool = True, allow_empty: bool = False) -> list[dict[str, Any]]:
    """Read and validate a JSONL file of records (blank lines skipped); errors name the line.

    Raises:
        FileNotFoundError: no such file.
        RecordError: a line that is not a valid record (naming file, line and column), or, unless ``allow_empty``,
            a file without any record.
    """
    records = list(iter_records(path, validate=validate))
    if not records and not allow_empty:
        raise RecordError(f"records file {str(path)!r} holds no records (it is empty or blank)")
    return records


def iter_records(path: str | Path, *, validate: bool = True) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"records file not found: {str(path)!r}")
    seen: set[str] = set()
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        index = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as e:
                raise RecordError(f"{path}:{lineno}: record {index} is not UTF-8 text (column {e.start + 1}): a "
                                  "records file is JSON Lines") from None
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}:{e.colno}: record {index} is not valid JSON: {e.msg}") from None
            except RecursionError:
                raise RecordError(f"{path}:{lineno}: record {index} is not valid JSON: nested too deeply") from None
            if validate:
                try:
                    validate_record(record, index)
                except RecordError as e:
                    raise RecordError(f"{path}:{lineno}: {e}") from None
                if record["id"] in seen:
                    raise RecordError(f"{path}:{lineno}: record {index}: duplicate id {record['id']!r}")
                seen.add(record["id"])
            index += 1
            yield record


def write_records(path: str | Path, records: Iterable[dict[str, Any]], *, validate: bool = True) -> int:
    """Write records as JSONL atomically (a temp file renamed into place). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for i, record in enumerate(records):
                if validate:
                    validate_record(record, i)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return count

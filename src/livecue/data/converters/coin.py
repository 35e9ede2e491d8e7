"""COIN benchmarks (SPEC §4): ``COIN.json`` -> one-question streaming records (step, next, task, procedure,
task-procedure).

Source format (the official ``COIN.json``)::

    {"database": {VIDEO_ID: {"class": "PutOnHairExtensions", "subset": "training" | "testing",
                             "start": 12.0, "end": 170.0, "duration": 180.5,          # optional
                             "annotation": [{"segment": [12.0, 40.5], "label": "comb the hair"}, ...]}}}

Every record is ``user prompt (time 0, before any frame) -> stream of the clip's frames -> assistant answer`` at the
clip's last frame, as upstream builds them (the question comes first, then the video, then the learned answer).

Choices (upstream showlab/videollm-online where it is explicit, else documented here):

- clip frames: ``ceil`` of the segment start and end to the fps grid (clamped to ``[0, duration]``), end inclusive:
  ``n = ceil(end·fps) - ceil(start·fps) + 1`` frames; the record's ``start`` is the first frame's video time.
- step: the step's segment -> its label. next: the segment of step i -> step i+1. task: the annotated span
  (``start``/``end``, else the steps' extent) -> the task. procedure / task-procedure: the segment of step i -> the
  next ``n = min(5, remaining)`` steps; with one remaining step the Next prompt (task-procedure: its "To {task}, what
  is the next action ..." form) and a plain answer are used, as upstream does. ``--context history`` makes next /
  procedure clips start at the first step instead (not upstream).
- answers: ``label.capitalize() + "."`` (Python's ``str.capitalize``: first letter upper, the rest lower, as
  upstream); procedure answers ``"1. X.\\n2. Y."``. ``meta["answers"]`` holds the lowercase labels that SPEC §7
  scoring compares against (``lower(text).rstrip(".")``).
- task names: the CamelCase ``class`` split into lowercase words, then the acronyms TV, CD, SIM, NBA, SSD, RJ45
  restored; two step labels are normalised (see ``STEP_FIXES``), both as upstream.
- the clip's frames are learned (``learn: true``: silence on every frame, "speak" after the last one) as upstream
  trains COIN; ``--no-learn-frames`` learns only the answer.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import posixpath
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ...argtypes import FPS
from .common import Tally, is_number, read_json, require_records

log = logging.getLogger(__name__)

KINDS = {
    "coin-step": "COIN step recognition: a step's clip -> the step",
    "coin-next": "COIN next-step forecasting: a step's clip -> the next step",
    "coin-task": "COIN task recognition: the annotated span -> the task",
    "coin-procedure": "COIN procedure forecasting: a step's clip -> the next (up to 5) steps",
    "coin-taskprocedure": "COIN procedure forecasting given the task: 'To {task}, ...' -> the next (up to 5) steps",
}

STEP_PROMPT = "What is the action in the video? Format your answer concisely. No extra text output."
NEXT_PROMPT = "What is the next action for the video? Format your answer concisely. No extra text output."
TASK_PROMPT = "What is the overall activity in the video? Format your answer concisely. No extra text output."
PROCEDURE_PROMPT = ("What is the next {n} actions for the video? Format your answer concisely, listing each action "
                    "on a new line with a number prefix. No extra text output.")
MAX_PROCEDURE_STEPS = 5
STEP_FIXES = {
    "process (crop, fold) paper": "crop and fold paper",
    "try to press gun head, spray residual old grease": "try to press gun head to spray residual old grease",
}
ACRONYMS = {"t v": "TV", "c d": "CD", "s i m": "SIM", "n b a": "NBA", "s s d": "SSD", "r j45": "RJ45"}
EPS = 1e-9


# ---- cleaning ------------------------------------------------------------------------------------------------------
def clean_task(name: str) -> str:
    """``"ReplaceTVRemote"`` -> ``"replace TV remote"`` (each capital starts a lowercase word; acronyms restored)."""
    text = re.sub(r"([A-Z])", lambda m: " " + m.group(1).lower(), name)
    for split, acronym in ACRONYMS.items():
        text = re.sub(rf"(?<![a-z]){split}(?![a-z])", acronym, text)
    return " ".join(text.split())


def clean_step(label: str) -> str:
    """A step label with upstream's two fixes applied (labels whose commas break list answers)."""
    label = " ".join(label.split())
    return STEP_FIXES.get(label, label)


def answer_text(label: str) -> str:
    """An answer as upstream writes it: ``"comb the hair"`` -> ``"Comb the hair."``."""
    return label.capitalize() + "."


def numbered(labels: list[str]) -> str:
    """``"1. X.\\n2. Y."`` for a procedure answer."""
    return "\n".join(f"{k + 1}. {answer_text(label)}" for k, label in enumerate(labels))


def prompt_for(kind: str, n: int = 1, task: str = "") -> str:
    """The user prompt of ``kind`` (``n``: number of steps asked for; ``task``: the task-procedure prefix)."""
    if kind == "coin-step":
        return STEP_PROMPT
    if kind == "coin-task":
        return TASK_PROMPT
    text = NEXT_PROMPT if kind == "coin-next" or n == 1 else PROCEDURE_PROMPT.format(n=n)
    if kind == "coin-taskprocedure":
        return f"To {task}, {text[0].lower()}{text[1:]}"
    return text


# ---- loading -------------------------------------------------------------------------------------------------------
def load_coin(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and check ``COIN.json``; returns ``database`` (video id -> entry). Errors name the file and entry."""
    path = Path(path)
    data = read_json(path, "COIN annotation file")
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'database' object (the official COIN.json format)")
    negative = 0
    for vid, entry in database.items():
        where = f"{path}: database[{vid!r}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be an object")
        for key, kind in (("class", str), ("subset", str), ("annotation", list)):
            if not isinstance(entry.get(key), kind):
                raise ValueError(f"{where}: missing or malformed {key!r} (expected {kind.__name__})")
        for i, step in enumerate(entry["annotation"]):
            seg = step.get("segment") if isinstance(step, dict) else None
            if not isinstance(seg, (list, tuple)) or len(seg) != 2 or not all(is_number(x) for x in seg):
                raise ValueError(f"{where}: annotation[{i}]: 'segment' must be [start, end] in seconds (finite "
                                 f"numbers), got {seg!r}")
            if not isinstance(step.get("label"), str) or not step["label"].strip():
                raise ValueError(f"{where}: annotation[{i}]: 'label' must be a non-empty string")
            negative += min(seg) < 0
        for key in ("start", "end", "duration"):
            if key in entry and not is_number(entry[key]):
                raise ValueError(f"{where}: {key!r} must be a finite number of seconds, got {entry[key]!r}")
    if negative:
        log.warning("%s: %d step segments with a negative time (clamped to frame 0)", path, negative)
    return database


def coin_categories(coin_json: str | Path | dict[str, Any], split: str | None = None) -> dict[str, list[str]]:
    """The COIN category lists for Levenshtein matching at evaluation (SPEC §7): ``{"steps": [...], "tasks": [...]}``,
    lowercase cleaned labels (how ``meta["answers"]`` spells them), sorted. ``split`` (``train``/``test``) restricts
    them to one subset; the default takes all videos (upstream used the evaluated split's)."""
    database = coin_json.get("database", coin_json) if isinstance(coin_json, dict) else load_coin(coin_json)
    steps, tasks = set(), set()
    for entry in database.values():
        if split is not None and split not in entry["subset"].lower():
            continue
        tasks.add(clean_task(entry["class"]).lower())
        steps.update(clean_step(s["label"]).lower() for s in entry["annotation"])
    return {"steps": sorted(steps), "tasks": sorted(tasks)}


# ---- conversion ----------------------------------------------------------------------------------------------------
def _ceil_frame(t: float, fps: float, last: int | None) -> int:
    frame = max(0, math.ceil(t * fps - EPS))
    return frame if last is None else min(frame, last)


def _clip(start: float, end: float, fps: float, last: int | None) -> tuple[int, int]:
    """First and last frame of a segment: both ends ceiled to the grid, clamped to ``[0, last]``."""
    return _ceil_frame(start, fps, last), _ceil_frame(end, fps, last)


def make_record(rid: str, video: str, fps: float, first: int, last: int, prompt: str, answer: str,
                learn_frames: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """``user(prompt) -> stream(frames first..last) -> assistant(answer)`` as a record."""
    n = last - first + 1
    return {"id": rid, "video": video, "fps": fps, "start": first / fps, "duration": n / fps,
            "messages": [{"role": "user", "time": 0.0, "content": prompt},
                         {"role": "stream", "time": 0.0, "num_frames": n, "learn": learn_frames},
                         {"role": "assistant", "time": (n - 1) / fps, "content": answer, "learn": True}],
            "meta": meta}


def coin_records(database: dict[str, dict[str, Any]], kind: str, *, split: str = "train", fps: float = 2.0,
                 video_dir: str = "", video_ext: str = ".mp4", context: str = "step",
                 learn_frames: bool = True, stats: Tally | None = None) -> Iterator[dict[str, Any]]:
    """Records of one COIN benchmark ``kind`` for the videos of ``split`` (``train``/``test``).

    ``stats`` (optional) counts the videos of the split and the samples skipped, by reason."""
    if kind not in KINDS:
        raise ValueError(f"unknown COIN benchmark {kind!r}; available: {', '.join(KINDS)}")
    if split not in ("train", "test"):
        raise ValueError(f"COIN split must be 'train' or 'test', got {split!r}")
    skipped = 0
    stats = stats if stats is not None else Tally()
    for vid, entry in database.items():
        if split not in entry["subset"].lower():
            stats.add(f"videos not in the {split} subset")
            continue
        duration = entry.get("duration")
        last_frame = math.floor(duration * fps + EPS) if isinstance(duration, (int, float)) else None
        video = posixpath.join(video_dir, vid + video_ext) if video_dir else vid + video_ext
        task = clean_task(entry["class"])
        steps = [(float(s["segment"][0]), float(s["segment"][1]), clean_step(s["label"]))
                 for s in entry["annotation"]]
        clip = functools.partial(_clip, fps=fps, last=last_frame)
        base = {"dataset": "coin", "video_uid": vid, "split": split, "task": task.lower()}

        samples: list[tuple[str, tuple[int, int], str, str, list[str]]] = []  # id, frames, prompt, answer, labels
        if kind == "coin-task":
            if steps or "start" in entry:
                start = float(entry.get("start", min((s[0] for s in steps), default=0.0)))
                end = float(entry.get("end", max((s[1] for s in steps), default=start)))
                samples.append((f"{kind}/{vid}", clip(start, end), TASK_PROMPT, answer_text(task), [task.lower()]))
        elif kind == "coin-step":
            for i, (start, end, label) in enumerate(steps):
                samples.append((f"{kind}/{vid}/{i}", clip(start, end), STEP_PROMPT, answer_text(label),
                                [label.lower()]))
        else:
            horizon = 1 if kind == "coin-next" else MAX_PROCEDURE_STEPS
            for i in range(len(steps) - 1):
                start = steps[0][0] if context == "history" else steps[i][0]
                following = [s[2] for s in steps[i + 1:i + 1 + horizon]]
                answer = answer_text(following[0]) if len(following) == 1 else numbered(following)
                samples.append((f"{kind}/{vid}/{i}", clip(start, steps[i][1]),
                                prompt_for(kind, len(following), task), answer, [s.lower() for s in following]))
        for rid, (first, last), prompt, answer, labels in samples:
            if last < first:
                skipped += 1
                log.debug("%s: segment ends before it starts on the %g fps grid; skipped", rid, fps)
                continue
            yield make_record(rid, video, fps, first, last, prompt, answer, learn_frames,
                              dict(base, answers=labels))
        if not samples:
            stats.add("videos without a sample (too few steps)")
    if skipped:
        stats.add("samples whose segment ends before it starts", skipped)
        log.warning("%d COIN samples skipped (segment ends before it starts on the %g fps grid)", skipped, fps)


# ---- converter protocol --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """Options of the COIN converters."""
    parser.add_argument("--annotations", required=True, help="the official COIN.json")
    parser.add_argument("--split", choices=["train", "test"], default="train",
                        help="COIN subset: train = 'training', test = 'testing' (default: %(default)s)")
    parser.add_argument("--fps", type=FPS, default=2.0,
                        help=f"frame rate of the records, in {FPS.range} (default: %(default)s)")
    parser.add_argument("--video-dir", default="",
                        help="prefix of each record's 'video' ({video_id}.mp4; a path relative to the output file "
                             "or a feature-cache key)")
    parser.add_argument("--video-ext", default=".mp4", help="video file extension (default: %(default)s)")
    parser.add_argument("--learn-frames", action=argparse.BooleanOptionalAction, default=True,
                        help="learn the clip's frames (silence, then speak after the last one) as upstream "
                             "(default: %(default)s)")
    if kind in ("coin-next", "coin-procedure", "coin-taskprocedure"):
        parser.add_argument("--context", choices=["step", "history"], default="step",
                            help="clip = step i's segment (upstream) or from the first step to the end of step i "
                                 "(default: %(default)s)")


def convert(args: argparse.Namespace, kind: str) -> Iterable[dict[str, Any]]:
    """``livecue convert-data coin-* --annotations COIN.json ...``: the records of one COIN benchmark."""
    database = load_coin(args.annotations)
    log.info("COIN: %d videos in %s", len(database), args.annotations)
    stats = Tally()
    records = coin_records(database, kind, split=args.split, fps=args.fps, video_dir=args.video_dir,
                           video_ext=args.video_ext, context=getattr(args, "context", "step"),
                           learn_frames=args.learn_frames, stats=stats)
    return require_records(records, lambda: f"{len(database)} videos in {args.annotations}"
                           + (f": {stats.summary()}" if stats else ""))

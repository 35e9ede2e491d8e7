"""Ego4D long-term action anticipation (SPEC §4): 8 observed actions -> the next 20, as one-question records.

Source formats (official ``fho_lta_{train,val}.json`` and ``fho_lta_taxonomy.json``)::

    {"clips": [{"clip_uid": "...", "video_uid": "...", "action_idx": 0, "clip_parent_start_sec": 30.0,
                "clip_parent_end_sec": 510.0, "action_clip_start_sec": 1.2, "action_clip_end_sec": 9.2,
                "verb": "take_(pick,_grab,_get)", "noun": "knife", "verb_label": 98, "noun_label": 230, ...}]}
    {"verbs": ["adjust_(regulate,_increase/reduce,_change)", ...], "nouns": ["apple", ...]}

Choices (upstream showlab/videollm-online where explicit, else documented here):

- actions are grouped by ``clip_uid`` and ordered by ``action_idx``; clips with fewer than 8 + 20 actions are
  skipped; every window of 8 consecutive observed actions followed by 20 annotated ones is one record
  (``id = lta/{clip_uid}/{index of the last observed action}``).
- frames: from the first observed action's start to the last observed action's end, each *rounded* to the fps grid
  (Python ``round``, as upstream; clamped to ``[0, duration]`` when a duration is known), end inclusive. Times are
  video seconds ``clip_parent_start_sec + action_clip_*_sec`` and the record points at the full video
  ``{video_uid}.mp4`` (upstream); ``--video-key clip`` uses the clip file ``{clip_uid}.mp4`` and clip-relative times.
- prompt (user, before the frames): "After {N} video frames, anticipate the next 20 actions. ..." with N the
  number of observed frames; the frames are learned (``learn: true``) as upstream trains it; the answer lines are
  ``"{k}. {Verb} {noun}."`` with the taxonomy names shortened to their first synonym (``take_(pick,_grab,_get)``
  -> ``take``; a few clashing names renamed, see ``RENAMES``), the verb capitalised, a trailing period.
- ``meta``: ``clip_uid``, ``video_uid``, ``last_visible_action_idx`` and the 20 ``verb_labels`` / ``noun_labels``
  (taxonomy indices) for ED@Z scoring; :func:`lta_taxonomy` gives the name lists the answers use.
"""

from __future__ import annotations

import argparse
import logging
import math
import posixpath
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ...argtypes import FPS
from .common import Tally, is_number, read_json, require_records

log = logging.getLogger(__name__)

KINDS = {"lta": "Ego4D long-term action anticipation: 8 observed actions -> the next 20"}

PROMPT = ("After {n} video frames, anticipate the next {z} actions. Format your answer concisely, listing each action "
          "on a new line with a number prefix. No extra text output.")
NUM_OBSERVED, NUM_FUTURE = 8, 20
RENAMES = {  # taxonomy entries whose first synonym would clash with another entry (upstream's table)
    "pot_(planter)": "flowerpot", "bat_(sports)": "sport bat", "bat_(tool)": "bat", "nut_(food)": "nuts",
    "nut_(tool)": "nut", "chip_(food)": "snack", "chip_(wood'_metal),": "chips", "chip_(wood,_metal)": "chip",
}
EPS = 1e-9


def short_name(entry: str) -> str:
    """A taxonomy entry as answers name it: ``"take_(pick,_grab,_get)"`` -> ``"take"``, ``"turn_on"`` ->
    ``"turn on"``, ``"bat_(sports)"`` -> ``"sport bat"``."""
    if entry in RENAMES:
        return RENAMES[entry]
    return re.sub(r"_$", "", entry.split("(")[0]).replace("_", " ")


def lta_taxonomy(path: str | Path) -> dict[str, list[str]]:
    """``fho_lta_taxonomy.json`` -> ``{"verbs": [...], "nouns": [...]}`` (short names, indexed by label) plus the
    original entries as ``raw_verbs`` / ``raw_nouns``."""
    data = read_json(path, "LTA taxonomy file")
    if not isinstance(data, dict) or not all(
            isinstance(data.get(k), list) and all(isinstance(x, str) for x in data[k]) for k in ("verbs", "nouns")):
        raise ValueError(f"{path}: expected an object with 'verbs' and 'nouns' lists of strings "
                         "(the official fho_lta_taxonomy.json format)")
    return {"verbs": [short_name(v) for v in data["verbs"]], "nouns": [short_name(n) for n in data["nouns"]],
            "raw_verbs": list(data["verbs"]), "raw_nouns": list(data["nouns"])}


def load_lta(path: str | Path, taxonomy: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """Read and check an LTA annotation file; returns its ``clips`` (one entry per action).

    Negative times are kept (they are clamped to frame 0 later) and reported as one warning with their count."""
    data = read_json(path, "LTA annotation file")
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, list):
        raise ValueError(f"{path}: expected a JSON object with a 'clips' list (the official fho_lta format)")
    negative = 0
    for i, a in enumerate(clips):
        where = f"{path}: clips[{i}]"
        if not isinstance(a, dict):
            raise ValueError(f"{where}: must be an object")
        for key in ("clip_uid", "video_uid"):
            if not isinstance(a.get(key), str) or not a[key]:
                raise ValueError(f"{where}: missing or malformed {key!r}")
        for key in ("action_idx", "verb_label", "noun_label"):
            if not isinstance(a.get(key), int) or isinstance(a.get(key), bool):
                raise ValueError(f"{where}: missing or malformed {key!r} (an integer; unannotated test files "
                                 "are not supported)")
        for key in ("clip_parent_start_sec", "action_clip_start_sec", "action_clip_end_sec"):
            if not is_number(a.get(key)):
                raise ValueError(f"{where}: missing or malformed {key!r} (seconds, a finite number), got "
                                 f"{a.get(key)!r}")
        if any(a[key] < 0 for key in ("clip_parent_start_sec", "action_clip_start_sec", "action_clip_end_sec")):
            negative += 1
        if taxonomy is not None and not (0 <= a["verb_label"] < len(taxonomy["verbs"])
                                         and 0 <= a["noun_label"] < len(taxonomy["nouns"])):
            raise ValueError(f"{where}: verb_label {a['verb_label']} / noun_label {a['noun_label']} outside the "
                             f"taxonomy ({len(taxonomy['verbs'])} verbs, {len(taxonomy['nouns'])} nouns)")
    if negative:
        log.warning("%s: %d of %d actions have a negative time (clamped to frame 0)", path, negative, len(clips))
    return clips


def load_durations(path: str | Path) -> dict[str, float]:
    """Video durations from Ego4D's ``ego4d.json`` metadata: ``videos[].video_uid`` -> ``duration_sec``."""
    data = read_json(path, "Ego4D metadata file")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise ValueError(f"{path}: expected a JSON object with a 'videos' list (Ego4D's ego4d.json)")
    durations = {}
    for i, v in enumerate(videos):
        if isinstance(v, dict) and "video_uid" in v and v.get("duration_sec") is not None:
            if not is_number(v["duration_sec"]) or v["duration_sec"] < 0:
                raise ValueError(f"{path}: videos[{i}]: 'duration_sec' must be a finite number >= 0, got "
                                 f"{v['duration_sec']!r}")
            durations[v["video_uid"]] = float(v["duration_sec"])
    return durations


def _round_frame(t: float, fps: float, last: int | None) -> int:
    """``t`` rounded to the fps grid (Python ``round``, as upstream), clamped to ``[0, last]``."""
    f = max(0, round(t * fps))
    return f if last is None else min(f, last)


def answer_text(actions: list[tuple[int, int]], taxonomy: dict[str, list[str]]) -> str:
    """``"1. Take knife.\\n2. Cut tomato.\\n..."`` from (verb_label, noun_label) pairs."""
    return "\n".join(f"{k + 1}. {taxonomy['verbs'][v].capitalize()} {taxonomy['nouns'][n]}."
                     for k, (v, n) in enumerate(actions))


def lta_records(clips: list[dict[str, Any]], taxonomy: dict[str, list[str]], *, fps: float = 2.0,
                num_observed: int = NUM_OBSERVED, num_future: int = NUM_FUTURE, video_key: str = "video",
                durations: dict[str, float] | None = None, video_dir: str = "", video_ext: str = ".mp4",
                learn_frames: bool = True, stats: Tally | None = None) -> Iterator[dict[str, Any]]:
    """One record per window of ``num_observed`` observed + ``num_future`` annotated actions of a clip.

    ``stats`` (optional) counts the clips and windows skipped, by reason; they are also logged as one warning."""
    by_clip: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in clips:
        by_clip[a["clip_uid"]].append(a)
    stats = stats if stats is not None else Tally()
    short = 0
    for clip_uid, actions in by_clip.items():
        actions = sorted(actions, key=lambda a: a["action_idx"])
        if len(actions) < num_observed + num_future:
            short += 1
            continue
        video_uid = actions[0]["video_uid"]
        if video_key == "clip":
            key, offset = clip_uid, 0.0
            end = actions[0].get("clip_parent_end_sec")
            duration = end - actions[0]["clip_parent_start_sec"] if isinstance(end, (int, float)) else None
        else:
            key, offset = video_uid, float(actions[0]["clip_parent_start_sec"])
            duration = (durations or {}).get(video_uid)
        last_grid = math.floor(duration * fps + EPS) if duration is not None else None
        video = posixpath.join(video_dir, key + video_ext) if video_dir else key + video_ext

        for i in range(len(actions) - num_observed - num_future + 1):
            j = i + num_observed
            future = [(a["verb_label"], a["noun_label"]) for a in actions[j:j + num_future]]
            first = _round_frame(offset + actions[i]["action_clip_start_sec"], fps, last_grid)
            last = _round_frame(offset + actions[j - 1]["action_clip_end_sec"], fps, last_grid)
            n = last - first + 1
            rid = f"lta/{clip_uid}/{actions[j - 1]['action_idx']}"
            if n <= 0:
                log.debug("%s: observed actions end before they start on the %g fps grid; skipped", rid, fps)
                stats.add("windows whose observed actions end before they start")
                continue
            yield {"id": rid, "video": video, "fps": fps, "start": first / fps, "duration": n / fps,
                   "messages": [
                       {"role": "user", "time": 0.0, "content": PROMPT.format(n=n, z=num_future)},
                       {"role": "stream", "time": 0.0, "num_frames": n, "learn": learn_frames},
                       {"role": "assistant", "time": (n - 1) / fps, "content": answer_text(future, taxonomy),
                        "learn": True}],
                   "meta": {"dataset": "ego4d-lta", "clip_uid": clip_uid, "video_uid": video_uid,
                            "last_visible_action_idx": actions[j - 1]["action_idx"],
                            "verb_labels": [v for v, _ in future], "noun_labels": [n_ for _, n_ in future]}}
    if short:
        stats.add(f"clips with fewer than {num_observed + num_future} actions", short)
    stats.warn(log, f"LTA: skipped (of {len(by_clip)} clips)")


def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """Options of the LTA converter."""
    parser.add_argument("--annotations", nargs="+", required=True, help="official fho_lta_{train,val}.json file(s)")
    parser.add_argument("--taxonomy", required=True, help="the official fho_lta_taxonomy.json")
    parser.add_argument("--fps", type=FPS, default=2.0,
                        help=f"frame rate of the records, in {FPS.range} (default: %(default)s)")
    parser.add_argument("--video-key", choices=["video", "clip"], default="video",
                        help="records point at full videos (upstream) or at the LTA clips (default: %(default)s)")
    parser.add_argument("--durations", default=None, help="Ego4D ego4d.json for video durations (optional)")
    parser.add_argument("--video-dir", default="", help="prefix of each record's 'video' ({uid}.mp4)")
    parser.add_argument("--video-ext", default=".mp4", help="video file extension (default: %(default)s)")
    parser.add_argument("--learn-frames", action=argparse.BooleanOptionalAction, default=True,
                        help="learn the observed frames as upstream (default: %(default)s)")


def convert(args: argparse.Namespace, kind: str) -> Iterable[dict[str, Any]]:
    """``livecue convert-data lta --annotations fho_lta_train.json --taxonomy fho_lta_taxonomy.json``."""
    taxonomy = lta_taxonomy(args.taxonomy)
    clips = [a for path in args.annotations for a in load_lta(path, taxonomy)]
    durations = load_durations(args.durations) if args.durations else None
    log.info("LTA: %d actions in %d file(s)", len(clips), len(args.annotations))
    stats = Tally()
    records = lta_records(clips, taxonomy, fps=args.fps, video_key=args.video_key, durations=durations,
                          video_dir=args.video_dir, video_ext=args.video_ext, learn_frames=args.learn_frames,
                          stats=stats)
    return require_records(records, lambda: f"{len(clips)} actions in {', '.join(args.annotations)}"
                           + (f"; skipped: {stats.summary()}" if stats else ""))

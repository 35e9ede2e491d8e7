"""The built-in world (:mod:`livecue.data.world`) written as OVO-Bench / StreamingBench / ProactiveVideoQA data.

:func:`world_to_benchmark` renders ``n`` world streams to ``<out>/<videos dir>/<id>.<mp4|npy>`` and writes an
annotation file in the benchmark's own format (the layout ``formats.load_items`` reads), with questions whose answers
come from the world's ground truth:

* the world's own questions (asked at silent frames) become multiple-choice items: colour → OVO ``ATR`` /
  SB ``Attribute Perception``, where → ``STU`` / ``Spatial Understanding``, count → SB ``Counting``, "What just
  happened?" → OVO ``EPM``; distractors are other colours / regions / counts / narrations of objects that never
  appear in the stream, so exactly one option is true;
* OVO ``REC``: "How many times did they <event>?" for the stream's most frequent event type, queried 1 s after each
  occurrence; OVO ``CRR``: "Which object appears next?" asked 2 s before an ``appear`` event, "No" before it,
  "Yes" from it on;
* SB ``Proactive Output``: "When the <object> appears, output ..." with the appear time as ground truth;
* ProactiveVideoQA: "Narrate what happens in the video." with one reply window per event
  (``[start, narration + 1 s]``, the narration as content).

Deterministic by ``seed`` (stream ``i`` is :func:`~livecue.data.world.stream_seed` ``(seed, "test", i)``).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from livecue.data.world import WorldConfig, generate_stream, simulate_stream, stream_seed
from livecue.data.world_render import save_mp4, save_npy
from livecue.data.world_scene import NUMBERS, REGIONS

from .items import BENCHMARKS

__all__ = ["world_to_benchmark"]

_FAKE = "A cyan cross appears."  # cyan and cross are outside the default vocabulary: never true
_FAKES = (_FAKE, "The cyan cross disappears.", "The cyan cross moves left.", "The cyan cross grows.")
_VERBS = {"appear": "appear", "disappear": "disappear", "move": "move", "change_colour": "change colour",
          "grow": "grow", "shrink": "shrink", "collide": "collide"}


def _options(rng: np.random.Generator, answer: str, pool: list[str]) -> tuple[list[str], int]:
    others = [p for p in dict.fromkeys(pool) if p != answer]
    picks = [others[i] for i in rng.permutation(len(others))[:3]] + [answer]
    order = rng.permutation(len(picks))
    opts = [picks[i] for i in order]
    return opts, opts.index(answer)


def _mc(q: dict[str, Any], cfg: WorldConfig, rng: np.random.Generator,
        narrations: list[str]) -> tuple[str, list[str], int] | None:
    kind, answer = q["type"], q["answer"]
    if kind == "colour":
        pool = [f"{c.capitalize()}." for c in cfg.colours]
    elif kind == "where":
        pool = [r for row in REGIONS for r in row]
    elif kind == "count":
        pool = list(NUMBERS[1:cfg.max_objects + 2])
    else:
        pool = [*_FAKES, *(n for n in narrations if n != answer)] if answer != "Nothing yet." else [*_FAKES]
    if len(set(pool) - {answer}) < 3:
        return None
    opts, gt = _options(rng, answer, pool)
    return kind, opts, gt


_OVO_TASK = {"colour": "ATR", "where": "STU", "what_happened": "EPM"}
_SB_TASK = {"colour": "Attribute Perception", "where": "Spatial Understanding", "count": "Counting"}


def _ovo_entries(sid: str, video: str, rec: dict[str, Any], cfg: WorldConfig,
                 rng: np.random.Generator) -> list[dict[str, Any]]:
    events, out = rec["meta"]["events"], []
    texts = [e["text"] for e in events]
    for k, q in enumerate(rec["meta"]["questions"]):
        made = _mc(q, cfg, rng, texts)
        if made and q["type"] in _OVO_TASK:
            out.append({"id": f"{sid}-q{k}", "task": _OVO_TASK[q["type"]], "video": video, "realtime": q["time"],
                        "question": q["question"], "answer": q["answer"], "options": made[1], "gt": made[2]})
    if events:
        kind, _ = Counter(e["type"] for e in events).most_common(1)[0]
        own = [e for e in events if e["type"] == kind]
        out.append({"id": f"{sid}-rec", "task": "REC", "video": video, "activity": _VERBS[kind],
                    "start_times": [e["start_frame"] / cfg.fps for e in own],
                    "end_times": [e["end_frame"] / cfg.fps for e in own],
                    "test_info": [{"realtime": min(e["time"] + 1.0, cfg.duration), "count": i + 1}
                                  for i, e in enumerate(own)]})
    appear = [e for e in events if e["type"] == "appear" and e["time"] >= 2.0]
    if appear:
        e = appear[0]
        out.append({"id": f"{sid}-crr", "task": "CRR", "video": video, "question": "Which object appears next?",
                    "answer": f"The {e['objects'][0]}.", "ask_time": e["time"] - 2.0, "clue_time": e["time"],
                    "test_info": [{"realtime": e["time"] - 2.0, "type": 0}, {"realtime": e["time"] - 0.5, "type": 0},
                                  {"realtime": e["time"], "type": 1},
                                  {"realtime": min(e["time"] + 1.0, cfg.duration), "type": 1}]})
    return out


def _hms(t: float) -> str:
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _sb_entries(video: str, rec: dict[str, Any], cfg: WorldConfig, rng: np.random.Generator,
                story_states: list[Any]) -> list[dict[str, Any]]:
    out = []
    for q in rec["meta"]["questions"]:
        second = float(int(q["time"]))  # StreamingBench times are whole seconds: the scene must match there
        if q["type"] not in _SB_TASK or story_states[int(second * cfg.fps)] != story_states[q["frame"]]:
            continue
        made = _mc(q, cfg, rng, [])
        if made:
            letters = "ABCD"
            out.append({"time": f"[{_hms(0)} - {_hms(cfg.duration)}]", "video_categories": "world",
                        "video_path": video,
                        "questions": [{"task_type": _SB_TASK[q["type"]], "question": q["question"],
                                       "time_stamp": _hms(second), "answer": letters[made[2]],
                                       "options": [f"{letters[i]}. {o}" for i, o in enumerate(made[1])],
                                       "required_ability": "world"}]})
    appear = [e for e in rec["meta"]["events"] if e["type"] == "appear" and e["time"] >= 1.0
              and float(e["time"]).is_integer()]
    if appear:
        e = appear[0]
        name = e["objects"][0]
        out.append({"time": f"[{_hms(0)} - {_hms(cfg.duration)}]", "video_categories": "world", "video_path": video,
                    "questions": [{"task_type": "Proactive Output",
                                   "question": f'When the {name} appears, output "{name} appeared".',
                                   "time_stamp": _hms(0), "ground_truth_time_stamp": _hms(e["time"]),
                                   "ground_truth_output": f"{name} appeared", "required_ability": "world"}]})
    return out


def _proactive_entry(sid: str, video: str, rec: dict[str, Any], cfg: WorldConfig) -> dict[str, Any]:
    fps = cfg.fps
    return {"video": video, "question_id": sid, "duration": cfg.num_frames / fps,
            "conversation": [{"role": "user", "content": "Narrate what happens in the video.", "time": 0}],
            "answer": [{"role": "assistant", "content": e["text"],
                        "related_timespan": [e["start_frame"] / fps, e["frame"] / fps],
                        "reply_timespan": [e["start_frame"] / fps, min(e["frame"] / fps + 1.0, cfg.duration)]}
                       for e in rec["meta"]["events"]]}


def world_to_benchmark(out_dir: str | Path, benchmark: str, n: int, seed: int, cfg: WorldConfig | None = None,
                       video_format: str = "mp4") -> Path:
    """Write ``n`` world streams as ``benchmark`` data under ``out_dir``; return the annotation file's path.

    Layouts: OVO-Bench ``ovo_bench_new.json`` + ``src_videos/world/``; StreamingBench ``questions_real.json`` +
    ``videos/``; ProactiveVideoQA ``WORLD/anno.json`` + ``WORLD/videos/``.

    Raises:
        ValueError: unknown benchmark or video format, bad ``n`` / ``seed``.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    if video_format not in ("mp4", "npy"):
        raise ValueError(f"video_format must be 'mp4' or 'npy', got {video_format!r}")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    cfg = cfg or WorldConfig(question_rate=4.0)
    out = Path(out_dir)
    anno = {"ovo": out / "ovo_bench_new.json", "streamingbench": out / "questions_real.json",
            "proactive": out / "WORLD" / "anno.json"}[benchmark]
    video_dir = {"ovo": out / "src_videos", "streamingbench": out, "proactive": out / "WORLD" / "videos"}[benchmark]
    entries: list[dict[str, Any]] = []
    for i in range(n):
        s = stream_seed(seed, "test", i)
        frames, rec = generate_stream(cfg, s)
        sid = f"world-{seed}-{i:05d}"
        rel = {"ovo": f"world/{sid}.{video_format}", "streamingbench": f"./videos/{sid}.{video_format}",
               "proactive": f"{sid}.{video_format}"}[benchmark]
        path = video_dir / rel
        if video_format == "mp4":
            save_mp4(path, frames, cfg.fps)
        else:
            save_npy(path, frames)
        rng = np.random.default_rng(s)
        if benchmark == "ovo":
            entries += _ovo_entries(sid, rel, rec, cfg, rng)
        elif benchmark == "streamingbench":
            entries += _sb_entries(rel, rec, cfg, rng, simulate_stream(cfg, s).states)
        else:
            entries.append(_proactive_entry(sid, rel, rec, cfg))
    anno.parent.mkdir(parents=True, exist_ok=True)
    tmp = anno.with_name(f".{anno.name}.tmp")
    tmp.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    tmp.replace(anno)
    return anno

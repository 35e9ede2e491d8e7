"""The built-in world (:mod:`livecue.data.world`) written as OVO-Bench / StreamingBench / ProactiveVideoQA data.

:func:`world_to_benchmark` renders ``n`` world streams to ``<out>/<videos dir>/<id>.<mp4|npy>`` and writes the
benchmark's annotation files in its own format (the layout ``formats.load_items`` reads), every answer read off the
world's ground truth (the objects at every frame, the events). Multiple-choice questions have 4 options, exactly one
true by construction (:mod:`.world_questions` says how). Per stream: every one of the world's own questions (asked
at silent frames), and at most one item of each other sub-task (SSR: one per step; SQA: one pair).

**OVO-Bench** (``ovo_bench_new.json``; task codes of ``formats.OVO_GROUPS``):

* backward: ``EPM`` the world's "What just happened?"; ``ASI`` 'What happened right after "<event>"?';
  ``HLD`` "What did the <object> do in the video?" about an object never on screen ("It never appeared in the
  video.") or one whose only change was a move / growth / shrinking;
* real-time: ``ATR`` the world's "What colour is the <shape>?"; ``STU`` its "Where is the <object>?"; ``OJR``
  "Which object is in the <region> now?"; ``ACR`` "What did the <object> just do?"; ``FPD`` "Where will the <object>
  be a moment from now?" asked while it moves (the world's moves go on in a straight line to their end);
* forward: ``REC`` "How many times did they <event>?" for the stream's most frequent event type (a test point 1 s after
  each, or halfway to the next one of its kind if that comes sooner); ``CRR`` "Which object appears next?" asked 2 s
  before an appearance with none in between ("No" before it, "Yes" from it on);
  ``SSR`` the stream's events (narrations unique in it) as the steps: "No" halfway between the previous event and
  the step, "Yes" at its narrated frame.

**StreamingBench** (``questions_real.json``, ``questions_omni.json``, ``questions_sqa.json``,
``questions_proactive.json``; task types of ``formats.SB_GROUPS``; questions at whole seconds):

* real-time: ``Attribute Perception`` / ``Spatial Understanding`` / ``Counting`` the world's colour / where / count
  questions; ``Object Perception`` "Which of these objects is on the screen now?"; ``Event Understanding`` "What just
  happened?"; ``Action Perception`` "What did the <object> just do?"; ``Prospective Reasoning`` "Where will the
  <object> be a moment from now?"; ``Clips Summarize`` "Which lists everything that has happened so far, in order?";
* omni-source (visual only): ``Scene Understanding`` "What is the complete list of objects on the screen now?";
* contextual: ``Misleading Context Understanding`` "What colour did the <object> turn into?" (half of them a false
  premise: "It did not change colour."); ``Sequential Question Answering`` "What colour is the <shape>?" then
  "Where is that <shape> now?" (``questions_sqa.json`` nested as upstream's: one video's parts per entry; the loader
  puts the first question and its answer in front of the second, as upstream's evaluator does);
* ``Proactive Output``: "When the <object> appears, output ..." (its first time on screen, a whole second).

**ProactiveVideoQA** (``WORLD/anno.json``): "Narrate what happens in the video." with one reply window per event
(``[start, narration + 1 s]``, the narration as content).

Not possible in the world, so not written: OVO ``OCR`` and StreamingBench ``Text-Rich Understanding`` (no text on
screen); ``Emotion Recognition``, ``Source Discrimination``, ``Multimodal Alignment`` (no sound, no speech, no people);
``Causal Reasoning`` (events are drawn at random: nothing causes anything, a why-question has no true answer);
``Anomaly Context Understanding`` (nothing in the world is anomalous: every event is an ordinary one).

Deterministic by ``seed`` (stream ``i`` is :func:`~livecue.data.world.stream_seed` ``(seed, "test", i)``; each
sub-task draws from its own generator seeded by the stream and the task's name).
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from livecue.data.world import WorldConfig, generate_stream, simulate_stream, stream_seed
from livecue.data.world_render import save_mp4, save_npy
from livecue.data.world_scene import NUMBERS, REGIONS

from . import world_questions as wq
from .items import BENCHMARKS
from .world_questions import Question, Truth, hms

__all__ = ["world_to_benchmark", "SB_FILES"]

_FAKE = "A cyan cross appears."  # cyan and cross are outside the default vocabulary: never true
_FAKES = (_FAKE, "The cyan cross disappears.", "The cyan cross moves left.", "The cyan cross grows.")
_VERBS = {"appear": "appear", "disappear": "disappear", "move": "move", "change_colour": "change colour",
          "grow": "grow", "shrink": "shrink", "collide": "collide"}
SB_FILES = ("real", "omni", "sqa", "proactive")
"""StreamingBench's annotation files, ``questions_<name>.json``."""

Generator = Callable[[Truth, np.random.Generator], Question | None]
_OVO_MORE: tuple[tuple[str, Generator], ...] = (
    ("OJR", wq.object_at), ("ACR", wq.action), ("FPD", wq.heading), ("ASI", wq.next_after), ("HLD", wq.never_seen))
_SB_MORE: tuple[tuple[str, str, Generator], ...] = (
    ("real", "Object Perception", wq.on_screen), ("real", "Event Understanding", wq.just_happened),
    ("real", "Action Perception", wq.action), ("real", "Prospective Reasoning", wq.heading),
    ("real", "Clips Summarize", wq.summary), ("omni", "Scene Understanding", wq.scene_list),
    ("omni", "Misleading Context Understanding", wq.premise))


def _rng(seed: int, task: str) -> np.random.Generator:
    """The generator of one sub-task on one stream (independent of the other sub-tasks)."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


def _options(rng: np.random.Generator, answer: str, pool: list[str]) -> tuple[list[str], int]:
    others = [p for p in dict.fromkeys(pool) if p != answer]
    picks = [others[i] for i in rng.permutation(len(others))[:3]] + [answer]
    order = rng.permutation(len(picks))
    opts = [picks[i] for i in order]
    return opts, opts.index(answer)


def _mc(q: dict[str, Any], cfg: WorldConfig, rng: np.random.Generator,
        narrations: list[str]) -> tuple[str, list[str], int] | None:
    """Options for one of the world's own questions: other colours / regions / counts / narrations that never
    happened in the stream."""
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


def _ssr(sid: str, video: str, events: list[dict[str, Any]], fps: float) -> dict[str, Any] | None:
    """OVO-Bench SSR: the events whose narration is unique in the stream as the steps of a "tutorial"."""
    count = Counter(e["text"] for e in events)
    steps = [(prev, e) for prev, e in zip([None, *events], events) if count[e["text"]] == 1]
    if not steps:
        return None
    info = []
    for prev, e in steps:
        before = 0.0 if prev is None else prev["end_frame"] / fps
        info += [{"realtime": (before + e["start_frame"] / fps) / 2, "step": e["text"], "type": 0},
                 {"realtime": e["time"], "step": e["text"], "type": 1}]
    return {"id": f"{sid}-ssr", "task": "SSR", "video": video, "tutorial": "world",
            "all_steps": [e["text"] for _, e in steps], "start_time": [e["start_frame"] / fps for _, e in steps],
            "end_time": [e["end_frame"] / fps for _, e in steps], "test_info": info}


def _ovo_entries(sid: str, video: str, rec: dict[str, Any], cfg: WorldConfig, rng: np.random.Generator,
                 truth: Truth) -> list[dict[str, Any]]:
    events, out = rec["meta"]["events"], []
    texts = [e["text"] for e in events]
    for k, q in enumerate(rec["meta"]["questions"]):
        made = _mc(q, cfg, rng, texts)
        if made and q["type"] in _OVO_TASK:
            out.append({"id": f"{sid}-q{k}", "task": _OVO_TASK[q["type"]], "video": video, "realtime": q["time"],
                        "question": q["question"], "answer": q["answer"], "options": made[1], "gt": made[2]})
    for task, make in _OVO_MORE:
        got = make(truth, _rng(rec["meta"]["seed"], task))
        if got is not None:
            out.append({"id": f"{sid}-{task.lower()}", "task": task, "video": video, "realtime": truth.time(got.frame),
                        "question": got.question, "answer": got.answer, "options": list(got.options), "gt": got.gt})
    if events:
        kind, _ = Counter(e["type"] for e in events).most_common(1)[0]
        own = [e for e in events if e["type"] == kind]
        points = []
        for e, nxt in zip(own, [*(x["time"] for x in own[1:]), np.inf]):
            t = min(e["time"] + 1.0, cfg.duration)
            points.append(t if t < nxt else (e["time"] + nxt) / 2)  # before the next one of its kind
        out.append({"id": f"{sid}-rec", "task": "REC", "video": video, "activity": _VERBS[kind],
                    "start_times": [e["start_frame"] / cfg.fps for e in own],
                    "end_times": [e["end_frame"] / cfg.fps for e in own],
                    "test_info": [{"realtime": t, "count": i + 1} for i, t in enumerate(points)]})
    appear = [e for e in events if e["type"] == "appear" and e["time"] >= 2.0  # no other appearance in between
              and not any(x["type"] == "appear" and e["time"] - 2.0 <= x["time"] < e["time"] for x in events)]
    if appear:
        e = appear[0]
        out.append({"id": f"{sid}-crr", "task": "CRR", "video": video, "question": "Which object appears next?",
                    "answer": f"The {e['objects'][0]}.", "ask_time": e["time"] - 2.0, "clue_time": e["time"],
                    "test_info": [{"realtime": e["time"] - 2.0, "type": 0}, {"realtime": e["time"] - 0.5, "type": 0},
                                  {"realtime": e["time"], "type": 1},
                                  {"realtime": min(e["time"] + 1.0, cfg.duration), "type": 1}]})
    ssr = _ssr(sid, video, events, cfg.fps)
    return out + ([ssr] if ssr else [])


def _sb_question(task: str, question: str, when: float, options: list[str], gt: int) -> dict[str, Any]:
    letters = "ABCD"
    return {"task_type": task, "question": question, "time_stamp": hms(when), "answer": letters[gt],
            "options": [f"{letters[i]}. {o}" for i, o in enumerate(options)], "required_ability": "world"}


def _sb_entries(video: str, rec: dict[str, Any], cfg: WorldConfig, rng: np.random.Generator,
                truth: Truth) -> dict[str, list[dict[str, Any]]]:
    """The stream's StreamingBench entries by file (:data:`SB_FILES`), one question per entry except SQA's pair."""
    out: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in SB_FILES}
    for q in rec["meta"]["questions"]:
        second = float(int(q["time"]))  # StreamingBench times are whole seconds: the scene must match there
        if q["type"] not in _SB_TASK or truth.states[int(second * cfg.fps)] != truth.states[q["frame"]]:
            continue
        made = _mc(q, cfg, rng, [])
        if made:
            out["real"].append([_sb_question(_SB_TASK[q["type"]], q["question"], second, made[1], made[2])])
    seed = rec["meta"]["seed"]
    for file, task, make in _SB_MORE:
        got = make(truth, _rng(seed, task))
        if got is not None:
            out[file].append([_sb_question(task, got.question, truth.time(got.frame), list(got.options), got.gt)])
    pair = wq.sequel(truth, _rng(seed, "Sequential Question Answering"))
    if pair is not None:
        out["sqa"].append([_sb_question("Sequential Question Answering", q.question, truth.time(q.frame),
                                        list(q.options), q.gt) for q in pair])
    appear = [e for e in rec["meta"]["events"] if e["type"] == "appear" and e["time"] >= 1.0
              and float(e["time"]).is_integer()  # its first time on screen
              and truth.frames_of[e["objects"][0]][0] == e["frame"]]
    if appear:
        e = appear[0]
        name = e["objects"][0]
        out["proactive"].append([{"task_type": "Proactive Output",
                                  "question": f'When the {name} appears, output "{name} appeared".',
                                  "time_stamp": hms(0), "ground_truth_time_stamp": hms(e["time"]),
                                  "ground_truth_output": f"{name} appeared", "required_ability": "world"}])
    def part(qs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"time": f"[{hms(0)} - {hms(cfg.duration)}]", "video_categories": "world", "video_path": video,
                "questions": qs}

    # questions_sqa.json nests as upstream's does: an entry is the list of one video's parts
    return {file: [[part(qs)] if file == "sqa" else part(qs) for qs in entries] for file, entries in out.items()}


def _proactive_entry(sid: str, video: str, rec: dict[str, Any], cfg: WorldConfig) -> dict[str, Any]:
    fps = cfg.fps
    return {"video": video, "question_id": sid, "duration": cfg.num_frames / fps,
            "conversation": [{"role": "user", "content": "Narrate what happens in the video.", "time": 0}],
            "answer": [{"role": "assistant", "content": e["text"],
                        "related_timespan": [e["start_frame"] / fps, e["frame"] / fps],
                        "reply_timespan": [e["start_frame"] / fps, min(e["frame"] / fps + 1.0, cfg.duration)]}
                       for e in rec["meta"]["events"]]}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def world_to_benchmark(out_dir: str | Path, benchmark: str, n: int, seed: int, cfg: WorldConfig | None = None,
                       video_format: str = "mp4") -> Path:
    """Write ``n`` world streams as ``benchmark`` data under ``out_dir``; return what ``livecue eval --data`` takes.

    Layouts: OVO-Bench ``ovo_bench_new.json`` + ``src_videos/world/`` (returns the file); StreamingBench
    ``questions_{real,omni,sqa,proactive}.json`` + ``videos/`` (returns ``out_dir``, whose ``questions_*.json``
    ``load_items`` reads together); ProactiveVideoQA ``WORLD/anno.json`` + ``WORLD/videos/`` (returns the file).

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
    video_dir = {"ovo": out / "src_videos", "streamingbench": out, "proactive": out / "WORLD" / "videos"}[benchmark]
    entries: list[dict[str, Any]] = []
    sb: dict[str, list[dict[str, Any]]] = {name: [] for name in SB_FILES}
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
        story = simulate_stream(cfg, s)
        if benchmark == "ovo":
            entries += _ovo_entries(sid, rel, rec, cfg, rng, Truth(cfg, story.states, story.events))
        elif benchmark == "streamingbench":
            truth = Truth(cfg, story.states, story.events, whole=True)
            for name, got in _sb_entries(rel, rec, cfg, rng, truth).items():
                sb[name] += got
        else:
            entries.append(_proactive_entry(sid, rel, rec, cfg))
    if benchmark == "streamingbench":
        for name, got in sb.items():
            _write_json(out / f"questions_{name}.json", got)
        return out
    anno = out / "ovo_bench_new.json" if benchmark == "ovo" else out / "WORLD" / "anno.json"
    _write_json(anno, entries)
    return anno

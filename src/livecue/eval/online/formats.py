"""Loaders for the public annotation formats of the online-video benchmarks, into :class:`~.items.OnlineItem`.

* **OVO-Bench** (github.com/JoeLeelyf/OVO-Bench, ``ovo_bench_new.json``): one JSON list. Backward (EPM, ASI, HLD) and
  real-time (STU, OJR, ATR, ACR, OCR, FPD) entries have ``id, task, video, realtime, question, options, gt`` (an
  index) → protocol ``mc`` asked at ``realtime``. Forward entries (REC, SSR, CRR) have ``test_info``: query points
  ``realtime`` with the expected answer (REC ``count``; SSR/CRR ``type`` 1 = "Yes", 0 = "No") → protocol ``forward``
  with one point window ``(realtime, realtime, expected)`` per query. REC asks "How many times did they
  <activity>?" from 0 s; CRR asks its ``question`` at ``ask_time``; SSR is split into one item per step (id
  ``<id>/<step index>``: each step is its own yes/no question, asked from 0 s). Videos: ``<anno dir>/src_videos/``.
* **StreamingBench** (github.com/THUNLP-MT/StreamingBench ``src/data/questions_*.json``, and the HF dataset
  mjuicem/StreamingBench ``StreamingBench/*.csv``). JSON: a list of ``{video_path, questions: [{task_type, question,
  time_stamp "HH:MM:SS", options ["A. ..."], answer "B"}]}``; proactive questions have ``ground_truth_time_stamp``
  and ``ground_truth_output`` instead of options. CSV: columns ``question_id, task_type, question, time_stamp,
  answer, options`` (a Python list literal); the video is ``<csv dir>/<prefix>/sample_<N>/video.mp4`` for
  ``question_id`` ``<prefix>_sample_<N>_<k>``. Groups follow the paper's task taxonomy (:data:`SB_GROUPS`).
  ``questions_sqa.json`` (Sequential Question Answering) nests: an entry is a list of one video's parts, and each
  question after the first is asked with the earlier ones and their answers in front, in upstream's words
  (``src/benchmark/StreamingBenchSQA.py``: :data:`SQA_CONTEXT`, "At timestamp T, the following question and answer
  occurred: ...", :data:`SQA_QUESTION`); ids ``<file>/<entry>/<part>/<k>``.
  Omni-source items need audio unless their question is purely visual: an omni-source item is kept only when its
  question mentions no speech or sound (:data:`AUDIO_WORDS`); ``include_audio=True`` keeps them all.
* **ProactiveVideoQA** (github.com/yellow-binary-tree/ProactiveVideoQA, ``<SUBSET>/anno.json``): a list of
  ``{video, question_id, conversation: [{role, content, time}], answer: [{content, related_timespan,
  reply_timespan}], duration}`` → protocol ``proactive`` asked at ``conversation[0]``'s time, one window per answer
  turn (``reply_timespan``, its content, ``related_timespan`` when given), the stream ending at ``duration``. The
  later ``role: user`` turns of ``conversation`` (TV subtitles ``"Subtitle: ..."``) become the item's ``turns``:
  the runner gives them to the model at their times without asking for a reply, as upstream's streaming inference
  feeds every user turn. Videos: ``<anno dir>/videos/``.

A directory is searched for the benchmark's files (:func:`load_items`). Missing videos are not checked here (the
runner does); a malformed file raises one ``ValueError`` naming the file and the field.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .items import BENCHMARKS, OnlineItem, Window

log = logging.getLogger(__name__)

__all__ = ["load_items", "strip_option", "parse_timestamp", "SB_GROUPS", "AUDIO_WORDS", "OVO_GROUPS"]

OVO_GROUPS = {**{t: "backward" for t in ("EPM", "ASI", "HLD")},
              **{t: "realtime" for t in ("STU", "OJR", "ATR", "ACR", "OCR", "FPD")},
              **{t: "forward" for t in ("REC", "SSR", "CRR")}}
SB_GROUPS = {**{t: "realtime" for t in ("Object Perception", "Causal Reasoning", "Clips Summarize",
                                         "Attribute Perception", "Event Understanding", "Text-Rich Understanding",
                                         "Prospective Reasoning", "Spatial Understanding", "Action Perception",
                                         "Counting")},
             **{t: "omni" for t in ("Emotion Recognition", "Scene Understanding", "Source Discrimination",
                                    "Multimodal Alignment")},
             **{t: "contextual" for t in ("Misleading Context Understanding", "Anomaly Context Understanding",
                                          "Sequential Question Answering")},
             "Proactive Output": "proactive"}
AUDIO_WORDS = re.compile(r"\b(said|say|says|saying|speak\w*|spoke|speech|voice\w*|hear\w*|sound\w*|audio|music\w*|"
                         r"song\w*|sing\w*|tone|talk\w*|mention\w*|lyrics?|noise|loud\w*|narrat\w*)\b", re.I)
_PREFIX = re.compile(r"^\s*\(?([A-Za-z])\s*[.):]\s*")


class _Fail:
    """Raises the loader's one-line error for a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, where: str, field: str, msg: str) -> ValueError:
        return ValueError(f"{self.path}: {where}: field {field!r} {msg}")


def strip_option(text: str, index: int) -> str:
    """Drop a leading ``"A. "`` / ``"(B)"`` / ``"C:"`` from option ``index`` when its letter is that position's."""
    m = _PREFIX.match(text)
    if m and m.group(1).upper() == chr(ord("A") + index) and m.end() < len(text):
        return text[m.end():].strip()
    return text.strip()


def parse_timestamp(value: Any) -> float:
    """Seconds from ``"HH:MM:SS"`` / ``"MM:SS"`` / a number. Raises ``ValueError`` when it is none of these."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    parts = str(value).strip().split(":")
    if not 1 <= len(parts) <= 3:
        raise ValueError(value)
    return sum(float(p) * 60 ** i for i, p in enumerate(reversed(parts)))


def _get(entry: Any, key: str, kind: type | tuple[type, ...], fail: _Fail, where: str) -> Any:
    if not isinstance(entry, dict):
        raise fail(where, key, f"cannot be read: the entry is a {type(entry).__name__}, not an object")
    if key not in entry:
        raise fail(where, key, "is missing")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise fail(where, key, f"has the wrong type {type(value).__name__}")
    return value


def _time(entry: dict[str, Any], key: str, fail: _Fail, where: str) -> float:
    value = _get(entry, key, (int, float, str), fail, where)
    try:
        t = parse_timestamp(value)
    except ValueError:
        raise fail(where, key, f"is not a time: {value!r}") from None
    if not t >= 0:
        raise fail(where, key, f"must be >= 0, got {value!r}")
    return t


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _resolve(base: Path, video: str) -> str:
    return video if Path(video).is_absolute() else str((base / video).resolve())


# ---- OVO-Bench -----------------------------------------------------------------------------------------------------
def _ovo_point(p: dict[str, Any], task: str, fail: _Fail, where: str) -> Window:
    """One forward query point: REC expects its ``count``; SSR / CRR expect "Yes" (``type`` 1) or "No"."""
    t = _time(p, "realtime", fail, where)
    if task == "REC":
        return Window(t, t, str(_get(p, "count", int, fail, where)))
    return Window(t, t, "Yes" if _get(p, "type", int, fail, where) == 1 else "No")


def _ovo(path: Path, video_root: Path | None, include_audio: bool) -> list[OnlineItem]:
    fail, data = _Fail(path), _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: an OVO-Bench annotation must be a JSON list of entries")
    root = video_root or path.parent / "src_videos"
    items = []
    for n, e in enumerate(data):
        where = f"entry {n}"
        task = _get(e, "task", str, fail, where)
        if task not in OVO_GROUPS:
            raise fail(where, "task", f"must be one of {', '.join(OVO_GROUPS)}, got {task!r}")
        ident = str(_get(e, "id", (int, str), fail, where))
        video = _resolve(root, _get(e, "video", str, fail, where))
        group = OVO_GROUPS[task]
        meta = {k: v for k, v in e.items() if k not in ("question", "options", "gt", "video")}
        if group != "forward":
            options = _get(e, "options", list, fail, where)
            gt = _get(e, "gt", int, fail, where)
            if not 0 <= gt < len(options):
                raise fail(where, "gt", f"must index the {len(options)} options, got {gt}")
            items.append(OnlineItem("ovo", f"{group}/{task}", ident, video, _get(e, "question", str, fail, where),
                                    _time(e, "realtime", fail, where), "mc",
                                    tuple(strip_option(str(o), i) for i, o in enumerate(options)), chr(65 + gt),
                                    meta=meta))
            continue
        points = _get(e, "test_info", list, fail, where)
        if not points:
            raise fail(where, "test_info", "is empty")
        for k, p in enumerate(points):
            _time(p, "realtime", fail, f"{where} test_info[{k}]")

        def window(p: dict[str, Any], k: int, task: str = task, where: str = where) -> Window:
            return _ovo_point(p, task, fail, f"{where} test_info[{k}]")

        if task == "REC":
            question = f"How many times did they {_get(e, 'activity', str, fail, where)}?"
            wins = sorted((window(p, k) for k, p in enumerate(points)), key=lambda w: w.start)
            items.append(OnlineItem("ovo", "forward/REC", ident, video, question, 0.0, "forward", windows=tuple(wins),
                                    meta=meta))
        elif task == "CRR":
            wins = sorted((window(p, k) for k, p in enumerate(points)), key=lambda w: w.start)
            ask = _time(e, "ask_time", fail, where) if "ask_time" in e else 0.0
            items.append(OnlineItem("ovo", "forward/CRR", ident, video, _get(e, "question", str, fail, where), ask,
                                    "forward", windows=tuple(wins), meta=meta))
        else:  # SSR: one yes/no item per step
            steps = _get(e, "all_steps", list, fail, where)
            for s, step in enumerate(steps):
                own = [(p, k) for k, p in enumerate(points) if _get(p, "step", str, fail, f"{where} test_info[{k}]")
                       == step]
                wins = sorted((window(p, k) for p, k in own), key=lambda w: w.start)
                items.append(OnlineItem("ovo", "forward/SSR", f"{ident}/{s}", video, str(step), 0.0, "forward",
                                        windows=tuple(wins), meta={**meta, "step_index": s}))
    return items


# ---- StreamingBench ------------------------------------------------------------------------------------------------
SQA_CONTEXT = ("Here are the contextual information related to the video. Please answer the questions based on the "
               "contextual information: ")
SQA_QUESTION = "\n\nHere is the question. Answer it and don't confuse it with the previous conversation.\n"


def _sqa_turn(item: OnlineItem, question: str) -> str:
    """One earlier question with its answer, as StreamingBench's SQA evaluator writes it into the later ones."""
    options = ", ".join(f"{letter}. {opt}" for letter, opt in zip(item.letters, item.options))
    return (f"At timestamp {item.meta.get('time_stamp')}, the following question and answer occurred: Question: "
            f"{question}; Options: {options}; Answer: {item.answer}; ")


def _sb_item(q: dict[str, Any], ident: str, video: str, fail: _Fail, where: str,
             include_audio: bool, context: str = "") -> OnlineItem | None:
    task = _get(q, "task_type", str, fail, where)
    if task not in SB_GROUPS:
        raise fail(where, "task_type", f"must be a StreamingBench task ({', '.join(SB_GROUPS)}), got {task!r}")
    group, question = SB_GROUPS[task], _get(q, "question", str, fail, where)
    if group == "omni" and not include_audio and AUDIO_WORDS.search(question):
        return None
    ask = _time(q, "time_stamp", fail, where)
    meta = {k: v for k, v in q.items() if k not in ("question", "options", "answer")}
    if group == "proactive":
        gt = _time(q, "ground_truth_time_stamp", fail, where)
        out = _get(q, "ground_truth_output", str, fail, where)
        return OnlineItem("streamingbench", f"proactive/{task}", ident, video, question, ask, "proactive",
                          windows=(Window(gt, gt, out),), meta=meta)
    options = _get(q, "options", (list, str), fail, where)
    if isinstance(options, str):
        try:
            options = ast.literal_eval(options)
        except (SyntaxError, ValueError):
            raise fail(where, "options", f"is not a list: {options[:40]!r}") from None
        if not isinstance(options, list):
            raise fail(where, "options", "is not a list")
    answer = _get(q, "answer", str, fail, where).strip().upper()
    if not (len(answer) == 1 and 0 <= ord(answer) - 65 < len(options)):
        raise fail(where, "answer", f"must be an option letter A-{chr(64 + len(options))}, got {answer!r}")
    if context:  # a later question of a sequence: the earlier ones and their answers first, as upstream prompts
        meta = {**meta, "context": context}
    text = f"{SQA_CONTEXT}{context}{SQA_QUESTION}Question: {question}" if context else question
    return OnlineItem("streamingbench", f"{group}/{task}", ident, video, text, ask, "mc",
                      tuple(strip_option(str(o), i) for i, o in enumerate(options)), answer, meta=meta)


def _sb_json(path: Path, video_root: Path | None, include_audio: bool) -> list[OnlineItem]:
    fail, data = _Fail(path), _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a StreamingBench annotation must be a JSON list of video entries")
    root, items, skipped = video_root or path.parent, [], 0
    for n, entry in enumerate(data):
        # questions_sqa.json: an entry is a list of one video's parts, whose questions form one sequence (each asked
        # with the earlier ones and their answers); the other files: one part per entry
        parts, nested = (entry, True) if isinstance(entry, list) else ([entry], False)
        context = ""
        for m, part in enumerate(parts):
            where = f"entry {n} part {m}" if nested else f"entry {n}"
            video = _resolve(root, _get(part, "video_path", str, fail, where))
            for k, q in enumerate(_get(part, "questions", list, fail, where)):
                ident = f"{path.stem}/{n}/{m}/{k}" if nested else f"{path.stem}/{n}/{k}"
                item = _sb_item(q, ident, video, fail, f"{where} question {k}", include_audio, context)
                if item is None:
                    skipped += 1
                    continue
                items.append(item)
                if nested and item.protocol == "mc":
                    context += _sqa_turn(item, q["question"])
    if skipped:
        log.info("%s: skipped %d omni-source question(s) that need audio", path, skipped)
    return items


def _sb_csv(path: Path, video_root: Path | None, include_audio: bool) -> list[OnlineItem]:
    fail, items = _Fail(path), []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for n, row in enumerate(rows):
        where = f"row {n + 2}"
        qid = _get(row, "question_id", str, fail, where)
        m = re.fullmatch(r"(.+)_sample_(\d+)_(\d+)", qid)
        if not m:
            raise fail(where, "question_id", f"must look like '<task>_sample_<N>_<k>', got {qid!r}")
        video = _resolve(video_root or path.parent, f"{m.group(1)}/sample_{m.group(2)}/video.mp4")
        item = _sb_item(row, qid, video, fail, where, include_audio)
        if item is not None:
            items.append(item)
    return items


# ---- ProactiveVideoQA ----------------------------------------------------------------------------------------------
def _span(a: dict[str, Any], key: str, fail: _Fail, where: str) -> tuple[float, float]:
    """A ``[start, end]`` timespan in seconds, ``0 <= start <= end``."""
    span = _get(a, key, list, fail, where)
    if len(span) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in span) \
            or not 0 <= span[0] <= span[1]:
        raise fail(where, key, f"must be [start, end] seconds with 0 <= start <= end, got {span!r}")
    return float(span[0]), float(span[1])


def _proactive_turns(turns: list[Any], fail: _Fail, where: str) -> tuple[tuple[float, str], ...]:
    """The later user turns ``(time, content)`` in time order (upstream feeds every ``role: user`` turn, a turn
    without a role being one; one with no text says nothing and is skipped)."""
    out = []
    for k, turn in enumerate(turns[1:], 1):
        at = f"{where} conversation[{k}]"
        if (_get(turn, "role", str, fail, at) if isinstance(turn, dict) and "role" in turn else "user") != "user":
            continue
        text = _get(turn, "content", str, fail, at)
        if text.strip():
            out.append((_time(turn, "time", fail, at), text))
    return tuple(sorted(out, key=lambda turn: turn[0]))


def _proactive(path: Path, video_root: Path | None, include_audio: bool) -> list[OnlineItem]:
    fail, data = _Fail(path), _read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a ProactiveVideoQA annotation must be a JSON list of entries")
    root, subset, items = video_root or path.parent / "videos", path.parent.name, []
    for n, e in enumerate(data):
        where = f"entry {n}"
        turns = _get(e, "conversation", list, fail, where)
        if not turns:
            raise fail(where, "conversation", "is empty")
        first = turns[0]
        wins = []
        for k, a in enumerate(_get(e, "answer", list, fail, where)):
            at = f"{where} answer[{k}]"
            start, end = _span(a, "reply_timespan", fail, at)
            related = _span(a, "related_timespan", fail, at) if "related_timespan" in a else None
            wins.append(Window(start, end, _get(a, "content", str, fail, at), related))
        meta = {"subset": subset,
                **{k: v for k, v in e.items() if k not in ("answer", "conversation", "video", "question_id")}}
        end_time = e.get("duration")
        items.append(OnlineItem("proactive", f"proactive/{subset}", str(_get(e, "question_id", str, fail, where)),
                                _resolve(root, _get(e, "video", str, fail, where)),
                                _get(first, "content", str, fail, f"{where} conversation[0]"),
                                _time(first, "time", fail, f"{where} conversation[0]"), "proactive",
                                windows=tuple(sorted(wins, key=lambda w: w.start)),
                                end_time=float(end_time) if isinstance(end_time, (int, float)) else None,
                                turns=_proactive_turns(turns, fail, where), meta=meta))
    return items


_LOADERS: dict[str, list[tuple[str, Callable[[Path, Path | None, bool], list[OnlineItem]]]]] = {
    "ovo": [("*.json", _ovo)],
    "streamingbench": [("questions_*.json", _sb_json), ("*.csv", _sb_csv)],
    "proactive": [("*/anno.json", _proactive), ("anno.json", _proactive)],
}


def load_items(benchmark: str, path_or_dir: str | Path, *, video_root: str | Path | None = None,
               include_audio: bool = False) -> list[OnlineItem]:
    """Load a benchmark's annotation file, or every annotation file of a directory, as :class:`OnlineItem` s.

    Args:
        benchmark: ``ovo``, ``streamingbench`` or ``proactive``.
        path_or_dir: an annotation file, or a directory searched (non-recursively, plus one level for
            ProactiveVideoQA subsets) for ``*.json`` (OVO-Bench), ``questions_*.json`` else ``*.csv``
            (StreamingBench), ``<SUBSET>/anno.json`` (ProactiveVideoQA), in sorted order.
        video_root: where relative video paths point (default: the benchmark's layout next to the annotation).
        include_audio: keep StreamingBench omni-source questions that need audio.

    Raises:
        ValueError: unknown benchmark, no annotation file, a malformed file (naming the file and the field), or
            duplicate item ids.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    path, root = Path(path_or_dir), Path(video_root) if video_root is not None else None
    if path.is_file():
        loader = next((fn for pat, fn in _LOADERS[benchmark] if path.match(pat)), _LOADERS[benchmark][0][1])
        items = loader(path, root, include_audio)
    elif path.is_dir():
        items = []
        for pattern, fn in _LOADERS[benchmark]:
            files = sorted(path.glob(pattern))
            if files:
                items = [it for f in files for it in fn(f, root, include_audio)]
                break
        else:
            raise ValueError(f"{path}: no {benchmark} annotation file found "
                             f"({' or '.join(p for p, _ in _LOADERS[benchmark])})")
    else:
        raise ValueError(f"{path}: no such annotation file or directory")
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise ValueError(f"{path}: duplicate item id {it.id!r}")
        seen.add(it.id)
    return items

"""Free-running evaluation: the model runs on the stream through :class:`StreamEngine`, as users run it.

Per record, one session (the record's system message, else the model's default prompt; θ as given) receives the
record's frames at their times ``k / fps`` and its user messages as queries at their times. What it says is scored
against the record:

* **reference replies** = assistant messages not directly after a user message (the model must speak by itself),
  each at the record's last frame before it; **reference answers** = assistant messages directly after a user
  message. A user message with no such answer (an instruction, e.g. "Please narrate ...") is still sent as a query
  (the engine answers every query; that answer is not scored).
* **speak timing**: predicted reply frames are matched one-to-one to reference reply frames within ±``tolerance``
  frames (:func:`~livecue.eval.textmetrics.match_times`: greedy, closest pairs first) → precision, recall, F1.
* **TimeDiff** (seconds): per reference reply, |Δ| to the nearest actual reply assigned to it (each reply goes to
  its nearest reference), capped at SPEC §7's look-ahead window; a reference with no reply scores the cap
  (:func:`~livecue.eval.textmetrics.nearest_time_diffs`); frames / fps.
* **reply correctness** on matched pairs and **answer correctness** on scored answers: exact match after
  :func:`~livecue.eval.textmetrics.normalize_text`, and the cosine similarity of all-MiniLM-L6-v2 embeddings
  (skipped, with a note, when its package is absent).
* **replies per minute** (and the reference's rate).

Dataset numbers are pooled: precision/recall/F1 from summed counts, TimeDiff over all reference replies, text
scores over all pairs, rates from total replies and total minutes. Per-record numbers are kept too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import FrameProvider
from ..data.records import num_frames, truncate
from ..inference.engine import StreamEngine
from ..inference.events import Answer, Reply
from ..inference.options import FastPath, check_option
from .common import frame_provider, load_records, to_features
from .similarity import MISSING_NOTE, TextSimilarity, load_similarity
from .textmetrics import match_times, nearest_time_diffs, normalize_text, prf

log = logging.getLogger(__name__)


@dataclass
class Reference:
    """What a record expects: self-initiated replies ``(frame, text)`` and queries ``(time, text, answer)``."""

    replies: list[tuple[int, str]] = field(default_factory=list)
    queries: list[tuple[float, str, str | None]] = field(default_factory=list)


def reference(record: dict[str, Any]) -> Reference:
    """The reference replies and queries of a record (see the module docstring)."""
    ref = Reference()
    frames = 0
    messages = record["messages"]
    for i, msg in enumerate(messages):
        role = msg["role"]
        if role == "stream":
            frames += msg.get("num_frames", 0)
        elif role == "user":
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            answer = nxt["content"] if nxt is not None and nxt["role"] == "assistant" else None
            ref.queries.append((float(msg["time"]), msg["content"], answer))
        elif role == "assistant" and not (i and messages[i - 1]["role"] == "user"):
            ref.replies.append((max(frames - 1, 0), msg["content"]))
    return ref


@dataclass
class FreeRun:
    """What the model did on one record."""

    id: str
    fps: float
    num_frames: int
    replies: list[dict[str, Any]] = field(default_factory=list)   # {"frame", "t", "text"}
    answers: list[dict[str, Any]] = field(default_factory=list)   # {"query_t", "query", "t", "text"}


def run_record(engine: StreamEngine, record: dict[str, Any], features: torch.Tensor, threshold: float) -> FreeRun:
    """Stream one record through a fresh session. Shape: features (F, K, D_vision)."""
    first = record["messages"][0]
    system = (first["content"] or None) if first["role"] == "system" else None  # "" -> the model's prompt
    session = engine.session(system, threshold=threshold)
    fps = float(record["fps"])
    for t, text, answer in reference(record).queries:
        # a user turn with no assistant reply after it (e.g. the narration instruction) is an instruction
        session.add_query(text, at=t, answer=answer is not None)
    run = FreeRun(record["id"], fps, features.shape[0])

    def collect(events: Any) -> None:
        for e in events:
            if isinstance(e, Reply):
                run.replies.append({"frame": e.frame, "t": e.t, "text": e.text})
            elif isinstance(e, Answer):
                run.answers.append({"query_t": e.query_t, "query": e.query, "t": e.t, "text": e.text})

    for k in range(features.shape[0]):
        collect(session.push_frame(features[k], k / fps))
    collect(session.finish())
    return run


def score_run(run: FreeRun, ref: Reference, tolerance: int = 1) -> dict[str, Any]:
    """Per-record counts, timing and the text pairs to score (see the module docstring)."""
    pred = [r["frame"] for r in run.replies]
    gold = [f for f, _ in ref.replies]
    pairs = match_times(pred, gold, tolerance)
    diffs = nearest_time_diffs(pred, gold, run.num_frames)
    p = prf(len(pred), len(gold), len(pairs))
    # each reference answer against the model's answer to the same query (instructions have no answer)
    answered = {(round(a["query_t"], 6), a["query"]): a["text"] for a in run.answers}
    scored = [(answered[key], answer) for t, text, answer in ref.queries
              if answer is not None and (key := (round(t, 6), text.strip())) in answered]
    minutes = run.num_frames / run.fps / 60
    return {
        "id": run.id, "frames": run.num_frames, "replies": len(pred), "references": len(gold), "matched": len(pairs),
        "precision": p.precision, "recall": p.recall, "f1": p.f1,
        "time_diff": sum(diffs) / len(diffs) / run.fps if diffs else None,
        "time_diffs_s": [d / run.fps for d in diffs], "minutes": minutes,
        "replies_per_minute": len(pred) / minutes if minutes else 0.0,
        "reply_pairs": [(run.replies[i]["text"], ref.replies[j][1]) for i, j in pairs],
        "answer_pairs": scored, "events": run.replies, "reference_times_s": [f / run.fps for f in gold],
    }


@dataclass
class FreeResult:
    threshold: float
    tolerance: int
    samples: list[dict[str, Any]]
    means: dict[str, float]
    notes: list[str] = field(default_factory=list)


def free_metrics(samples: Sequence[dict[str, Any]], threshold: float, tolerance: int,
                 similarity: TextSimilarity | None = None) -> FreeResult:
    """Pool per-record :func:`score_run` results (and score the text pairs)."""
    pred = sum(s["replies"] for s in samples)
    gold = sum(s["references"] for s in samples)
    matched = sum(s["matched"] for s in samples)
    p = prf(pred, gold, matched)
    diffs = [d for s in samples for d in s["time_diffs_s"]]
    minutes = sum(s["minutes"] for s in samples)
    means: dict[str, float] = {
        "precision": p.precision, "recall": p.recall, "f1": p.f1,
        "time_diff": sum(diffs) / len(diffs) if diffs else 0.0,
        "replies_per_minute": pred / minutes if minutes else 0.0,
        "reference_replies_per_minute": gold / minutes if minutes else 0.0,
        "samples": len(samples), "replies": pred, "references": gold, "matched": matched,
    }
    notes = []
    for kind in ("reply", "answer"):
        pairs = [pair for s in samples for pair in s[f"{kind}_pairs"]]
        means[f"{kind}_pairs"] = len(pairs)
        if pairs:
            means[f"{kind}_exact"] = sum(normalize_text(a) == normalize_text(b) for a, b in pairs) / len(pairs)
            if similarity is not None:
                scores = similarity.scores([a for a, _ in pairs], [b for _, b in pairs])
                means[f"{kind}_similarity"] = sum(scores) / len(scores)
    if similarity is None:
        notes.append(MISSING_NOTE)
    return FreeResult(threshold, tolerance, list(samples), means, notes)


def evaluate_free(model: Any, tokenizer: Any, data: str | Path | Sequence[dict[str, Any]], *,
                  threshold: float | None = None, tolerance: int = 1, max_samples: int | None = None,
                  feature_cache: str | Path | None = None, frames: FrameProvider | None = None,
                  similarity: TextSimilarity | bool | None = True, features: dict[str, torch.Tensor] | None = None,
                  progress: Callable[[int, int], None] | None = None, memory: Any = None,
                  max_frames: int | None = None, fast: FastPath | None = None) -> FreeResult:
    """Run the model free on every record and score it.

    Args:
        threshold: θ (default: the model's config).
        tolerance: the speak-timing tolerance in frames (±).
        similarity: a scorer, True to load all-MiniLM-L6-v2 when installed, False/None to skip.
        features: a cache of frame features by record id, filled and reused (θ sweeps run many times).
        memory: the sessions' memory policy (:mod:`livecue.inference.memory`; default unbounded).
        max_frames: cut records at this many frames (default: ``stream.max_num_frames``; 0: whole records).
        fast: the engine's fast path (:class:`~livecue.inference.options.FastPath`; default eager).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 frames, got {tolerance}")
    threshold = model.cfg.stream.threshold if threshold is None else check_option("threshold", threshold)
    cut = model.cfg.stream.max_num_frames if max_frames is None else (max_frames or None)
    records = [truncate(r, cut) if cut else r for r in load_records(data, max_samples)]
    provider = frames or frame_provider(model, data if isinstance(data, (str, Path)) else None, feature_cache)
    engine = StreamEngine(model, tokenizer, memory=memory, fast=fast)
    cache = features if features is not None else {}
    samples = []
    for n, record in enumerate(records, 1):
        if record["id"] not in cache:
            cache[record["id"]] = to_features(model, provider(record))
        feats = cache[record["id"]]
        if feats.shape[0] != num_frames(record):
            raise ValueError(f"record {record['id']!r}: {num_frames(record)} frames expected, got {feats.shape[0]}")
        samples.append(score_run(run_record(engine, record, feats, threshold), reference(record), tolerance))
        if progress is not None:
            progress(n, len(records))
    scorer = load_similarity(model.device) if similarity is True else (similarity or None)
    result = free_metrics(samples, threshold, tolerance, scorer)
    if similarity is False or similarity is None:
        result.notes = ["semantic similarity not requested"]
    return result

"""Teacher-forced narration evaluation (SPEC §7) over a records file, batched.

Scoring is split in two so that a θ sweep costs one forward per record:

1. :func:`score_records` runs the teacher-forced forward (``batch_size`` records at a time, right-padded with
   :func:`~livecue.data.dataset.collate`; each row's logits are read only over its own length, so a batch gives
   the numbers of batch size 1) and keeps, per turn, the θ-independent scores (:class:`~livecue.eval.metrics.
   TurnScores`). For every turn whose late rule needs the model at any requested θ it then runs the look-ahead:
   the record's tokens up to the turn's last stream position are fed through the KV cache (chunk by chunk, each
   token once per record), ``m`` future frames (interval + frame each, the gold answer dropped) are appended,
   their decision scores read at each frame's last token (``frame_end``), and the cache is cropped back.
2. :func:`narration_metrics` computes the metrics at any θ from those scores (pure).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.dataset import FrameProvider, Sample, StreamDataset, collate
from ..data.labels import Markers
from ..data.template import Template
from ..inference.options import check_option
from ..model import lm as lm_api
from .common import frame_provider, load_records, to_features
from .metrics import (
    SampleMetrics,
    StreamScore,
    TurnScores,
    decision_counts,
    extract_turns,
    look_ahead_requests,
    mean_metrics,
    sample_metrics,
)
from .textmetrics import prf

log = logging.getLogger(__name__)


@dataclass
class RecordScores:
    """The θ-independent result of one record's forward: its turns and the look-ahead scores computed so far."""

    id: str
    fps: float
    turns: list[TurnScores]
    future: dict[int, list[StreamScore]] = field(default_factory=dict)


@dataclass
class NarrationResult:
    """Metrics at one θ: per sample and their means (plus livecue's teacher-forced speak precision/recall/F1)."""

    threshold: float
    samples: list[dict[str, Any]]
    means: dict[str, float]


def score_records(model: Any, tokenizer: Any, dataset: StreamDataset, thresholds: Sequence[float], *,
                  batch_size: int = 1, progress: Callable[[int, int], None] | None = None) -> list[RecordScores]:
    """Forward every record of ``dataset`` and run the look-aheads needed at any of ``thresholds``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    markers: Markers = dataset.markers
    k = model.frame_num_tokens
    out: list[RecordScores] = []
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        samples = [dataset[i] for i in idx]
        feats = [to_features(model, s.frames) for s in samples]
        batch = collate([Sample(s.id, s.input_ids, s.labels, f) for s, f in zip(samples, feats)],
                        tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = model(batch["input_ids"].to(model.device), frame_features=batch.get("frame_features"),
                           attention_mask=batch["attention_mask"].to(model.device)).logits  # (B, T, V)
        for row, (i, s, f) in enumerate(zip(idx, samples, feats)):
            n = len(s.input_ids)
            turns = extract_turns(s.input_ids, s.labels, logits[row, :n], v_id=markers.v, eos_id=markers.eos,
                                  silence_id=markers.silence, frame_num_tokens=k, frame_end_id=markers.frame_end,
                                  turn_ends=s.turn_ends)
            rec = RecordScores(s.id, float(dataset.records[i]["fps"]), turns)
            requests = look_ahead_requests(turns, thresholds)
            if requests:
                rec.future = look_ahead(model, s.input_ids, f, turns, requests, markers, dataset.template)
            out.append(rec)
        del logits
        if progress is not None:
            progress(len(out), len(dataset))
    return out


@torch.inference_mode()
def look_ahead(model: Any, input_ids: torch.Tensor, features: torch.Tensor, turns: Sequence[TurnScores],
               requests: dict[int, int], markers: Markers, template: Template) -> dict[int, list[StreamScore]]:
    """The late rule's model calls: decision scores of ``m`` future frames after each requested turn.

    Args:
        input_ids: (T,) the record's tokens; features: (F, K, D_vision) its frames.
        turns: the record's turns; requests: turn index -> m.
        markers: the tokenizer's marker ids (the interval and a frame's ids); template: the model's template (K).

    Returns:
        Turn index -> m :class:`StreamScore` (one per appended frame).
    """
    k = template.frame_num_tokens
    frame = [*markers.interval, *markers.frame(k)]  # decided at its last token, the frame_end
    by_index = {t.index: t for t in turns}
    cache, cursor, frame_cursor, position = None, 0, 0, 0  # position: where the next token sits (M-RoPE models)
    out: dict[int, list[StreamScore]] = {}
    for r in sorted(requests):
        turn, m = by_index[r], requests[r]
        stop = turn.last_stream_pos + 1
        chunk = input_ids[cursor:stop]
        nf = int((chunk == markers.v).sum()) // k
        if chunk.numel():
            out_, position = _forward(model, chunk, features[frame_cursor:frame_cursor + nf], cache, position)
            cache = out_.cache
        cursor, frame_cursor = stop, frame_cursor + nf
        # the frames right after the last stream position: the next turn's first frames (upstream's choice)
        # whenever that frame ends the turn's frames, as it does in every reply turn the converters write
        future = features[frame_cursor:frame_cursor + m]
        if future.shape[0] != m:
            raise ValueError(f"turn {r} needs {m} future frames from frame {frame_cursor}, the record has "
                             f"{features.shape[0]}")
        logits = _forward(model, torch.tensor(frame * m), future, cache, position)[0].logits[0]  # (m*len(frame), V)
        at = torch.arange(len(frame) - 1, len(frame) * m, len(frame), device=logits.device)
        p = logits[at].float().softmax(-1)
        arg = (p.argmax(-1) == markers.silence).tolist()
        out[r] = [StreamScore(ps, a) for ps, a in zip(p[:, markers.silence].tolist(), arg)]
        lm_api.crop_cache(cache, stop)
    return out


def _forward(model: Any, ids: torch.Tensor, features: torch.Tensor, cache: Any, start: int) -> tuple[Any, int]:
    """One cached forward of ``ids`` whose first token sits at position ``start``; (output, the next position)."""
    positions, after = model.positions(ids[None], start)
    out = model(ids[None].to(model.device), frame_features=features if features.shape[0] else None, cache=cache,
                position_ids=positions, use_cache=True)
    return out, int(after[0])


def narration_metrics(scores: Sequence[RecordScores], threshold: float) -> NarrationResult:
    """The SPEC §7 metrics at θ from :func:`score_records` output (pure; no model calls)."""
    per: list[SampleMetrics] = []
    tp = fp = fn = 0
    for rec in scores:
        per.append(sample_metrics(rec.turns, threshold, rec.fps, rec.future))
        a, b, c = decision_counts(rec.turns, threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    means = mean_metrics(per)
    speak = prf(tp + fp, tp + fn, tp)
    means.update(speak_precision=speak.precision, speak_recall=speak.recall, speak_f1=speak.f1)
    samples = [dict(id=rec.id, **m.to_dict()) for rec, m in zip(scores, per)]
    return NarrationResult(threshold=threshold, samples=samples, means=means)


def evaluate_narration(model: Any, tokenizer: Any, data: str | Path | Sequence[dict[str, Any]], *,
                       threshold: float | None = None, batch_size: int = 1, max_samples: int | None = None,
                       feature_cache: str | Path | None = None, frames: FrameProvider | None = None
                       ) -> NarrationResult:
    """Teacher-forced narration metrics of ``model`` over a records file (θ defaults to the model's config)."""
    threshold = model.cfg.stream.threshold if threshold is None else check_option("threshold", threshold)
    dataset = make_dataset(model, tokenizer, data, max_samples=max_samples, feature_cache=feature_cache,
                           frames=frames)
    return narration_metrics(score_records(model, tokenizer, dataset, [threshold], batch_size=batch_size), threshold)


def make_dataset(model: Any, tokenizer: Any, data: str | Path | Sequence[dict[str, Any]], *,
                 max_samples: int | None = None, feature_cache: str | Path | None = None,
                 frames: FrameProvider | None = None) -> StreamDataset:
    """A :class:`StreamDataset` over the records (videos relative to the JSONL file, or a feature cache), each
    truncated at the model's ``stream.max_num_frames``."""
    records = load_records(data, max_samples)
    provider = frames or frame_provider(model, data if isinstance(data, (str, Path)) else None, feature_cache)
    return StreamDataset(records, tokenizer, Template.from_config(model.cfg, tokenizer), frames=provider,
                         max_num_frames=model.cfg.stream.max_num_frames,
                         system_prompt=model.cfg.stream.system_prompt)

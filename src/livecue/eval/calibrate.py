"""θ calibration: sweep the speak threshold, plot TimeDiff / Fluency / F1 against it, recommend one, save it.

The teacher-forced metrics reuse one forward per record for the whole grid (:func:`~livecue.eval.narration.
score_records` is asked for the look-aheads any θ of the grid needs). The free-running F1 needs one streaming run
per θ, so it runs on a subset of records (``free_samples``; 0 skips it); frame features are encoded once and reused.

Recommended θ (:data:`RULE`): the θ with the highest F1 — the free-running F1 when the sweep ran free, else the
teacher-forced per-frame speak F1 — ties broken by higher Fluency, then lower TimeDiff, then the θ nearest the
model's current one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import CONFIG_FILE, LiveConfig
from ..data.dataset import FrameProvider
from ..inference.options import check_option
from .free import evaluate_free
from .narration import RecordScores, make_dataset, narration_metrics, score_records

log = logging.getLogger(__name__)
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
RULE = ("max F1 (free-running when swept, else teacher-forced per-frame speak F1); ties: higher Fluency, then lower "
        "TimeDiff, then nearest the current θ")


@dataclass
class Calibration:
    """One row per θ (teacher-forced means, plus ``free_*`` when swept), the recommendation and its rule."""

    rows: list[dict[str, Any]]
    recommended: float
    current: float
    rule: str = RULE


def check_grid(grid: Sequence[float]) -> list[float]:
    """The θ values of a sweep, sorted and without repeats, each checked by θ's one checker (ValueError)."""
    values = sorted({check_option("threshold", t) for t in grid})
    if not values:
        raise ValueError(f"θ grid must be non-empty values in [0, 1], got {list(grid)}")
    return values


def sweep_teacher_forced(scores: Sequence[RecordScores], grid: Sequence[float]) -> list[dict[str, Any]]:
    """Teacher-forced means at each θ (pure, from :func:`score_records` output covering the grid)."""
    return [dict(threshold=th, **narration_metrics(scores, th).means) for th in check_grid(grid)]


def sweep_free(model: Any, tokenizer: Any, data: Any, grid: Sequence[float], *, tolerance: int = 1,
               max_samples: int | None = None, feature_cache: str | Path | None = None,
               frames: FrameProvider | None = None) -> list[dict[str, Any]]:
    """Free-running precision / recall / F1 / TimeDiff / rate at each θ (one run per θ per record)."""
    features: dict[str, torch.Tensor] = {}
    rows = []
    for th in check_grid(grid):
        res = evaluate_free(model, tokenizer, data, threshold=th, tolerance=tolerance, max_samples=max_samples,
                            feature_cache=feature_cache, frames=frames, similarity=False, features=features)
        m = res.means
        rows.append({"threshold": th, "free_precision": m["precision"], "free_recall": m["recall"],
                     "free_f1": m["f1"], "free_time_diff": m["time_diff"],
                     "free_replies_per_minute": m["replies_per_minute"]})
        log.info("θ=%.2f free-running F1 %.3f", th, m["f1"])
    return rows


def recommend(rows: Sequence[dict[str, Any]], current: float) -> float:
    """The recommended θ of a sweep (:data:`RULE`)."""
    if not rows:
        raise ValueError("no calibration rows")
    use_free = all(r.get("free_f1") is not None for r in rows)

    def key(r: dict[str, Any]) -> tuple[float, ...]:
        f1 = r["free_f1"] if use_free else r.get("speak_f1", 0.0)
        return (round(f1, 9), round(r.get("fluency", 0.0), 9), -round(r.get("time_diff", 0.0), 9),
                -abs(r["threshold"] - current))

    return max(rows, key=key)["threshold"]


def calibrate(model: Any, tokenizer: Any, data: Any, *, grid: Sequence[float] = DEFAULT_GRID, batch_size: int = 1,
              max_samples: int | None = None, free_samples: int = 0, tolerance: int = 1,
              feature_cache: str | Path | None = None, frames: FrameProvider | None = None,
              scores: Sequence[RecordScores] | None = None) -> Calibration:
    """Sweep θ over ``grid`` (teacher-forced on all records, free-running on the first ``free_samples``)."""
    grid = check_grid(grid)
    if scores is None:
        dataset = make_dataset(model, tokenizer, data, max_samples=max_samples, feature_cache=feature_cache,
                               frames=frames)
        scores = score_records(model, tokenizer, dataset, grid, batch_size=batch_size)
    rows = sweep_teacher_forced(scores, grid)
    if free_samples > 0:
        free = sweep_free(model, tokenizer, data, grid, tolerance=tolerance,
                          max_samples=min(free_samples, max_samples or free_samples), feature_cache=feature_cache,
                          frames=frames)
        for row, extra in zip(rows, free):
            row.update(extra)
    current = model.cfg.stream.threshold
    return Calibration(rows=rows, recommended=recommend(rows, current), current=current)


def save_threshold(checkpoint: str | Path, threshold: float) -> Path:
    """Write θ into a checkpoint's ``livecue_config.json`` (``stream.threshold``); returns the file.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint directory or θ is outside [0, 1].
    """
    path = Path(checkpoint)
    if not (path.is_dir() and (path / CONFIG_FILE).is_file()):
        raise ValueError(f"--save-threshold needs a checkpoint directory with {CONFIG_FILE}, got {str(path)!r} "
                         f"(a preset or config file has no checkpoint to update)")
    cfg = LiveConfig.load(path).with_overrides({"stream.threshold": float(threshold)})
    return cfg.save(path)

"""θ calibration: sweep the speak threshold, plot TimeDiff / Fluency / F1 against it, recommend one, say how far to
trust it, save it.

The teacher-forced metrics reuse one forward per record for the whole grid (:func:`~livecue.eval.narration.
score_records` is asked for the look-aheads any θ of the grid needs). The free-running F1 needs one streaming run
per θ, so it runs on a subset of records (``free_samples``; 0 skips it); frame features are encoded once and reused.

Recommended θ (:data:`RULE`): the θ with the highest F1 — the free-running F1 when the sweep ran free, else the
teacher-forced per-frame speak F1 — ties broken by higher Fluency, then lower TimeDiff, then the θ nearest the
model's current one.

How far to trust it (:class:`Confidence`): the number of streams, speak/silence decisions and reference replies the
deciding F1 rests on, and a bootstrap over streams: the records are resampled with replacement (the free-running
streams and the teacher-forced records each on their own) :data:`RESAMPLES` times, the same rule picks θ on every
resample, and the central 90% of those picks is the interval; ``agreement`` is the share of picks equal to the
recommendation. With fewer than :data:`FEW_STREAMS` streams the note says to treat θ as a rough guide.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import CONFIG_FILE, LiveConfig
from ..data.dataset import FrameProvider
from ..inference.options import check_option
from .common import frame_provider, to_features
from .free import evaluate_free
from .metrics import decision_counts, speaks
from .narration import RecordScores, make_dataset, narration_metrics, score_records
from .textmetrics import prf

log = logging.getLogger(__name__)
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
RULE = ("max F1 (free-running when swept, else teacher-forced per-frame speak F1); ties: higher Fluency, then lower "
        "TimeDiff, then nearest the current θ")
RESAMPLES = 1000   # bootstrap resamples of the streams
LEVEL = 0.9        # the bootstrap interval's level
FEW_STREAMS = 20   # below this many streams the recommendation is a rough guide


@dataclass
class SweepPart:
    """One part of a sweep (teacher-forced or free-running).

    Attributes:
        rows: one row per θ, the pooled numbers.
        table: per record (rows) and θ (columns), the numbers the rule pools (arrays ``(records, len(grid))``):
            teacher-forced ``tp`` / ``fp`` / ``fn`` (speak decisions), ``fluency``, ``time_diff``; free-running
            ``replies`` / ``references`` / ``matched``.
        decisions: speak/silence decisions scored per θ (teacher-forced stream positions, free-running frames).
        references: the reference replies among them (the moments the model should speak).
    """

    rows: list[dict[str, Any]]
    table: dict[str, np.ndarray]
    decisions: int
    references: int

    @property
    def streams(self) -> int:
        return len(next(iter(self.table.values())))


@dataclass
class Confidence:
    """What a recommended θ rests on and how stable it is when the streams are resampled (module docstring)."""

    source: str                              # "free-running" or "teacher-forced": whose F1 decided
    streams: int
    decisions: int
    references: int
    interval: tuple[float, float] | None     # None with fewer than 2 streams
    agreement: float | None
    resamples: int = RESAMPLES
    level: float = LEVEL
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"n": {"source": self.source, "streams": self.streams, "decisions": self.decisions,
                      "references": self.references},
                "interval": list(self.interval) if self.interval else None, "interval_level": self.level,
                "agreement": self.agreement, "resamples": self.resamples, "note": "; ".join(self.notes)}

    def summary(self) -> str:
        """One line: the n, then the bootstrap interval (when there is one)."""
        s = "" if self.streams == 1 else "s"
        text = (f"rests on {self.streams} {self.source} stream{s} ({self.decisions} speak/silence decisions, "
                f"{self.references} reference replies)")
        if self.interval is not None and self.agreement is not None:
            text += (f"; {self.level:.0%} bootstrap interval [{self.interval[0]:.2f}, {self.interval[1]:.2f}], "
                     f"the same θ in {self.agreement:.0%} of {self.resamples} resamples")
        return text


@dataclass
class Calibration:
    """One row per θ (teacher-forced means, plus ``free_*`` when swept), the recommendation, its rule and basis."""

    rows: list[dict[str, Any]]
    recommended: float
    current: float
    rule: str = RULE
    confidence: Confidence | None = None


def check_grid(grid: Sequence[float]) -> list[float]:
    """The θ values of a sweep, sorted and without repeats, each checked by θ's one checker (ValueError)."""
    values = sorted({check_option("threshold", t) for t in grid})
    if not values:
        raise ValueError(f"θ grid must be non-empty values in [0, 1], got {list(grid)}")
    return values


def sweep_teacher_forced(scores: Sequence[RecordScores], grid: Sequence[float]) -> SweepPart:
    """Teacher-forced means at each θ and the per-record table (pure, from :func:`score_records` output)."""
    grid = check_grid(grid)
    table = {k: np.zeros((len(scores), len(grid))) for k in ("tp", "fp", "fn", "fluency", "time_diff")}
    rows = []
    for g, th in enumerate(grid):
        result = narration_metrics(scores, th)
        rows.append(dict(threshold=th, **result.means))
        for r, (rec, sample) in enumerate(zip(scores, result.samples)):
            table["tp"][r, g], table["fp"][r, g], table["fn"][r, g] = decision_counts(rec.turns, th)
            table["fluency"][r, g], table["time_diff"][r, g] = sample["fluency"], sample["time_diff"]
    turns = [t for rec in scores for t in rec.turns]
    return SweepPart(rows, table, decisions=sum(len(t.stream) for t in turns),
                     references=sum(bool(t.stream) and t.gold_speak for t in turns))


def sweep_free(model: Any, tokenizer: Any, data: Any, grid: Sequence[float], *, tolerance: int = 1,
               max_samples: int | None = None, feature_cache: str | Path | None = None,
               frames: FrameProvider | None = None, progress: Callable[..., None] | None = None) -> SweepPart:
    """Free-running precision / recall / F1 / TimeDiff / rate at each θ (one run per θ per record).

    ``progress(done, total, theta=θ)`` is called after each run (``total`` = θ values × records).
    """
    grid = check_grid(grid)
    features: dict[str, torch.Tensor] = {}
    rows, per_theta = [], []
    for g, th in enumerate(grid):
        step = None if progress is None else functools.partial(_sweep_step, progress, g, len(grid), th)
        res = evaluate_free(model, tokenizer, data, threshold=th, tolerance=tolerance, max_samples=max_samples,
                            feature_cache=feature_cache, frames=frames, similarity=False, features=features,
                            progress=step)
        m = res.means
        rows.append({"threshold": th, "free_precision": m["precision"], "free_recall": m["recall"],
                     "free_f1": m["f1"], "free_time_diff": m["time_diff"],
                     "free_replies_per_minute": m["replies_per_minute"]})
        per_theta.append(res.samples)
        log.info("θ=%.2f free-running F1 %.3f", th, m["f1"])
    table = {k: np.array([[s[k] for s in samples] for samples in per_theta], dtype=float).T
             for k in ("replies", "references", "matched")}
    first = per_theta[0]
    return SweepPart(rows, table, decisions=sum(s["frames"] for s in first),
                     references=sum(s["references"] for s in first))


def _sweep_step(progress: Callable[..., None], g: int, thetas: int, theta: float, done: int, total: int) -> None:
    progress(g * total + done, thetas * total, theta=theta)


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


def pooled_rows(grid: Sequence[float], tf: dict[str, np.ndarray], tf_weights: np.ndarray,
                free: dict[str, np.ndarray] | None = None, free_weights: np.ndarray | None = None
                ) -> list[list[dict[str, Any]]]:
    """The rule's numbers at each θ for each row of weights (a record drawn k times has weight k).

    Shape: tables (records, len(grid)); weights (B, records) -> B lists of len(grid) rows. With all weights 1 the
    rows equal the sweep's own (speak F1 from pooled counts, Fluency and TimeDiff means over records, free F1 from
    pooled counts).
    """
    sums = {k: tf_weights @ v for k, v in tf.items()}
    count = tf_weights.sum(1, keepdims=True)
    if free is not None and free_weights is not None:
        sums.update({k: free_weights @ v for k, v in free.items()})
    out = []
    for b in range(tf_weights.shape[0]):
        rows = []
        for g, th in enumerate(grid):
            tp, fp, fn = sums["tp"][b, g], sums["fp"][b, g], sums["fn"][b, g]
            row = {"threshold": th, "speak_f1": prf(tp + fp, tp + fn, tp).f1,
                   "fluency": sums["fluency"][b, g] / count[b, 0], "time_diff": sums["time_diff"][b, g] / count[b, 0]}
            if free is not None:
                row["free_f1"] = prf(sums["replies"][b, g], sums["references"][b, g], sums["matched"][b, g]).f1
            rows.append(row)
        out.append(rows)
    return out


def assess(grid: Sequence[float], tf: SweepPart, free: SweepPart | None, recommended: float, current: float, *,
           resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> Confidence:
    """The :class:`Confidence` of ``recommended`` (see the module docstring)."""
    grid = check_grid(grid)
    basis = free if free is not None else tf
    conf = Confidence("free-running" if free is not None else "teacher-forced", basis.streams, basis.decisions,
                      basis.references, None, None, resamples, level)
    key = "free_f1" if free is not None else "speak_f1"
    if len({round(r[key], 9) for r in basis.rows}) == 1:
        conf.notes.append(f"F1 is {basis.rows[0][key]:.3f} at every θ of the grid: the tie-breakers (Fluency, "
                          f"TimeDiff, nearness to the current θ) chose it")
    if basis.streams < 2:
        conf.notes.append(f"rests on {basis.streams} stream: no interval; treat θ as a rough guide")
        return conf
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)

    picks = np.array([recommend(rows, current) for rows in pooled_rows(
        grid, tf.table, draw(tf.streams), None if free is None else free.table,
        None if free is None else draw(free.streams))])
    lo, hi = np.quantile(picks, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    conf.interval, conf.agreement = (float(lo), float(hi)), float(np.mean(picks == recommended))
    if basis.streams < FEW_STREAMS:
        conf.notes.append(f"fewer than {FEW_STREAMS} streams: the interval is itself rough; treat θ as a rough guide")
    return conf


def calibrate(model: Any, tokenizer: Any, data: Any, *, grid: Sequence[float] = DEFAULT_GRID, batch_size: int = 1,
              max_samples: int | None = None, free_samples: int = 0, tolerance: int = 1,
              feature_cache: str | Path | None = None, frames: FrameProvider | None = None,
              scores: Sequence[RecordScores] | None = None, progress: Callable[..., None] | None = None
              ) -> Calibration:
    """Sweep θ over ``grid`` (teacher-forced on all records, free-running on the first ``free_samples``).

    ``progress``: the free-running sweep's callback (:func:`sweep_free`).
    """
    grid = check_grid(grid)
    if scores is None:
        dataset = make_dataset(model, tokenizer, data, max_samples=max_samples, feature_cache=feature_cache,
                               frames=frames)
        scores = score_records(model, tokenizer, dataset, grid, batch_size=batch_size)
    tf = sweep_teacher_forced(scores, grid)
    rows = tf.rows
    free = None
    if free_samples > 0:
        free = sweep_free(model, tokenizer, data, grid, tolerance=tolerance,
                          max_samples=min(free_samples, max_samples or free_samples), feature_cache=feature_cache,
                          frames=frames, progress=progress)
        for row, extra in zip(rows, free.rows):
            row.update(extra)
    current = model.cfg.stream.threshold
    recommended = recommend(rows, current)
    return Calibration(rows=rows, recommended=recommended, current=current,
                       confidence=assess(grid, tf, free, recommended, current))


def save_threshold(checkpoint: str | Path, threshold: float) -> Path:
    """Write θ into a checkpoint's ``livecue_config.json`` (``stream.threshold``); returns the file.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint directory or θ is outside [0, 1].
    """
    check_checkpoint(checkpoint)
    cfg = LiveConfig.load(checkpoint).with_overrides({"stream.threshold": float(threshold)})
    return cfg.save(checkpoint)


def check_checkpoint(checkpoint: str | Path) -> Path:
    """The checkpoint directory ``--save-threshold`` may write to (ValueError: not one, or the packaged model)."""
    path = Path(checkpoint)
    if not (path.is_dir() and (path / CONFIG_FILE).is_file()):
        raise ValueError(f"--save-threshold needs a checkpoint directory with {CONFIG_FILE}, got {str(path)!r} "
                         f"(a preset or config file has no checkpoint to update)")
    package = Path(__file__).resolve().parents[1]
    if path.resolve().is_relative_to(package):
        raise ValueError(f"--save-threshold would change the model installed with livecue ({path}): copy the "
                         f"directory and pass the copy as --model")
    return path



# ---- θ for a changed model (quantization): match the speak rate ------------------------------------------------
RATE_GRID: tuple[float, ...] = tuple(round(0.001 * i, 3) for i in range(1001))  # 0.000 .. 1.000


@dataclass
class RateMatch:
    """θ re-chosen for a changed model (e.g. quantized) so its speak rate matches the reference model's.

    Attributes:
        threshold: θ for the changed model.
        reference_threshold: the reference model's θ (also the changed model's θ "before").
        reference_rate / rate_before / rate_after: the fraction of stream positions where the reference model, the
            changed model at the reference θ, and the changed model at ``threshold`` speak.
        agreement_before / agreement_after: the fraction of stream positions where the changed model's decision
            (at the reference θ / at ``threshold``) equals the reference model's.
        f1_reference / f1_before / f1_after: teacher-forced per-frame speak F1 against the references.
        decisions: stream positions compared.
        records: records they come from.
    """

    threshold: float
    reference_threshold: float
    reference_rate: float
    rate_before: float
    rate_after: float
    agreement_before: float
    agreement_after: float
    f1_reference: float
    f1_before: float
    f1_after: float
    decisions: int
    records: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _stream_scores(scores: Sequence[RecordScores]) -> list[Any]:
    return [s for rec in scores for turn in rec.turns for s in turn.stream]


def _speak_f1(scores: Sequence[RecordScores], threshold: float) -> float:
    tp, fp, fn = (0, 0, 0)
    for rec in scores:
        a, b, c = decision_counts(rec.turns, threshold)
        tp, fp, fn = tp + a, fp + b, fn + c
    return prf(tp + fp, tp + fn, tp).f1


def match_speak_rate(reference: Sequence[RecordScores], changed: Sequence[RecordScores], threshold: float, *,
                     grid: Sequence[float] = RATE_GRID) -> RateMatch:
    """Pick θ for ``changed`` minimising |its speak rate − ``reference``'s at ``threshold``|, ties to the θ nearest
    ``threshold`` (which is always a candidate, so the rate is never further off than keeping θ).

    A tie in rate is also a tie in decision agreement: the positions where a model speaks grow with θ (nested sets),
    so two θ with the same rate speak at the same positions.

    ``reference`` and ``changed`` are :func:`~livecue.eval.narration.score_records` outputs of the same records
    (one teacher-forced forward each; no look-aheads are needed).

    Raises:
        ValueError: the two scorings do not cover the same stream positions, or there are none.
    """
    threshold = check_option("threshold", threshold)
    ref, new = _stream_scores(reference), _stream_scores(changed)
    if len(ref) != len(new) or not ref:
        raise ValueError(f"the two scorings must cover the same stream positions (got {len(ref)} and {len(new)}; "
                         f"pass the same calibration records to both)")
    target = float(np.mean([speaks(s, threshold) for s in ref]))
    new_p = np.array([s.p_silence for s in new])
    new_arg = np.array([s.argmax_silence for s in new])

    def key(th: float) -> tuple[float, float]:
        rate = float((~new_arg | (new_p < th)).mean())  # speaks(), vectorised
        return (-round(abs(rate - target), 12), -abs(th - threshold))

    best = max(sorted({*check_grid(grid), threshold}), key=key)
    return compare_decisions(reference, changed, threshold, float(best))


def compare_decisions(reference: Sequence[RecordScores], changed: Sequence[RecordScores], reference_threshold: float,
                      threshold: float) -> RateMatch:
    """The :class:`RateMatch` numbers of ``changed`` at ``threshold`` (and at ``reference_threshold``) against
    ``reference`` at ``reference_threshold`` (e.g. on held-out records, θ chosen on others)."""
    ref, new = _stream_scores(reference), _stream_scores(changed)
    if len(ref) != len(new) or not ref:
        raise ValueError(f"the two scorings must cover the same stream positions (got {len(ref)} and {len(new)}; "
                         f"pass the same records to both)")
    ref_speak = np.array([speaks(s, reference_threshold) for s in ref])

    def stats(th: float) -> tuple[float, float]:
        speak = np.array([speaks(s, th) for s in new])
        return float(speak.mean()), float(np.mean(speak == ref_speak))

    (rate_before, agree_before), (rate_after, agree_after) = stats(reference_threshold), stats(threshold)
    return RateMatch(threshold=threshold, reference_threshold=reference_threshold,
                     reference_rate=float(ref_speak.mean()), rate_before=rate_before, rate_after=rate_after,
                     agreement_before=agree_before, agreement_after=agree_after,
                     f1_reference=_speak_f1(reference, reference_threshold),
                     f1_before=_speak_f1(changed, reference_threshold), f1_after=_speak_f1(changed, threshold),
                     decisions=len(ref), records=len(reference))


class _EncodedOnce:
    """A frame provider that encodes each record's pixels with ``model``'s vision tower once and keeps the features
    (the tower is not quantized, so both scorings of :func:`recalibrate_quantized` see the same features)."""

    def __init__(self, model: Any, inner: FrameProvider) -> None:
        self.model, self.inner, self.kept = model, inner, {}

    def __call__(self, record: dict[str, Any]) -> torch.Tensor:
        key = record["id"]
        if key not in self.kept:
            self.kept[key] = to_features(self.model, self.inner(record))
        return self.kept[key]


def recalibrate_quantized(model: Any, tokenizer: Any, data: Any, scheme: str, *, max_samples: int | None = None,
                          feature_cache: str | Path | None = None,
                          progress: Callable[[int, int], None] | None = None) -> RateMatch:
    """Quantize ``model`` in place with ``scheme`` (:func:`livecue.model.quantize.quantize_model`) and re-choose θ
    for it on the records ``data`` (:func:`match_speak_rate`: one teacher-forced forward per record before and
    after). ``model.cfg.stream.threshold`` is the full-precision θ and stays unchanged; ``progress(done, total)``
    counts the forwards."""
    from ..model.quantize import check_scheme, quantize_model

    check_scheme(scheme)
    frames = _EncodedOnce(model, frame_provider(model, data if isinstance(data, (str, Path)) else None,
                                                feature_cache))
    dataset = make_dataset(model, tokenizer, data, max_samples=max_samples, frames=frames)
    n = len(dataset)
    full = score_records(model, tokenizer, dataset, [],
                         progress=None if progress is None else lambda done, _: progress(done, 2 * n))
    quantize_model(model, scheme)
    changed = score_records(model, tokenizer, dataset, [],
                            progress=None if progress is None else lambda done, _: progress(n + done, 2 * n))
    return match_speak_rate(full, changed, model.cfg.stream.threshold)

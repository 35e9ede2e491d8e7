"""COIN (step, next, task, procedure, task-procedure) and Ego4D LTA: generation after the prompt and the frames.

Each record is one question: its messages up to the last assistant message form the prompt (rendered with the
generation suffix ``\\nAssistant:``, frames embedded), the last assistant message is the reference answer.

* COIN: greedy decoding; scored with :mod:`~livecue.eval.textmetrics` (fuzzy match over the category list).
  Categories come from ``--categories`` (a JSON list or one per line), else from the records' ``meta``
  (``categories``, ``mapping_categories`` or ``choices``), else — with a note — from the set of gold labels of the
  data file. Procedure gold steps come from ``meta["steps"]`` when present, else from the reference answer's lines.
* LTA: K-beam search (``num_beams = num_return_sequences = K``) that sees the frames (upstream's dropped them);
  the taxonomy comes from ``meta["taxonomy"]`` (``{"verbs": [...], "nouns": [...]}``) or ``meta["verbs"]`` /
  ``meta["nouns"]``, else — with a note — from the gold answers (first word = verb, the rest = noun). Gold
  (verb, noun) indices come from ``meta["verb_labels"]`` / ``meta["noun_labels"]`` when present, else from the
  reference answer mapped through the taxonomy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.dataset import FrameProvider
from ..data.template import Template
from .common import frame_provider, generate, load_records, split_answer, to_features
from .textmetrics import (
    Categories,
    Taxonomy,
    coin_correct,
    ed_at_z,
    lta_scores,
    normalize_label,
    parse_actions,
    procedure_correct,
    procedure_steps,
)

log = logging.getLogger(__name__)
COIN_SINGLE = ("coin-step", "coin-next", "coin-task")
COIN_PROCEDURE = ("coin-procedure", "coin-taskprocedure")
CATEGORY_KEYS = ("categories", "mapping_categories", "choices")


@dataclass
class BenchmarkResult:
    task: str
    samples: list[dict[str, Any]]
    means: dict[str, float]
    notes: list[str] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)  # LTA: ED@1..Z per kind


def read_list(path: str | Path) -> list[str]:
    """A JSON list of strings, or one string per non-blank line."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"category list not found: {str(path)!r}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (expected a JSON list or one category per line)") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise ValueError(f"{path}: expected a JSON list of strings")
        return items
    return [line.strip() for line in text.splitlines() if line.strip()]


def _gold_steps(record: dict[str, Any], answer: str) -> list[str]:
    steps = record.get("meta", {}).get("steps")
    if isinstance(steps, list) and steps and all(isinstance(s, str) for s in steps):
        return [normalize_label(s) for s in steps]
    return procedure_steps(answer)


def coin_categories(records: Sequence[dict[str, Any]], task: str, explicit: Sequence[str] | None = None
                    ) -> tuple[Categories, str | None]:
    """The category list and a note saying where it came from when it is not an explicit list."""
    if explicit:
        return Categories(explicit), None
    for record in records:
        meta = record.get("meta", {})
        for key in CATEGORY_KEYS:
            if isinstance(meta.get(key), list) and meta[key]:
                return Categories(meta[key]), None
    gold: list[str] = []
    for record in records:
        answer = split_answer(record)[1]["content"]
        gold += _gold_steps(record, answer) if task in COIN_PROCEDURE else [normalize_label(answer)]
    cats = Categories(gold)
    return cats, (f"no category list in the records' meta: fuzzy matching over the {len(cats)} distinct gold "
                  f"labels of the data file")


def _frames_for(model: Any, provider: FrameProvider, record: dict[str, Any], n: int):
    return to_features(model, provider(record)[:n])


def evaluate_coin(model: Any, tokenizer: Any, data: str | Path | Sequence[dict[str, Any]], task: str, *,
                  categories: Sequence[str] | None = None, max_new_tokens: int = 512, max_samples: int | None = None,
                  feature_cache: str | Path | None = None, frames: FrameProvider | None = None,
                  progress: Callable[[int, int], None] | None = None) -> BenchmarkResult:
    """COIN accuracy: per sample for step / next / task, per step (missing lines wrong) for the procedures."""
    if task not in COIN_SINGLE + COIN_PROCEDURE:
        raise ValueError(f"unknown COIN task {task!r}; choose one of {COIN_SINGLE + COIN_PROCEDURE}")
    records = load_records(data, max_samples)
    provider = frames or frame_provider(model, data if isinstance(data, (str, Path)) else None, feature_cache)
    template = Template.from_config(model.cfg, tokenizer)
    cats, note = coin_categories(records, task, categories)
    samples = []
    for n, record in enumerate(records, 1):
        prompt, answer, nf = split_answer(record)
        pred = generate(model, tokenizer, template, prompt, _frames_for(model, provider, record, nf),
                        max_new_tokens=max_new_tokens)[0]
        sample: dict[str, Any] = {"id": record["id"], "prediction": pred, "reference": answer["content"]}
        if task in COIN_PROCEDURE:
            flags = procedure_correct(pred, _gold_steps(record, answer["content"]), cats)
            sample.update(correct_steps=sum(flags), steps=len(flags), correct=all(flags))
        else:
            sample["correct"] = coin_correct(pred, answer["content"], cats)
        samples.append(sample)
        if progress is not None:
            progress(n, len(records))
    if task in COIN_PROCEDURE:
        steps = sum(s["steps"] for s in samples)
        acc = sum(s["correct_steps"] for s in samples) / steps if steps else 0.0
        means = {"accuracy": acc, "steps": steps}
    else:
        means = {"accuracy": sum(s["correct"] for s in samples) / len(samples)}
    means.update(samples=len(samples), categories=len(cats))
    return BenchmarkResult(task, samples, means, [note] if note else [])


def lta_taxonomy(records: Sequence[dict[str, Any]]) -> tuple[Taxonomy, str | None]:
    """The verb/noun taxonomy from the records' meta, else derived from the gold answers (with a note)."""
    for record in records:
        meta = record.get("meta", {})
        tax = meta.get("taxonomy") if isinstance(meta.get("taxonomy"), dict) else meta
        if isinstance(tax.get("verbs"), list) and isinstance(tax.get("nouns"), list):
            return Taxonomy(tax["verbs"], tax["nouns"]), None
    verbs: dict[str, None] = {}
    nouns: dict[str, None] = {}
    for record in records:
        for action in parse_actions(split_answer(record)[1]["content"]):
            verb, _, noun = action.partition(" ")
            verbs[verb] = None
            nouns[noun] = None
    tax = Taxonomy(list(verbs), list(nouns))
    return tax, (f"no taxonomy in the records' meta: {len(tax.verbs)} verbs and {len(tax.nouns)} nouns derived from "
                 f"the gold answers (first word = verb)")


def lta_gold(record: dict[str, Any], taxonomy: Taxonomy) -> list[tuple[int, int]]:
    """Gold (verb, noun) indices from ``meta`` labels, else from the reference answer."""
    meta = record.get("meta", {})
    verbs, nouns = meta.get("verb_labels"), meta.get("noun_labels")
    if isinstance(verbs, list) and isinstance(nouns, list) and len(verbs) == len(nouns):
        return list(zip(map(int, verbs), map(int, nouns)))
    return [taxonomy.to_ids(a) for a in parse_actions(split_answer(record)[1]["content"])]


def evaluate_lta(model: Any, tokenizer: Any, data: str | Path | Sequence[dict[str, Any]], *, beams: int = 5,
                 z: int = 20, max_new_tokens: int = 512, max_samples: int | None = None,
                 feature_cache: str | Path | None = None, frames: FrameProvider | None = None,
                 progress: Callable[[int, int], None] | None = None) -> BenchmarkResult:
    """Ego4D LTA: K-beam generation with the frames, ED@Z and AUED for verbs, nouns and actions."""
    if beams < 1 or z < 1:
        raise ValueError(f"beams and Z must be >= 1, got {beams} and {z}")
    records = load_records(data, max_samples)
    provider = frames or frame_provider(model, data if isinstance(data, (str, Path)) else None, feature_cache)
    template = Template.from_config(model.cfg, tokenizer)
    taxonomy, note = lta_taxonomy(records)
    preds, golds, samples = [], [], []
    for n, record in enumerate(records, 1):
        prompt, answer, nf = split_answer(record)
        gold = lta_gold(record, taxonomy)
        if len(gold) < z:
            raise ValueError(f"record {record['id']!r} has {len(gold)} gold actions; Z = {z} needs {z}")
        texts = generate(model, tokenizer, template, prompt, _frames_for(model, provider, record, nf),
                         max_new_tokens=max_new_tokens, num_beams=beams, num_return_sequences=beams)
        preds.append([taxonomy.parse(t, z) for t in texts])
        golds.append(gold[:z])
        samples.append({"id": record["id"], "beams": texts, "reference": answer["content"]})
        if progress is not None:
            progress(n, len(records))
    means: dict[str, float] = dict(lta_scores(preds, golds, z), samples=len(samples), beams=beams, z=z)
    curves = {}
    for name, pick in (("verb", lambda p: p[0]), ("noun", lambda p: p[1]), ("action", lambda p: tuple(p))):
        ps = [[[pick(a) for a in beam] for beam in bs] for bs in preds]
        gs = [[pick(a) for a in g] for g in golds]
        curves[name] = [ed_at_z(ps, gs, k) for k in range(1, z + 1)]
    return BenchmarkResult("lta", samples, means, [note] if note else [], curves)

"""A checkpoint directory's model card: gather its inputs, write ``README.md``, summarise it (``livecue info``).

:func:`read_facts` gathers what :func:`livecue.model.card.render_card` needs beyond the config, from the files of the
checkpoint itself, so that a card can be rewritten from the directory alone (``livecue push``):

* ``livecue_manifest.json`` (a training run's checkpoint or final model, :mod:`livecue.train.checkpoint`): the
  training records (path, count, sha256), the steps and epochs done, and the run's last training loss and
  validation metrics (its ``log`` entry, from ``log.jsonl``);
* ``livecue_card.json`` (:data:`FACTS_FILE`, optional): what no other file records: evaluations with the command
  that produced them (:func:`record_evaluation`), a training history written by hand (the packaged default model,
  made by ``scripts/default_model_card.py``), where converted weights came from.

The card and ``livecue_card.json`` are documentation: no livecue code decides anything from them, and a training
checkpoint's manifest does not list them, so refreshing a card never invalidates a checkpoint. A card livecue wrote
starts with :data:`~livecue.model.card.MARKER`; without it (a hand-written card) :func:`refresh_card` leaves it alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..config import LiveConfig
from ..config_fields import from_dict
from .card import CARD_FILE, MARKER, CardFacts, Evaluation, TrainingSummary, metric_name, number, render_card
from .lora import ADAPTER_FILE
from .verify import MANIFEST, read_json

FACTS_FILE = "livecue_card.json"
SUMMARY_METRICS = 4  # metrics of each evaluation ``livecue info`` shows


# ---- inputs --------------------------------------------------------------------------------------------------------
def read_facts(directory: str | Path) -> CardFacts:
    """The card facts of a checkpoint directory: ``livecue_card.json`` (when present), with the training run of its
    manifest when the file does not describe one. Raises a one-line ``ValueError`` for an invalid facts file."""
    directory = Path(directory)
    facts = load_facts(directory / FACTS_FILE) if (directory / FACTS_FILE).is_file() else CardFacts()
    if facts.training is None and (directory / MANIFEST).is_file():
        facts.training = training_from_manifest(read_json(directory / MANIFEST))
    return facts


def load_facts(path: Path) -> CardFacts:
    """A :class:`CardFacts` from a ``livecue_card.json`` file (one line naming the file and the bad key)."""
    try:
        return from_dict(CardFacts, read_json(path))
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid {str(path)!r}: {str(e).replace('config key', 'key')}") from None


def save_facts(directory: str | Path, facts: CardFacts) -> Path:
    """Write ``livecue_card.json`` (the facts no other file of the checkpoint records)."""
    path = Path(directory) / FACTS_FILE
    path.write_text(json.dumps(dataclasses.asdict(facts), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def training_from_manifest(manifest: dict[str, Any]) -> TrainingSummary | None:
    """The training run a ``livecue_manifest.json`` records (None when it records none). The manifest was checked
    by whoever wrote or loads the weights; here a field of an unexpected type is left out of the card."""
    data, log = _dict(manifest.get("data")), _dict(manifest.get("log"))
    train = _dict(_dict(manifest.get("config")).get("train"))
    if not data and not isinstance(manifest.get("step"), int):
        return None
    step, accumulation, per_epoch = (_int(manifest.get(k)) for k in ("step", "gradient_accumulation_steps",
                                                                       "batches_per_epoch"))
    loss, validation = _dict(log.get("train")), _dict(log.get("validation"))
    metrics = {k: v for k, v in validation.items() if k != "step" and _is_number(v)}
    return TrainingSummary(
        data=str(data.get("train_data") or train.get("train_data") or "unknown"), records=_int(data.get("records")),
        sha256=data.get("sha256") if isinstance(data.get("sha256"), str) else None, steps=step,
        total_steps=_int(manifest.get("total_steps")),
        epochs=step * accumulation / per_epoch if step is not None and accumulation and per_epoch else None,
        final_loss=loss.get("loss") if _is_number(loss.get("loss")) else None, final_loss_step=_int(loss.get("step")),
        validation=metrics, validation_step=_int(validation.get("step")) if metrics else None,
        validation_data=train.get("eval_data") if metrics and isinstance(train.get("eval_data"), str) else None,
        validation_records=_int(train.get("eval_max_samples")) if metrics else None,
        init_from=train.get("init_from") if isinstance(train.get("init_from"), str) else None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---- writing -------------------------------------------------------------------------------------------------------
def write_card(directory: str | Path, *, model_ref: str | None = None, facts: CardFacts | None = None) -> Path:
    """Render the card of the checkpoint in ``directory`` (its config, its facts unless ``facts`` is given) into
    ``directory/README.md``; returns the file. ``model_ref``: how users should name the model in ``--model`` (a hub
    id, ``default``); default: the directory as given."""
    directory = Path(directory)
    cfg = LiveConfig.load(directory)
    facts = read_facts(directory) if facts is None else facts
    text = render_card(cfg, facts, model_ref=model_ref or str(directory), adapter=(directory / ADAPTER_FILE).is_file())
    path = directory / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def is_generated(path: str | Path) -> bool:
    """Whether ``path`` is a card livecue wrote (and may rewrite): it carries :data:`~livecue.model.card.MARKER`."""
    path = Path(path)
    return path.is_file() and MARKER in path.read_text(encoding="utf-8", errors="replace")


def refresh_card(directory: str | Path, *, model_ref: str | None = None) -> bool:
    """Rewrite ``directory``'s card from its current files unless it is hand-written (no marker); returns whether
    it wrote one."""
    path = Path(directory) / CARD_FILE
    if path.exists() and not is_generated(path):
        return False
    write_card(directory, model_ref=model_ref)
    return True


def record_evaluation(directory: str | Path, evaluation: Evaluation, *, model_ref: str | None = None) -> Path:
    """Add ``evaluation`` to the checkpoint's ``livecue_card.json`` (replacing one with the same title) and refresh
    its card (unless hand-written); returns the facts file. For ``livecue eval`` writing its results into a
    checkpoint."""
    directory = Path(directory)
    path = directory / FACTS_FILE
    facts = load_facts(path) if path.is_file() else CardFacts()
    facts.evaluations = [e for e in facts.evaluations if e.title != evaluation.title] + [evaluation]
    save_facts(directory, facts)
    refresh_card(directory, model_ref=model_ref)
    return path


# ---- summary -------------------------------------------------------------------------------------------------------
def card_summary(directory: str | Path) -> list[tuple[str, str]]:
    """``(label, text)`` rows summarising the card of ``directory`` (``[]`` without one): the card, its base models
    and license (from its front matter), the training data and the metrics with their commands (from its facts)."""
    from huggingface_hub import metadata_load

    directory = Path(directory)
    path = directory / CARD_FILE
    if not path.is_file():
        return []
    rows = [("card", f"{path} ({'generated by livecue' if is_generated(path) else 'hand-written'})")]
    try:
        meta = metadata_load(path) or {}
    except Exception as e:  # noqa: BLE001 - a broken front matter is a fact about the card, not a failure of info
        meta = {}
        rows.append(("card", f"its front matter is not valid YAML ({str(e).splitlines()[0] if str(e) else e!r})"))
    base = meta.get("base_model")
    base = ", ".join(base) if isinstance(base, list) else str(base) if base else "none (random init)"
    rows.append(("base", base + (f"  (license {meta['license']})" if meta.get("license") else "")))
    try:
        facts = read_facts(directory)
    except ValueError as e:
        return [*rows, ("facts", str(e))]
    t = facts.training
    if t is not None:
        size = f" ({t.records:,} records)" if t.records is not None else ""
        steps = f", {t.steps:,} steps" if t.steps is not None else ""
        loss = f", final loss {t.final_loss:.4f}" if t.final_loss is not None else ""
        rows.append(("trained on", f"{t.data}{size}{steps}{loss}"))
        if t.validation:
            rows.append(("validation", _metrics(t.validation)))
    for ev in facts.evaluations:
        rows.append(("metrics", f"{ev.title}: {_metrics(ev.metrics)}  ({ev.command.splitlines()[-1]})"))
    return rows


def _metrics(metrics: dict[str, float]) -> str:
    shown = list(metrics.items())[:SUMMARY_METRICS]
    more = len(metrics) - len(shown)
    return ", ".join(f"{metric_name(k)} {number(v)}" for k, v in shown) + (f", … ({more} more)" if more else "")

"""Training checkpoints you can trust: written atomically with a manifest, verified before a resume.

A checkpoint ``output_dir/checkpoint-STEP`` is a loadable livecue model (``save_checkpoint``) plus ``state/``
(accelerate's ``save_state``: model, optimizer, scheduler, one RNG file per process), ``trainer_state.json`` and,
written last, ``livecue_manifest.json``: the format version, the position in the data order (step, epoch,
micro-batch), the seed, the process count, a fingerprint of the training records, the whole run config with a hash
of the part that must not change on resume, and the size and sha256 of every file.

Everything is written into a hidden sibling ``.checkpoint-STEP.tmp-NONCE`` (every process writes its RNG state
there; the main process writes the rest and the manifest, fsyncs, and renames it into place in one step), so a run
killed while saving leaves only a hidden temporary directory, which the next run removes. The final model
(``output_dir/final``) is published the same way.

``--resume`` (:func:`find_resume_checkpoint`) verifies the newest checkpoint (:mod:`livecue.train.verify`) and
falls back to the previous one with a warning naming the checkpoint and the reason; a run config that disagrees with
the checkpoint's is refused, naming the fields (keys the config no longer has, ``livecue.config.LEGACY_KEYS``, are
not differences). The format constants and the config hash live in :mod:`livecue.train.manifest`, shared with the
verifier.

Every checkpoint and the final model carry a model card (``README.md``, :mod:`livecue.model.card`) rendered from
the directory's own files after the manifest: the config, and the manifest's run record (the training records'
path, count and sha256, steps, epochs, and under ``log`` the last training loss and validation metrics of
``log.jsonl`` up to the saved step). The card and its facts file (``livecue_card.json``) are documentation, not part
of the checkpoint's integrity: the manifest does not list them, so refreshing a card later (``livecue push``,
``livecue eval`` recording results) never invalidates a resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import LEGACY_KEYS
from ..model.card import CARD_FILE
from ..model.card_files import FACTS_FILE, write_card
from ..model.load import save_checkpoint
from .manifest import (  # noqa: F401 - also this module's interface (MANIFEST, file_sha256, STATE_FILE ...)
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MODEL_FORMAT,
    RESUMABLE_CHANGES,
    STATE_DIR,
    STATE_FILE,
    CheckpointError,
    config_sha256,
    file_sha256,
    flatten,
    one_line,
)
from .verify import verify_against_run, verify_checkpoint

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
LOG_FILE = "log.jsonl"  # the run's log in output_dir (livecue.train.logging)
_TRAINING_KEYS = frozenset({"loss", "lr", "tokens_per_s", "epoch", "grad_norm"})  # not validation metrics
UNLISTED = frozenset({CARD_FILE, FACTS_FILE})  # documentation a manifest does not cover (see the module docstring)
_LEFTOVER = re.compile(r"\.(checkpoint-\d+|final)\.(tmp|old)-[0-9a-f]+")

# ---- the run a checkpoint belongs to -------------------------------------------------------------------------------
@dataclass
class RunInfo:
    """What a checkpoint of this run records, and what a checkpoint must match to be resumed by it."""

    config: dict[str, Any]
    num_processes: int
    batches_per_epoch: int
    total_steps: int
    gradient_accumulation_steps: int
    nonce: str
    data: dict[str, Any] = field(default_factory=dict)  # train_data path, sha256 and record count (main process)

    @classmethod
    def create(cls, acc: Any, cfg: Any, num_records: int, batches_per_epoch: int, total_steps: int) -> RunInfo:
        """On every process (collective): the main process removes leftovers of killed saves, fingerprints the
        training records and draws the run's nonce for temporary directory names; the nonce is broadcast."""
        from accelerate.utils import broadcast_object_list

        nonce, data = "", {}
        if acc.is_main_process:
            remove_leftovers(Path(cfg.train.output_dir))
            nonce = secrets.token_hex(4)
            data = {"train_data": cfg.train.train_data, "sha256": file_sha256(Path(cfg.train.train_data)),
                    "records": num_records}
        nonce = broadcast_object_list([nonce])[0]
        return cls(config=cfg.to_dict(), num_processes=acc.num_processes, batches_per_epoch=batches_per_epoch,
                   total_steps=total_steps, gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
                   nonce=nonce, data=data)

    @property
    def config_sha256(self) -> str:
        return config_sha256(self.config)


def _short(value: Any) -> str:
    if isinstance(value, str):  # paths: the end says most
        return repr(value) if len(value) <= 60 else repr("..." + value[-57:])
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def config_differences(run: RunInfo, manifest: dict[str, Any]) -> list[str]:
    """Every way this run disagrees with a checkpoint's manifest: ``field (this run's vs the checkpoint's)``."""
    missing = object()
    mine = flatten(run.config)
    theirs = {k: v for k, v in flatten(manifest.get("config") or {}).items() if k not in LEGACY_KEYS}  # unread
    diffs = []
    for key in sorted(set(mine) | set(theirs), key=lambda k: (k.split(".")[0] != "train", k)):
        a, b = mine.get(key, missing), theirs.get(key, missing)
        if key in RESUMABLE_CHANGES or key == "train.train_data" or a == b:
            continue
        diffs.append(f"{key} ({'unset' if a is missing else _short(a)} vs {'unset' if b is missing else _short(b)})")
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    if run.data.get("sha256") != data.get("sha256"):  # another path holding the same records is fine
        paths = (f"{_short(run.data.get('train_data'))} vs {_short(data.get('train_data'))}; "
                 if run.data.get("train_data") != data.get("train_data") else "")
        diffs.insert(0, f"train.train_data's records ({paths}{run.data.get('records')} records, sha256 "
                        f"{str(run.data.get('sha256'))[:12]} vs {data.get('records')} records, sha256 "
                        f"{str(data.get('sha256'))[:12]})")
    if run.num_processes != manifest.get("num_processes"):
        diffs.append(f"the number of processes ({run.num_processes} vs {manifest.get('num_processes')})")
    elif not diffs and run.batches_per_epoch != manifest.get("batches_per_epoch"):
        diffs.append(f"batches per epoch ({run.batches_per_epoch} vs {manifest.get('batches_per_epoch')})")
    return diffs


# ---- files ---------------------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def write_manifest(directory: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Hash (and fsync) every file under ``directory`` but the model card and its facts (:data:`UNLISTED`), then
    write the manifest last."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        if rel not in UNLISTED:
            files[rel] = {"size": path.stat().st_size, "sha256": file_sha256(path, sync=True)}
    manifest = {**info, "files": files}
    with open(directory / MANIFEST, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    for sub in sorted({p.parent for p in directory.rglob("*")} | {directory}):
        _fsync_dir(sub)
    return manifest


def publish(tmp: Path, final: Path, nonce: str) -> Path:
    """Rename the complete ``tmp`` into ``final`` in one step (an older ``final`` is moved aside, then removed)."""
    aside = final.with_name(f".{final.name}.old-{nonce}")
    if final.exists():
        os.replace(final, aside)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(aside, ignore_errors=True)
    return final


def remove_leftovers(out: Path) -> None:
    """Remove the temporary directories of saves that a killed run left behind (never resumed from)."""
    if not out.is_dir():
        return
    for path in sorted(out.iterdir()):
        if _LEFTOVER.fullmatch(path.name) and path.is_dir():
            log.warning("removing %s: a save that was interrupted before it completed", path)
            shutil.rmtree(path, ignore_errors=True)


# ---- saving --------------------------------------------------------------------------------------------------------
def save_training_checkpoint(acc: Any, model: Any, tok: Any, out: Path, run: RunInfo, step: int, epoch: int,
                             micro: int, keep: int) -> Path:
    """Every process: write ``checkpoint-STEP`` atomically (see the module docstring); keep the newest ``keep``."""
    final = out / f"checkpoint-{step}"
    tmp = out / f".{final.name}.tmp-{run.nonce}"
    acc.save_state(str(tmp / STATE_DIR))  # every process: its RNG state; the main process: the rest
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_checkpoint(acc.unwrap_model(model), tok, tmp, card=False)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "epoch": epoch, "micro": micro}))
        write_manifest(tmp, {
            "format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "step": step, "epoch": epoch,
            "micro": micro, "micro_total": epoch * run.batches_per_epoch + micro, "seed": run.config["train"]["seed"],
            **run_record(run, out, step)})
        write_card(tmp, model_ref=str(final))
        publish(tmp, final, run.nonce)
        if keep > 0:  # checkpoints past this step belong to an abandoned future (a resume fell back past them)
            mine = sorted((p for p in list_checkpoints(out) if step_of(p) <= step), key=step_of)
            for old in mine[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def save_final_model(model: Any, tok: Any, out: Path, run: RunInfo, step: int) -> Path:
    """Main process: write ``output_dir/final`` atomically, with a manifest of its files."""
    final = out / "final"
    tmp = out / f".final.tmp-{run.nonce}"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tok, tmp, card=False)
    write_manifest(tmp, {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "step": step,
                         **run_record(run, out, step)})
    write_card(tmp, model_ref=str(final))
    return publish(tmp, final, run.nonce)


def run_record(run: RunInfo, out: Path, step: int) -> dict[str, Any]:
    """What a manifest records about the run at ``step``: its size, data, config and, under ``log``, the last
    training loss and validation metrics (the model card shows them)."""
    return {"num_processes": run.num_processes, "batches_per_epoch": run.batches_per_epoch,
            "total_steps": run.total_steps, "gradient_accumulation_steps": run.gradient_accumulation_steps,
            "data": run.data, "log": last_logged(out / LOG_FILE, step), "config_sha256": run.config_sha256,
            "config": run.config}


def last_logged(path: Path, step: int) -> dict[str, Any]:
    """The last training loss and the last validation metrics ``log.jsonl`` holds up to ``step``:
    ``{"train": {"step", "loss"}, "validation": {"step", "eval_loss", ...}}`` (either absent when never logged)."""
    found: dict[str, Any] = {}
    if not path.is_file():
        return found
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a torn last line
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or record["step"] > step:
            continue
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "loss" in numbers:
            found["train"] = {"step": record["step"], "loss": numbers["loss"]}
        if "eval_loss" in numbers:
            found["validation"] = {k: v for k, v in numbers.items() if k not in _TRAINING_KEYS}
    return found


# ---- finding -------------------------------------------------------------------------------------------------------
def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def list_checkpoints(out: str | Path) -> list[Path]:
    """Published ``checkpoint-STEP`` directories (complete or not), newest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [p for p in out.glob("checkpoint-*") if _CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=step_of, reverse=True)


def latest_checkpoint(out: str | Path) -> Path | None:
    """The newest checkpoint in ``out`` that has its manifest (written last), or None. Not verified: see
    :func:`find_resume_checkpoint`."""
    return next((p for p in list_checkpoints(out) if (p / MANIFEST).is_file()), None)


@dataclass
class ResumePoint:
    """The checkpoint a resume continues from, and the data-order position it saved."""

    path: Path
    step: int
    epoch: int
    micro: int


def find_resume_checkpoint(acc: Any, out: Path, run: RunInfo, model: Any, optimizer: Any) -> ResumePoint | None:
    """Every process (collective): the newest checkpoint that verifies, or None when there is no checkpoint at all.

    The main process verifies (newest first) and broadcasts its decision. An unusable checkpoint is skipped with a
    warning naming it and why; a run config that differs from the chosen checkpoint's raises ``ValueError`` naming
    the fields; checkpoints that exist but none verifies raise ``ValueError`` with one reason per checkpoint.
    """
    from accelerate.utils import broadcast_object_list

    decision: dict[str, Any] = {}
    if acc.is_main_process:
        sharded = acc.distributed_type.value in ("FSDP", "DEEPSPEED", "MEGATRON_LM")
        try:
            decision = _decide(out, run, acc.unwrap_model(model), optimizer, sharded)  # as save_state saw it
        except Exception as e:  # noqa: BLE001 - never leave the other processes waiting on the broadcast
            decision = {"error": f"--resume: cannot verify the checkpoints in {str(out)!r}: {one_line(e)}"}
    decision = broadcast_object_list([decision])[0]
    if decision.get("error"):
        raise ValueError(decision["error"])
    if not decision.get("path"):
        return None
    return ResumePoint(Path(decision["path"]), decision["step"], decision["epoch"], decision["micro"])


def _decide(out: Path, run: RunInfo, model: Any, optimizer: Any, sharded: bool) -> dict[str, Any]:
    candidates = list_checkpoints(out)
    if not candidates:
        return {}
    rejected: list[tuple[str, str]] = []
    for path in candidates:
        try:
            manifest = verify_checkpoint(path)
        except CheckpointError as e:
            rejected.append((path.name, str(e)))
            continue
        diffs = config_differences(run, manifest)
        if diffs:
            return {"error": f"--resume: the run config differs from {path.name}'s in {', '.join(diffs)} (this "
                             f"run's value first; only {', '.join(sorted(RESUMABLE_CHANGES))} may change on "
                             f"resume: use another train.output_dir to train with the new values)"}
        try:
            verify_against_run(path, manifest, model, optimizer, sharded)
        except CheckpointError as e:
            rejected.append((path.name, str(e)))
            continue
        for name, why in rejected:
            log.warning("--resume: skipping %s: %s; falling back to %s", name, why, path.name)
        return {"path": str(path), "step": manifest["step"], "epoch": manifest["epoch"], "micro": manifest["micro"]}
    reasons = "; ".join(f"{name}: {why}" for name, why in rejected)
    return {"error": f"--resume: no usable checkpoint in {str(out)!r} ({reasons}); repair or move them away to "
                     f"start from scratch"}


def load_training_state(acc: Any, point: ResumePoint) -> None:
    """Every process: restore model, optimizer, scheduler and RNG state from a verified checkpoint.

    accelerate ignores an RNG file it cannot apply (it logs at info level); this checks that the RNG state in force
    afterwards is the file's, so a resume never continues silently with the wrong random stream.
    """
    from accelerate.utils import load

    state = point.path / STATE_DIR
    try:
        acc.load_state(str(state))
        rng = load(state / f"random_states_{acc.process_index}.pkl")
        restored = torch.equal(torch.get_rng_state(), rng["torch_manual_seed"])
    except Exception as e:  # noqa: BLE001 - a verified checkpoint that still fails to load: one line
        raise ValueError(f"--resume: cannot load the training state of {point.path}: {one_line(e)}") from None
    if not restored:
        raise ValueError(f"--resume: the RNG state of {point.path} (random_states_{acc.process_index}.pkl) could "
                         f"not be restored")

"""What a training run records and shows, on the main process only.

* ``log.jsonl`` (always): one JSON object per logged step (``{"step", "loss", "lr", "tokens_per_s", "epoch"}``,
  and ``{"step", "eval_loss", ...}`` per evaluation); a resumed run drops the records after its checkpoint.
* experiment trackers (``train.report_to``, accelerate's: ``Accelerator(log_with=...)``, ``init_trackers``,
  ``log``): the run config as hyperparameters, and the same values as ``log.jsonl``. :func:`resolve_trackers`
  refuses a tracker that is not installed, in one line, before the run starts.
* stderr (nothing with ``LIVECUE_PROGRESS=0``): the run header (:class:`RunHeader`), progress
  (:class:`livecue.progress.Progress`: a bar on a terminal, a line every ``LIVECUE_PROGRESS_INTERVAL`` seconds
  otherwise; loss, lr and tokens/s), each evaluation's metrics, and a closing summary.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..config import TRACKERS, tracker_names
from ..progress import Progress
from .manifest import flatten

log = logging.getLogger(__name__)

PROJECT = "livecue"          # the trackers' project (wandb / trackio project, mlflow experiment)
TENSORBOARD_DIR = "tensorboard"  # accelerate's logging_dir, under output_dir: events in tensorboard/livecue/
INSTALL = {
    "tensorboard": "pip install tensorboard (it comes with pip install 'livecue[train]')",
    "wandb": "pip install wandb",
    "trackio": "pip install trackio",
    "mlflow": "pip install mlflow",
}


# ---- trackers ------------------------------------------------------------------------------------------------------
def installed_trackers() -> set[str]:
    """The trackers of :data:`livecue.config.TRACKERS` whose packages accelerate finds."""
    from accelerate.utils import (
        is_mlflow_available,
        is_tensorboard_available,
        is_trackio_available,
        is_wandb_available,
    )

    found = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "trackio": is_trackio_available,
             "mlflow": is_mlflow_available}
    return {name for name, available in found.items() if available()}


def resolve_trackers(report_to: str) -> list[str]:
    """The trackers ``train.report_to`` asks for (``all``: every installed one; ``none``: none).

    Raises:
        ImportError: a named tracker is not installed, in one line naming its package (accelerate would skip it
            silently, and the run would log nowhere).
    """
    names, installed = tracker_names(report_to), installed_trackers()
    if names == ("all",):
        return [name for name in TRACKERS if name in installed]
    for name in names:
        if name not in installed:
            raise ImportError(f"train.report_to: {name} is not installed: {INSTALL[name]} (or --report-to none)")
    return list(names)


def tracker_kwargs(trackers: list[str], run_name: str, out: Path, start_step: int) -> dict[str, dict[str, Any]]:
    """``init_trackers``' per-tracker arguments: the run's name; wandb's files under ``output_dir``; TensorBoard
    hides the events after ``start_step`` that an earlier run in the same directory wrote (``purge_step``), so a
    resumed run's curves have each step once and a fresh run replaces an old one's."""
    every = {"tensorboard": {"purge_step": start_step + 1}, "wandb": {"name": run_name, "dir": str(out)},
             "trackio": {"name": run_name}, "mlflow": {"run_name": run_name}}
    return {name: every[name] for name in trackers}


def hyperparameters(config: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The run config flattened (``train.learning_rate``), with ``extra`` facts, as trackers take them: numbers,
    strings, booleans and None; lists and mappings as JSON text."""
    values = {**flatten(config), **extra}
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
            for k, v in values.items()}


# ---- the run header ------------------------------------------------------------------------------------------------
@dataclass
class RunHeader:
    """What a run is, printed once at its start (``train: ...`` lines on stderr)."""

    cfg: Any                      # the run's LiveConfig
    records: int                  # training records (one stream each)
    total_steps: int              # update steps of the whole run
    batches_per_epoch: int        # micro-batches per epoch on each process
    num_processes: int
    device: str                   # e.g. "cpu", "cuda:0"
    distributed: str              # accelerate's distributed type, e.g. "NO", "MULTI_GPU"
    mixed_precision: str          # accelerate's: "no", "bf16", "fp16"
    trainable: int                # parameters the optimizer trains
    parameters: int               # all parameters of the model
    trackers: list[str] = field(default_factory=list)
    eval_records: int | None = None
    start_step: int = 0           # > 0: resumed

    @property
    def effective_batch(self) -> int:
        tc = self.cfg.train
        return tc.per_device_batch_size * tc.gradient_accumulation_steps * self.num_processes

    @property
    def epochs(self) -> float:
        return self.total_steps * self.cfg.train.gradient_accumulation_steps / max(1, self.batches_per_epoch)

    def lines(self) -> list[str]:
        cfg, tc = self.cfg, self.cfg.train
        lora = f"; LoRA r {cfg.lora.r} on the LM" if cfg.lora.enabled else ""
        start = f" from {tc.init_from}" if tc.init_from else ""
        evaluation = (f"; eval {tc.eval_data}: {self.eval_records} records every {tc.eval_steps} steps"
                      if tc.eval_data else "; no evaluation")
        processes = f"{self.num_processes} process{'es' if self.num_processes > 1 else ''}"
        where = self.device if self.distributed == "NO" else f"{self.device}, {self.distributed}"
        resumed = f" (resumed at step {self.start_step})" if self.start_step else ""
        trackers = ", ".join(["log.jsonl", *self.trackers])
        epochs = f"{self.epochs:.3g} epoch{'' if self.epochs == 1 else 's'}"
        return [
            f"train: model {cfg.name!r}{start}: {base_parts(cfg)}{lora}; {self.trainable:,} of "
            f"{self.parameters:,} parameters train",
            f"train: data {tc.train_data}: {self.records} records (streams){evaluation}",
            f"train: {self.total_steps} update steps{resumed} = {epochs} of {self.batches_per_epoch} micro-batches "
            f"per process; lr {tc.learning_rate:g} {tc.lr_scheduler}, warmup {tc.warmup_ratio:.0%}",
            f"train: {processes} ({where}) x per-device batch {tc.per_device_batch_size} x gradient accumulation "
            f"{tc.gradient_accumulation_steps} = effective batch {self.effective_batch}; mixed precision "
            f"{self.mixed_precision}",
            f"train: output {tc.output_dir} (checkpoints every {tc.save_steps} steps, final/); logs: {trackers}",
        ]


def base_parts(cfg: Any) -> str:
    """The model's base parts in a few words: ``vision efficientnet-lite0, connector mlp2x_gelu, LM
    smollm2-135m-instruct`` (``random`` for randomly initialised ones)."""
    if cfg.is_vlm:
        source = cfg.vlm.name_or_path or f"random {(cfg.vlm.random_init or {}).get('model_type', '')}".strip()
        return f"VLM {source}"
    vision = cfg.vision.name_or_path or f"random {cfg.vision.kind}"
    lm = cfg.lm.name_or_path or f"random {(cfg.lm.random_init or {}).get('model_type', '')}".strip()
    return f"vision {vision}, connector {cfg.connector.kind}, LM {lm}"


# ---- the logger ----------------------------------------------------------------------------------------------------
class TrainLogger:
    """``log.jsonl``, the trackers and what the run prints, for one :func:`livecue.train.recipe.train` call.

    Args:
        acc: the run's ``accelerate.Accelerator`` (built with ``log_with=`` the trackers); only its main process
            writes or prints anything.
        header: the run, printed first.
        run_name: the trackers' run name (the config's ``name``).
        hparams: the trackers' hyperparameters (:func:`hyperparameters`).
        resume_step: the step a resumed run continues from: the records after it (written by the run that was
            stopped after its last checkpoint) are dropped from ``log.jsonl``, and hidden in TensorBoard.
    """

    def __init__(self, acc: Any, header: RunHeader, run_name: str, hparams: dict[str, Any],
                 resume_step: int | None = None) -> None:
        self.acc = acc
        self.enabled = acc.is_main_process
        self.total = header.total_steps
        self.start_step = resume_step or 0
        self.start = time.perf_counter()
        self._jsonl = None
        self._trackers = False
        self.bar = Progress(header.total_steps - self.start_step, enabled=None if self.enabled else False,
                            desc="train" if not self.start_step else f"train (from step {self.start_step})",
                            unit="step")
        if not self.enabled:
            return
        out = Path(header.cfg.train.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if resume_step:
            _truncate_after(out / "log.jsonl", resume_step)
        self._jsonl = (out / "log.jsonl").open("a" if resume_step else "w", encoding="utf-8")
        if header.trackers:
            acc.init_trackers(PROJECT, config=hparams,
                              init_kwargs=tracker_kwargs(header.trackers, run_name, out, self.start_step))
            self._trackers = True
        if self.bar.enabled:
            for line in header.lines():
                self.bar.write(line)

    def step(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """An update step is done: advance the progress, showing its loss, learning rate and tokens/s."""
        self.bar.update(1, loss=loss, lr=lr, **{"tokens/s": round(tokens_per_s)})

    def log(self, step: int, values: dict[str, Any]) -> None:
        """Append ``{"step": step, **values}`` to ``log.jsonl`` (floats rounded to 6 digits); the numbers to the
        trackers."""
        if not self.enabled:
            return
        record = {"step": step, **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._trackers:
            self.acc.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)

    def evaluation(self, step: int, metrics: dict[str, float]) -> None:
        """Log an evaluation's metrics and print them (one line)."""
        self.log(step, metrics)
        if self.enabled and self.bar.enabled:
            self.bar.write(f"train: eval at step {step}/{self.total}: "
                           + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def close(self, steps: int, losses: list[float], metrics: dict[str, float], final_dir: Path | None) -> None:
        """End the progress, print the summary, close ``log.jsonl`` and finish the trackers (without
        ``Accelerator.end_training``, which would also destroy the process group a caller may still use)."""
        self.bar.close()
        if not self.enabled:
            return
        if self.bar.enabled:
            self.bar.write(summary(steps - self.start_step, steps, time.perf_counter() - self.start, losses, metrics,
                                   final_dir))
        if self._jsonl is not None:
            self._jsonl.close()
        if self._trackers:
            for tracker in self.acc.trackers:
                tracker.finish()
            self.acc.trackers.clear()


def summary(done: int, steps: int, seconds: float, losses: list[float], metrics: dict[str, float],
            final_dir: Path | None) -> str:
    """The run's last line: ``train: 300 steps in 02:31 (1.99 step/s); loss 2.31 -> 0.1204; eval_loss 0.2,
    decision_acc 0.95; model: runs/x/final``."""
    rate = f"{done / seconds:.3g} step/s" if seconds > 0 and done else "no steps"
    parts = [f"train: {done} steps in {tqdm.format_interval(seconds)} ({rate})"]
    if losses:
        parts.append(f"loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    if metrics:
        parts.append(", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    parts.append(f"model: {final_dir}" if final_dir is not None else f"stopped at step {steps}, no final model")
    return "; ".join(parts)


def _truncate_after(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (lines that are not records, e.g. a torn last line, go too)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    tmp.replace(path)

"""The LIVE fine-tuning recipe on accelerate, in named phases over one :class:`TrainState`.

::

    train(cfg) = setup → [resume_from_checkpoint] → open_logs
                 → per epoch: (train_step → [evaluate] → [save])*  → finish

* :func:`setup` (every process): the experiment trackers (``train.report_to``, checked first), the accelerator,
  the model (:mod:`livecue.train.trainable`: LoRA on the LM through peft, lm_head included as upstream; the
  connector trained in full; the vision tower frozen; trainable weights in float32), the data (frames decoded and
  letterboxed on the fly, or read from ``train.feature_cache``), AdamW and a cosine/linear/constant schedule with
  warmup. Gradient accumulation, fp32/bf16/fp16 mixed precision, gradient checkpointing. A run that continues a
  checkpoint gets a name of its own (:func:`~livecue.train.trainable.own_name`).
* :func:`resume_from_checkpoint`: continue from the newest checkpoint in ``train.output_dir`` that verifies,
  refusing a run config that differs from it (:mod:`livecue.train.checkpoint`).
* :func:`open_logs`: the run header on stderr, ``log.jsonl`` and the trackers (:mod:`livecue.train.logging`).
* :func:`train_step`: one micro-batch; every ``gradient_accumulation_steps`` of them make an update step, whose
  loss, learning rate and tokens/s go to the progress display, ``log.jsonl`` and the trackers.
* :func:`evaluate`: loss and speak/silence decision accuracy on ``train.eval_data`` (:func:`decision_metrics`),
  printed and logged.
* :func:`save`: ``output_dir/checkpoint-STEP`` (a loadable livecue checkpoint + ``state/`` with optimizer,
  scheduler and RNG state + ``trainer_state.json`` + ``livecue_manifest.json``), written atomically.
* :func:`finish`: the final model to ``output_dir/final``, published the same way; a summary line; the trackers
  finished.

The data order is a pure function of (seed, epoch): every rank, every run and every resume sees the same batches,
so a resumed run reproduces an uninterrupted one bit for bit, and N processes train as one with N× the
accumulation. Distribution (DDP, FSDP, DeepSpeed) is accelerate's: ``accelerate launch -m livecue.cli train
CONFIG.yaml``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import get_scheduler

from ..config import LiveConfig
from ..data.dataset import Collator, SeededSampler, StreamDataset, VideoFrames
from ..data.features import FeatureCache
from ..data.labels import IGNORE
from ..data.records import read_records
from ..data.template import Template
from ..model.build import resolve_config
from .checkpoint import (
    RunInfo,
    find_resume_checkpoint,
    latest_checkpoint,  # noqa: F401 - re-exported (it lived here)
    load_training_state,
    save_final_model,
    save_training_checkpoint,
)
from .logging import TENSORBOARD_DIR, RunHeader, TrainLogger, hyperparameters, resolve_trackers
from .trainable import param_groups, setup_model

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    steps: int                                         # update steps done (in all, not only in this call)
    losses: list[float] = field(default_factory=list)  # mean loss of each update step run in this call
    final_dir: Path | None = None                      # output_dir/final; None when stopped early (stop_after)
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation's metrics
    model: Any = None       # the trained LiveModel (unwrapped), on every rank
    tokenizer: Any = None


@dataclass
class LossWindow:
    """The micro-batch losses and tokens since the last update step, and when the window began."""

    losses: list[torch.Tensor] = field(default_factory=list)
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass
class TrainState:
    """One training run between its phases: :func:`setup` builds it, the other phases read and advance it."""

    cfg: LiveConfig
    acc: Any                        # the accelerate.Accelerator
    model: Any                      # the LiveModel as accelerate prepared it (acc.unwrap_model gives it back)
    tokenizer: Any
    optimizer: Any                  # AdamW, prepared by accelerate
    scheduler: Any                  # the learning-rate schedule (a torch LambdaLR)
    params: list[torch.nn.Parameter]  # what the optimizer trains (gradients clipped together)
    dataset: StreamDataset
    collate: Collator
    sampler: SeededSampler          # this process's share of each epoch's order
    eval_set: StreamDataset | None  # train.eval_data (evaluated on the main process only)
    run: RunInfo                    # what this run's checkpoints record, and what a resumed one must match
    header: RunHeader               # what the run is (printed at its start)
    step: int = 0                   # update steps done
    epoch: int = 0                  # the epoch in progress
    micro: int = 0                  # micro-batches done in that epoch
    logger: TrainLogger | None = None
    window: LossWindow = field(default_factory=LossWindow)
    result: TrainResult = field(default_factory=lambda: TrainResult(steps=0))

    @property
    def total_steps(self) -> int:
        return self.run.total_steps

    @property
    def out(self) -> Path:
        return Path(self.cfg.train.output_dir)


def train(cfg: LiveConfig, *, resume: bool = False, stop_after: int | None = None,
          keep_name: bool = False) -> TrainResult:
    """Run the recipe described by ``cfg`` (see the module docstring).

    Args:
        cfg: the run's config (``train.train_data`` must be set).
        resume: continue from the newest checkpoint in ``train.output_dir`` that verifies (none: from scratch).
        stop_after: end the run after that many update steps without the final save, exactly as if the process had
            been killed there (tests of resumption use it); the schedule still spans the whole run.
        keep_name: keep ``cfg.name`` even when it is ``train.init_from``'s name (else the run is renamed after its
            output directory: :func:`~livecue.train.trainable.own_name`).
    """
    state = setup(resolve_config(cfg), keep_name)  # a VLM base: its family's placeholder, frame layout, chat format
    if resume:
        resume_from_checkpoint(state)
    open_logs(state, resumed=resume)
    while state.step < state.total_steps:
        if not train_epoch(state, stop_after):
            break
    return finish(state, stopped=state.step == stop_after and state.step < state.total_steps)


# ---- setup ---------------------------------------------------------------------------------------------------------
def setup(cfg: LiveConfig, keep_name: bool = False) -> TrainState:
    """Every process: trackers, accelerator, model, data, optimizer and schedule, in the order that fixes the random
    stream (a run is reproducible from ``train.seed``); then the run's identity for its checkpoints (collective)."""
    Accelerator, ProjectConfiguration, set_seed = _accelerate()
    tc = cfg.train
    if not tc.train_data:
        raise ValueError("train.train_data is not set: give a records JSONL file (--train.train_data=FILE)")
    trackers = resolve_trackers(tc.report_to)  # a missing tracker: one line, before anything loads
    project = ProjectConfiguration(project_dir=tc.output_dir, logging_dir=str(Path(tc.output_dir) / TENSORBOARD_DIR))
    acc = Accelerator(gradient_accumulation_steps=tc.gradient_accumulation_steps, mixed_precision=tc.mixed_precision,
                      log_with=trackers or None, project_config=project)
    set_seed(tc.seed)
    model, tok = setup_model(cfg, keep_name)
    if tc.init_from:
        cfg = model.cfg  # the run's config, renamed when it still carries the checkpoint's name
    dataset = make_dataset(cfg, tok, tc.train_data)
    if len(dataset) == 0:  # an empty epoch would loop for ever
        raise ValueError(f"train.train_data {tc.train_data!r} holds no training records")
    sampler = SeededSampler(len(dataset), seed=tc.seed, num_replicas=acc.num_processes, rank=acc.process_index)
    batches_per_epoch = math.ceil(len(sampler) / tc.per_device_batch_size)
    total_steps = count_update_steps(cfg, batches_per_epoch)
    groups = param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    header = RunHeader(cfg=cfg, records=len(dataset), total_steps=total_steps, batches_per_epoch=batches_per_epoch,
                       num_processes=acc.num_processes, device=str(acc.device),
                       distributed=str(getattr(acc.distributed_type, "value", acc.distributed_type)),
                       mixed_precision=str(acc.mixed_precision), trainable=sum(p.numel() for p in params),
                       parameters=sum(p.numel() for p in model.parameters()), trackers=trackers)
    optimizer = torch.optim.AdamW(groups, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(tc.lr_scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)
    eval_set = make_dataset(cfg, tok, tc.eval_data, tc.eval_max_samples) if tc.eval_data else None
    header.eval_records = len(eval_set) if eval_set is not None else None
    return TrainState(cfg=cfg, acc=acc, model=model, tokenizer=tok, optimizer=optimizer, scheduler=scheduler,
                      params=params, dataset=dataset, collate=Collator(tok.pad_token_id), sampler=sampler,
                      eval_set=eval_set, run=RunInfo.create(acc, cfg, len(dataset), batches_per_epoch, total_steps),
                      header=header)


def _accelerate() -> tuple[Any, Any, Any]:
    """accelerate's ``Accelerator``, ``ProjectConfiguration`` and ``set_seed`` (an optional dependency: the
    ``[train]`` extra)."""
    try:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed
    except ImportError:
        raise ImportError("training needs accelerate and peft: pip install 'livecue[train]'") from None
    return Accelerator, ProjectConfiguration, set_seed


def make_dataset(cfg: LiveConfig, tok: Any, path: str, limit: int | None = None) -> StreamDataset:
    """The records at ``path`` (the first ``limit``) as training samples, frames from the videos or the cache."""
    records = read_records(path)[:limit] if limit else path
    frames = (FeatureCache(cfg.train.feature_cache) if cfg.train.feature_cache
              else VideoFrames(Path(path).parent, resolution=cfg.frame_resolution))
    return StreamDataset(records, tok, Template.from_config(cfg, tok), frames=frames,
                         system_prompt=cfg.stream.system_prompt, max_num_frames=cfg.stream.max_num_frames)


def count_update_steps(cfg: LiveConfig, batches_per_epoch: int) -> int:
    """``train.max_steps``, or the update steps ``train.epochs`` take."""
    tc = cfg.train
    if tc.max_steps > 0:
        return tc.max_steps
    return max(1, math.ceil(tc.epochs * batches_per_epoch / tc.gradient_accumulation_steps))


# ---- resume --------------------------------------------------------------------------------------------------------
def resume_from_checkpoint(state: TrainState) -> None:
    """Every process: restore the newest checkpoint that verifies (weights, optimizer, schedule, RNG, data position).

    With no checkpoint at all the run starts from scratch (a warning); unusable or mismatching ones raise
    ``ValueError`` (see :func:`livecue.train.checkpoint.find_resume_checkpoint`).
    """
    acc = state.acc
    point = find_resume_checkpoint(acc, state.out, state.run, state.model, state.optimizer)
    if point is None:
        if acc.is_main_process:
            log.warning("--resume: no checkpoint in %s: starting from scratch", state.out)
        return
    load_training_state(acc, point)
    state.step, state.epoch, state.micro = point.step, point.epoch, point.micro
    acc.print(f"resuming from {point.path} (step {state.step}, epoch {state.epoch}, batch {state.micro})")


def open_logs(state: TrainState, resumed: bool) -> None:
    """Write the resolved config into ``output_dir``, print the run header and open the logs and trackers; a resumed
    run drops the records the stopped run logged after its checkpoint."""
    acc = state.acc
    if acc.is_main_process:
        state.out.mkdir(parents=True, exist_ok=True)
        state.cfg.save(state.out)
    state.header.start_step = state.step
    run = {"run.records": state.header.records, "run.total_steps": state.total_steps,
           "run.num_processes": acc.num_processes, "run.effective_batch_size": state.header.effective_batch}
    state.logger = TrainLogger(acc, state.header, state.cfg.name, hyperparameters(state.cfg.to_dict(), run),
                               resume_step=state.step if resumed else None)
    state.result.steps = state.step
    state.window = LossWindow()


# ---- train ---------------------------------------------------------------------------------------------------------
def train_epoch(state: TrainState, stop_after: int | None = None) -> bool:
    """Train through the rest of the current epoch, evaluating and saving when due.

    Returns:
        False when the run ended inside the epoch (its last update step, or ``stop_after``), else True (the next
        epoch begins).
    """
    for batch in epoch_batches(state):
        if not train_step(state, batch):
            continue
        if evaluation_due(state):
            evaluate(state)
        if checkpoint_due(state):
            save(state)
        if state.step >= state.total_steps or state.step == stop_after:
            return False
    state.epoch, state.micro = state.epoch + 1, 0
    return True


def epoch_batches(state: TrainState) -> torch.utils.data.DataLoader:
    """The current epoch's batches for this process, from micro-batch ``state.micro`` on (a resumed epoch skips
    what it already trained on without decoding it)."""
    tc = state.cfg.train
    state.sampler.set_epoch(state.epoch, skip=state.micro * tc.per_device_batch_size)
    # its own generator: creating a loader must not draw from the global RNG (dropout would shift on resume)
    return torch.utils.data.DataLoader(state.dataset, batch_size=tc.per_device_batch_size, sampler=state.sampler,
                                       collate_fn=state.collate, num_workers=tc.num_workers,
                                       generator=torch.Generator().manual_seed(tc.seed + state.epoch))


def train_step(state: TrainState, batch: dict[str, Any]) -> bool:
    """One micro-batch: forward and backward; when it completes the accumulation, clip, optimizer and scheduler step.

    Returns:
        Whether it completed an update step (``state.step`` advanced and the step's loss was logged).
    """
    acc, tc = state.acc, state.cfg.train
    state.micro += 1
    with acc.accumulate(state.model):
        batch = to_device(batch, acc.device)
        loss = state.model(**batch, labelled_logits_only=True).loss
        acc.backward(loss)
        if acc.sync_gradients and tc.max_grad_norm > 0:
            acc.clip_grad_norm_(state.params, tc.max_grad_norm)
        state.optimizer.step()
        state.optimizer.zero_grad()
    state.window.losses.append(loss.detach())
    state.window.tokens += int(batch["attention_mask"].sum())
    if not acc.sync_gradients:
        return False
    state.scheduler.step()
    state.step += 1
    log_step(state)
    return True


def log_step(state: TrainState) -> None:
    """Record the update step just done: its loss (averaged over micro-batches and processes), learning rate and
    tokens/s; the progress display every step, ``log.jsonl`` and the trackers every ``train.log_steps`` and at the
    last step."""
    acc, step, window = state.acc, state.step, state.window
    mean = acc.reduce(torch.stack(window.losses).mean(), reduction="mean").item()
    tokens = int(acc.reduce(torch.tensor(window.tokens, device=acc.device), reduction="sum").item())
    tokens_per_s = tokens / max(time.perf_counter() - window.start, 1e-9)
    lr = state.scheduler.get_last_lr()[0]
    state.result.losses.append(mean)
    state.logger.step(step, mean, lr, tokens_per_s)
    if step % state.cfg.train.log_steps == 0 or step == state.total_steps:
        state.logger.log(step, {"loss": mean, "lr": lr, "tokens_per_s": tokens_per_s, "epoch": state.epoch})
    state.window = LossWindow()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (other entries, e.g. record ids, dropped)."""
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


# ---- evaluate ------------------------------------------------------------------------------------------------------
def evaluation_due(state: TrainState) -> bool:
    """On the main process, with eval data: every ``train.eval_steps`` and at the last step."""
    step = state.step
    return (state.eval_set is not None and state.acc.is_main_process
            and (step % state.cfg.train.eval_steps == 0 or step == state.total_steps))


def evaluate(state: TrainState) -> dict[str, float]:
    """Main process: evaluate the model on the eval set, print and log the metrics and keep them in the result."""
    metrics = decision_metrics(state.acc.unwrap_model(state.model), state.eval_set, state.collate, state.acc.device,
                               state.cfg.stream.threshold, state.eval_set.markers.silence)
    state.logger.evaluation(state.step, metrics)
    state.result.eval = metrics
    return metrics


@torch.no_grad()
def decision_metrics(model: Any, dataset: StreamDataset, collate: Collator, device: torch.device, threshold: float,
                     silence_id: int) -> dict[str, float]:
    """Teacher-forced loss and the speak/silence decision accuracy on the frames' learned positions.

    A frame's decision is "silent" iff p(silence) ≥ θ; it is right when it matches its label (silence token or the
    first speak token). ``majority`` is the accuracy of always answering the more frequent decision.
    """
    was_training = model.training
    model.eval()
    loss_sum = tokens = 0.0
    correct = total = silent_labels = speak_right = speak_total = 0
    for i in range(len(dataset)):
        batch = to_device(collate([dataset[i]]), device)
        out = model(**batch)
        mask = batch["labels"] != IGNORE
        n = int(mask.sum())
        loss_sum += out.loss.item() * n
        tokens += n
        at_v = mask & (batch["input_ids"] == model.frame_end_id)  # the decision position of each frame
        if at_v.any():
            p_sil = torch.softmax(out.logits[at_v].float(), -1)[:, silence_id]
            gold_silent = batch["labels"][at_v] == silence_id
            pred_silent = p_sil >= threshold
            correct += int((pred_silent == gold_silent).sum())
            total += int(at_v.sum())
            silent_labels += int(gold_silent.sum())
            speak_total += int((~gold_silent).sum())
            speak_right += int((~pred_silent & ~gold_silent).sum())
    model.train(was_training)
    result = {"eval_loss": loss_sum / max(tokens, 1)}
    if total:
        result.update(decision_acc=correct / total, majority=max(silent_labels, total - silent_labels) / total,
                      speak_recall=speak_right / max(speak_total, 1))
    return result


# ---- save ----------------------------------------------------------------------------------------------------------
def checkpoint_due(state: TrainState) -> bool:
    """Every ``train.save_steps``, but not at the last step (that one goes to ``final/``)."""
    return state.step % state.cfg.train.save_steps == 0 and state.step < state.total_steps


def save(state: TrainState) -> Path:
    """Every process (collective): write ``output_dir/checkpoint-STEP`` atomically, keeping the newest
    ``train.save_total_limit``."""
    return save_training_checkpoint(state.acc, state.model, state.tokenizer, state.out, state.run, state.step,
                                    state.epoch, state.micro, state.cfg.train.save_total_limit)


def finish(state: TrainState, stopped: bool) -> TrainResult:
    """Every process: the result; unless the run was ``stopped`` early, the main process publishes
    ``output_dir/final``; the summary line, and the logs and trackers closed."""
    acc = state.acc
    acc.wait_for_everyone()
    result = state.result
    result.steps = state.step
    result.model, result.tokenizer = acc.unwrap_model(state.model), state.tokenizer
    if not stopped and acc.is_main_process:
        result.final_dir = save_final_model(result.model, state.tokenizer, state.out, state.run, state.step)
    state.logger.close(state.step, result.losses, result.eval, result.final_dir)
    if not stopped:
        acc.wait_for_everyone()
    return result

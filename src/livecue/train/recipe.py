"""The LIVE fine-tuning recipe as one readable accelerate loop: setup, train, evaluate, save, resume.

* LoRA on the LM through peft (rank/alpha/dropout/target pattern from the config, lm_head included as upstream),
  the connector trained in full, the vision tower frozen; trainable weights kept in float32.
* Frames from the videos (decoded and letterboxed on the fly) or from a feature cache (``train.feature_cache``).
* AdamW + cosine/linear/constant schedule with warmup; gradient accumulation; fp32/bf16/fp16 mixed precision;
  gradient checkpointing.
* Data order is a pure function of (seed, epoch): every rank, every run and every resume sees the same batches.
  Distribution (DDP, FSDP, DeepSpeed) is accelerate's: ``accelerate launch -m livecue.cli train CONFIG.yaml``.
* Checkpoints ``output_dir/checkpoint-STEP`` (a loadable livecue checkpoint + ``state/`` with optimizer, scheduler
  and RNG state + ``trainer_state.json`` + ``livecue_manifest.json``), written atomically; ``resume=True`` continues
  from the newest one that verifies, and refuses a run config that differs from it (:mod:`livecue.train.checkpoint`).
  The final model goes to ``output_dir/final``, published the same way.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import LiveConfig
from ..data.dataset import Collator, SeededSampler, StreamDataset, VideoFrames
from ..data.labels import IGNORE
from ..data.template import Template
from .checkpoint import latest_checkpoint  # noqa: F401 - re-exported (it lived here)
from .checkpoint import (RunInfo, find_resume_checkpoint, load_training_state, save_final_model,
                         save_training_checkpoint)
from .logging import TrainLogger

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    losses: list[float] = field(default_factory=list)  # mean loss of each update step run in this call
    final_dir: Path | None = None
    eval: dict[str, float] = field(default_factory=dict)
    model: Any = None       # the trained LiveModel (unwrapped), on every rank
    tokenizer: Any = None


# ---- setup ---------------------------------------------------------------------------------------------------------
def setup_model(cfg: LiveConfig):
    """Build (or load ``train.init_from``) the model with LoRA and the right parameters trainable."""
    from ..model.load import build_model, load_model
    from ..model.lora import apply_lora, has_lora, set_trainable

    tc = cfg.train
    if tc.init_from:
        model, tok = load_model(tc.init_from, merge_lora=False)
        adopt_colour_bins(model, cfg)
        model.cfg = cfg
    else:
        model, tok = build_model(cfg, seed=tc.seed)
    if cfg.lora.enabled and not has_lora(model):
        apply_lora(model)
    set_trainable(model)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # master copies of what trains stay in fp32
    if tc.gradient_checkpointing:
        model.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.lm.config.use_cache = False
    model.train()
    return model, tok


def param_groups(model: Any, cfg: LiveConfig) -> list[dict[str, Any]]:
    """The trainable parameters: the connector in its own group when ``train.connector_learning_rate`` is set."""
    lr = cfg.train.connector_learning_rate
    connector = {id(p) for p in model.connector.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and (lr is None or id(p) not in connector)]
    groups = [{"params": rest}]
    if lr is not None:
        groups.append({"params": [p for p in model.connector.parameters() if p.requires_grad], "lr": lr})
    return groups


def adopt_colour_bins(model: Any, cfg: LiveConfig) -> None:
    """Continue a checkpoint with another ``vision.frame_colour_bins`` (the only vision field that may change under
    ``train.init_from``): the same tower emits the new colour columns, and the connector's first layer gets zero
    weights for them, so the continued model starts with exactly the checkpoint's outputs.
    """
    from torch import nn

    from ..model.vision import FrameEncoder

    old, new = model.cfg.vision, cfg.vision
    if old == new:
        return
    changed = sorted(k for k in vars(new) if getattr(new, k) != getattr(old, k))
    if changed != ["frame_colour_bins"]:
        raise ValueError(f"train.init_from's vision config differs in {changed}; only vision.frame_colour_bins can "
                         f"change when continuing a checkpoint")
    tower_width = model.connector[0].in_features - old.colour_width
    if model.vision is not None:
        enc = model.vision
        model.vision = FrameEncoder(enc.tower, new, enc.tower_width, tuple(enc.mean.flatten().tolist()),
                                    tuple(enc.std.flatten().tolist()))
    first = model.connector[0]
    wider = nn.Linear(tower_width + new.colour_width, first.out_features).to(first.weight.device, first.weight.dtype)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :tower_width] = first.weight[:, :tower_width]
        wider.bias.copy_(first.bias)
    model.connector[0] = wider
    log.info("vision.frame_colour_bins %d -> %d: connector input %d -> %d (new columns start at zero)",
             old.frame_colour_bins, new.frame_colour_bins, first.in_features, wider.in_features)


def make_dataset(cfg: LiveConfig, tok: Any, path: str, limit: int | None = None) -> StreamDataset:
    from ..data.features import FeatureCache
    from ..data.records import read_records

    records = read_records(path)[:limit] if limit else path
    frames = (FeatureCache(cfg.train.feature_cache) if cfg.train.feature_cache
              else VideoFrames(Path(path).parent, resolution=cfg.vision.resolution))
    return StreamDataset(records, tok, Template.from_config(cfg, tok), frames=frames,
                         system_prompt=cfg.stream.system_prompt,
                         max_num_frames=cfg.stream.max_num_frames)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def count_update_steps(cfg: LiveConfig, batches_per_epoch: int) -> int:
    tc = cfg.train
    if tc.max_steps > 0:
        return tc.max_steps
    return max(1, math.ceil(tc.epochs * batches_per_epoch / tc.gradient_accumulation_steps))


# ---- evaluation ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model, dataset: StreamDataset, collate: Collator, device: torch.device, threshold: float,
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
        at_v = mask & (batch["input_ids"] == model.v_token_id)
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


# ---- the loop ------------------------------------------------------------------------------------------------------
def train(cfg: LiveConfig, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Run the recipe described by ``cfg`` (see the module docstring).

    ``stop_after`` ends the run after that many update steps without the final save, exactly as if the process had
    been killed there (tests of resumption use it); the schedule still spans the whole run.
    """
    try:
        from accelerate import Accelerator
        from accelerate.utils import set_seed
    except ImportError:
        raise ImportError("training needs accelerate and peft: pip install 'livecue[train]'") from None
    from transformers import get_scheduler

    tc = cfg.train
    if not tc.train_data:
        raise ValueError("train.train_data is not set: give a records JSONL file (--train.train_data=FILE)")
    out = Path(tc.output_dir)
    acc = Accelerator(gradient_accumulation_steps=tc.gradient_accumulation_steps, mixed_precision=tc.mixed_precision)
    set_seed(tc.seed)
    model, tok = setup_model(cfg)
    dataset = make_dataset(cfg, tok, tc.train_data)
    if len(dataset) == 0:  # an empty epoch would loop for ever
        raise ValueError(f"train.train_data {tc.train_data!r} holds no training records")
    collate = Collator(tok.pad_token_id)
    sampler = SeededSampler(len(dataset), seed=tc.seed, num_replicas=acc.num_processes, rank=acc.process_index)
    batches_per_epoch = math.ceil(len(sampler) / tc.per_device_batch_size)
    total_steps = count_update_steps(cfg, batches_per_epoch)
    groups = param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=tc.learning_rate, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(tc.lr_scheduler, optimizer, num_warmup_steps=int(tc.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(scheduler)

    run = RunInfo.create(acc, cfg, len(dataset), batches_per_epoch, total_steps)
    step, epoch, micro = 0, 0, 0
    if resume:
        point = find_resume_checkpoint(acc, out, run, model, optimizer)
        if point is None:
            if acc.is_main_process:
                log.warning("--resume: no checkpoint in %s: starting from scratch", out)
        else:
            load_training_state(acc, point)
            step, epoch, micro = point.step, point.epoch, point.micro
            acc.print(f"resuming from {point.path} (step {step}, epoch {epoch}, batch {micro})")
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out)
    logger = TrainLogger(out, total_steps, enabled=acc.is_main_process, resume_step=step if resume else None)
    logger.mark_start(step)
    eval_set = make_dataset(cfg, tok, tc.eval_data, tc.eval_max_samples) if tc.eval_data else None
    markers_silence = eval_set.markers.silence if eval_set else dataset.markers.silence
    result = TrainResult(steps=step)
    window_loss, window_tokens, window_start = [], 0, time.perf_counter()

    while step < total_steps:
        sampler.set_epoch(epoch, skip=micro * tc.per_device_batch_size)
        # its own generator: creating a loader must not draw from the global RNG (dropout would shift on resume)
        loader = torch.utils.data.DataLoader(dataset, batch_size=tc.per_device_batch_size, sampler=sampler,
                                             collate_fn=collate, num_workers=tc.num_workers,
                                             generator=torch.Generator().manual_seed(tc.seed + epoch))
        for batch in loader:
            micro += 1
            with acc.accumulate(model):
                batch = to_device(batch, acc.device)
                loss = model(**batch, labelled_logits_only=True).loss
                acc.backward(loss)
                if acc.sync_gradients and tc.max_grad_norm > 0:
                    acc.clip_grad_norm_(params, tc.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            window_loss.append(loss.detach())
            window_tokens += int(batch["attention_mask"].sum())
            if not acc.sync_gradients:
                continue
            scheduler.step()
            step += 1
            mean = acc.reduce(torch.stack(window_loss).mean(), reduction="mean").item()
            tokens = int(acc.reduce(torch.tensor(window_tokens, device=acc.device), reduction="sum").item())
            tps = tokens / max(time.perf_counter() - window_start, 1e-9)
            result.losses.append(mean)
            lr = scheduler.get_last_lr()[0]
            logger.progress(step, mean, lr, tps)
            if step % tc.log_steps == 0 or step == total_steps:
                logger.log(step, {"loss": mean, "lr": lr, "tokens_per_s": tps, "epoch": epoch})
            window_loss, window_tokens, window_start = [], 0, time.perf_counter()
            if eval_set is not None and (step % tc.eval_steps == 0 or step == total_steps) and acc.is_main_process:
                metrics = evaluate(acc.unwrap_model(model), eval_set, collate, acc.device, cfg.stream.threshold,
                                   markers_silence)
                logger.log(step, metrics)
                result.eval = metrics
            if step % tc.save_steps == 0 and step < total_steps:
                save_training_checkpoint(acc, model, tok, out, run, step, epoch, micro, tc.save_total_limit)
            if step >= total_steps or step == stop_after:
                break
        else:
            epoch, micro = epoch + 1, 0
            continue
        break

    acc.wait_for_everyone()
    result.steps = step
    result.model, result.tokenizer = acc.unwrap_model(model), tok
    if step == stop_after and step < total_steps:
        logger.close()
        return result
    if acc.is_main_process:
        result.final_dir = save_final_model(acc.unwrap_model(model), tok, out, run, step)
        acc.print(f"saved the final model to {result.final_dir}")
    logger.close()
    acc.wait_for_everyone()
    return result

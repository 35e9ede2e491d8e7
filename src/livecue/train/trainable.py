"""The model as training sees it: built (or continued from a checkpoint), LoRA applied, the right weights trainable.

* :func:`setup_model`: a fresh model from the config, or ``train.init_from``'s checkpoint (its LoRA and connector);
  LoRA on the LM (and a VLM's vision encoder / projector: ``vlm.lora_vision`` / ``lora_projector``); the connector
  trainable, the vision tower frozen unless the config trains it; what trains kept in float32.
* :func:`own_name`: a run that continues a checkpoint gets a name of its own, not the checkpoint's.
* :func:`adopt_colour_layout`: continue a checkpoint with other colour evidence per token (``vision.frame_colour_bins``,
  ``frame_colour_segments``).
* :func:`param_groups`: the optimizer's parameter groups (the connector in its own when it has its own lr).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import LiveConfig
from ..model import lm as lm_api
from ..model.build import build_model
from ..model.load import load_model
from ..model.lora import apply_lora, apply_vision_lora, has_lora, has_vision_lora, set_trainable, wants_vision_lora
from ..model.vision import FrameEncoder

log = logging.getLogger(__name__)


def setup_model(cfg: LiveConfig, keep_name: bool = False) -> tuple[Any, Any]:
    """Build (or load ``train.init_from``) the model with LoRA and the right parameters trainable.

    Args:
        cfg: the run's config.
        keep_name: keep ``cfg.name`` even when it is ``train.init_from``'s (the user chose it: ``--name``);
            otherwise such a run is renamed by :func:`own_name`.

    Returns:
        ``(LiveModel, tokenizer)``, the model in training mode with ``model.cfg`` = the run's config: ``cfg``, or
        ``cfg`` renamed.
    """
    tc = cfg.train
    if tc.init_from:
        model, tok = load_model(tc.init_from, merge_lora=False)
        adopt_colour_layout(model, cfg)
        model.cfg = cfg if keep_name else own_name(cfg, model.cfg.name)
    else:
        model, tok = build_model(cfg, seed=tc.seed, warn_random=False)  # training learns its random parts
    if cfg.lora.enabled and not has_lora(model):
        apply_lora(model)
    if wants_vision_lora(cfg) and not has_vision_lora(model):
        apply_vision_lora(model)
    set_trainable(model)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # master copies of what trains stay in fp32
    if tc.gradient_checkpointing:
        lm_api.enable_activation_checkpointing(model.lm)
        model.lm.config.use_cache = False
    model.train()
    return model, tok


def own_name(cfg: LiveConfig, inherited: str) -> LiveConfig:
    """``cfg`` with a name of its own when it still carries ``inherited``, the name of the checkpoint it continues
    (``livecue-default`` for ``train.init_from: default``): the run directory's name (``train.output_dir``'s last
    part, as the Hugging Face Trainer names a model after its output directory), or ``NAME-finetuned`` when the
    directory has the checkpoint's name. A name that differs from the checkpoint's is the user's and is kept."""
    if cfg.name != inherited:
        return cfg
    name = Path(cfg.train.output_dir).resolve().name
    if not name or name == inherited:
        name = f"{inherited}-finetuned"
    return cfg.with_overrides({"name": name})


def param_groups(model: Any, cfg: LiveConfig) -> list[dict[str, Any]]:
    """The trainable parameters: the connector in its own group when ``train.connector_learning_rate`` is set."""
    lr = cfg.train.connector_learning_rate
    connector = {id(p) for p in model.connector.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and (lr is None or id(p) not in connector)]
    groups = [{"params": rest}]
    if lr is not None:
        groups.append({"params": [p for p in model.connector.parameters() if p.requires_grad], "lr": lr})
    return groups


#: The vision fields :func:`adopt_colour_layout` lets a continued checkpoint change.
COLOUR_FIELDS = ("frame_colour_bins", "frame_colour_segments", "frame_segment_size", "frame_segment_min_share")


def adopt_colour_layout(model: Any, cfg: LiveConfig) -> None:
    """Continue a checkpoint with other colour evidence per token (only the :data:`COLOUR_FIELDS` of the vision
    config may change under ``train.init_from``): the same tower emits the new columns and tokens, and the
    connector's first layer gets zero weights for every new input column (the tower's columns keep theirs, the
    histogram's when ``frame_colour_bins`` stays, the segments' silhouette + centroid when their width stays). A
    change of ``frame_colour_bins`` alone keeps the token count, so the continued model starts with exactly the
    checkpoint's outputs; new colour-segment tokens are new inputs to the LM (the frame's other tokens keep their
    embeddings exactly).

    Raises:
        ValueError: another vision field differs, naming the fields.
    """
    old, new = model.cfg.vision, cfg.vision
    if old == new:
        return
    changed = sorted(k for k in vars(new) if getattr(new, k) != getattr(old, k))
    if not set(changed) <= set(COLOUR_FIELDS):
        raise ValueError(f"train.init_from's vision config differs in {changed}; only {', '.join(COLOUR_FIELDS)} "
                         f"can change when continuing a checkpoint")
    tower_width = model.connector[0].in_features - old.colour_width
    if model.vision is not None:
        enc = model.vision
        model.vision = FrameEncoder(enc.tower, new, enc.tower_width, tuple(enc.mean.flatten().tolist()),
                                    tuple(enc.std.flatten().tolist()))
    first = model.connector[0]
    wider = nn.Linear(tower_width + new.colour_width, first.out_features).to(first.weight.device, first.weight.dtype)
    old_cells, new_cells = old.frame_colour_bins**3, new.frame_colour_bins**3
    kept = [(0, 0, tower_width)]  # (column in the old layout, column in the new, width) of what stays the same
    if new_cells == old_cells:
        kept.append((tower_width, tower_width, new_cells))
    if old.segment_width and old.segment_width == new.segment_width:
        kept.append((tower_width + old_cells, tower_width + new_cells, new.segment_width))
    with torch.no_grad():
        wider.weight.zero_()
        for at_old, at_new, width in kept:
            wider.weight[:, at_new:at_new + width] = first.weight[:, at_old:at_old + width]
        wider.bias.copy_(first.bias)
    model.connector[0] = wider
    log.info("vision %s changed: connector input %d -> %d (new columns start at zero), %d -> %d tokens per frame",
             ", ".join(changed), first.in_features, wider.in_features, old.frame_num_tokens, new.frame_num_tokens)

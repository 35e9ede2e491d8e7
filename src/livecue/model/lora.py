"""LoRA on the LM through peft, injected in place (the LM stays a plain Hugging Face model; no wrapper class).

Upstream recipe (SPEC §1): r 128, α 256, dropout 0.05 on q/k/v/o/gate/up/down of every decoder layer and on
lm_head; the connector is trained in full ("modules_to_save"); the vision tower stays frozen.

Adapter files use PEFT's layout and key names over the LM (``base_model.model.`` + the LM's module names), so
``adapter_model.safetensors`` + ``adapter_config.json`` read like any PEFT adapter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..config import LoraConfig
from .live import LiveModel

log = logging.getLogger(__name__)
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


def peft_config(cfg: LoraConfig, base_model: str | None = None):
    try:
        from peft import LoraConfig as PeftLoraConfig
    except ImportError:
        raise ImportError("LoRA needs peft: pip install 'livecue[train]'") from None
    return PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=cfg.target_modules, base_model_name_or_path=base_model,
                          task_type="CAUSAL_LM")


def apply_lora(model: LiveModel) -> LiveModel:
    """Inject LoRA adapters into ``model.lm`` (in place) and set what trains: adapters + connector."""
    from peft import inject_adapter_in_model

    if has_lora(model):
        raise ValueError("this model already has LoRA adapters")
    inject_adapter_in_model(peft_config(model.cfg.lora, model.cfg.lm.name_or_path), model.lm)
    set_trainable(model)
    return model


def has_lora(model: LiveModel) -> bool:
    return any("lora_A" in name for name, _ in model.lm.named_parameters())


def set_trainable(model: LiveModel) -> None:
    """LoRA weights and the connector train; the base LM and the vision tower are frozen.

    Without LoRA (``lora.enabled: false``) the whole LM trains.
    """
    lora = has_lora(model)
    for name, p in model.lm.named_parameters():
        p.requires_grad_(("lora_" in name) if lora else True)
    model.connector.requires_grad_(True)
    if model.vision is not None:
        model.vision.tower.requires_grad_(not model.cfg.vision.frozen)


def adapter_state_dict(model: LiveModel) -> dict[str, torch.Tensor]:
    """The LoRA weights with PEFT key names (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model.lm, save_embedding_layers=False)
    return {PREFIX + k: v for k, v in state.items()}


def save_adapter(model: LiveModel, directory: str | Path) -> None:
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    save_file(state, str(directory / ADAPTER_FILE), metadata={"format": "pt"})
    config = peft_config(model.cfg.lora, model.cfg.lm.name_or_path).to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str))


def load_adapter(model: LiveModel, directory: str | Path) -> None:
    """Inject LoRA (from the model's config) and load the adapter weights saved by :func:`save_adapter`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = Path(directory) / ADAPTER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no {ADAPTER_FILE} in {str(directory)!r}")
    if not has_lora(model):
        apply_lora(model)
    state = load_file(str(file), device=str(model.device))
    stripped = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}
    result = set_peft_model_state_dict(model.lm, stripped)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"adapter {str(file)!r} has weights the model lacks: {unexpected[:3]}")


@torch.no_grad()
def merge_lora(model: LiveModel) -> None:
    """Fold the adapters into the base weights for inference (no LoRA cost per step); irreversible here.

    A layer whose weight is shared with the input embeddings (``lm_head`` of a model with tied embeddings, e.g.
    SmolLM2) stays unmerged: merging would change the embedding table too.
    """
    from peft.tuners.lora import LoraLayer

    embedding = model.lm.get_input_embeddings().weight
    for module in model.lm.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer().weight
            if base.data_ptr() == embedding.data_ptr():
                continue
            module.merge()

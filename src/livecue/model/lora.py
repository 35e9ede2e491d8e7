"""LoRA on the LM through peft, injected in place (the LM stays a plain Hugging Face model; no wrapper class).

Upstream recipe (SPEC §1): r 128, α 256, dropout 0.05 on q/k/v/o/gate/up/down of every decoder layer and on
lm_head; the connector is trained in full ("modules_to_save"); the vision tower stays frozen.

Adapter files use PEFT's layout and key names over the LM (``base_model.model.`` + the LM's module names), so
``adapter_model.safetensors`` + ``adapter_config.json`` read like any PEFT adapter.

When ``target_modules`` names an embedding layer (upstream's regex names ``lm_head``), peft (0.11, as upstream pins,
and later) also saves that layer's frozen weight, ``base_model.model.lm_head.base_layer.weight``. livecue accepts it
on every loading path and **checks** it: it must equal the base LM's own head (to within one unit of the coarser
dtype when the two dtypes differ), else the adapter is refused naming the tensor (it was trained over another base).
It is never loaded: the head stays the base's. livecue's own adapters do not write it.

peft is optional (the ``[train]`` extra): it is imported inside the functions that use it, and
:func:`peft_config` names the extra when it is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import CONFIG_FILE, LiveConfig, LoraConfig
from . import verify
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
    """Inject LoRA adapters into ``model.lm`` (in place) and set what trains: adapters + connector. The model keeps
    its mode (the injected dropout layers follow it: an eval model stays deterministic)."""
    from peft import inject_adapter_in_model

    if has_lora(model):
        raise ValueError("this model already has LoRA adapters")
    inject_adapter_in_model(peft_config(model.cfg.lora, base_name(model)), model.lm)
    model.train(model.training)
    set_trainable(model)
    return model


def wants_vision_lora(cfg: LiveConfig) -> bool:
    """Whether the config puts LoRA into a VLM's vision encoder or projector (``vlm.lora_vision`` /
    ``vlm.lora_projector``)."""
    return cfg.is_vlm and (cfg.vlm.lora_vision or cfg.vlm.lora_projector)


def has_vision_lora(model: LiveModel) -> bool:
    return model.vision is not None and any("lora_A" in name for name, _ in model.vision.tower.named_parameters())


def apply_vision_lora(model: LiveModel) -> LiveModel:
    """Inject LoRA (the ``lora`` section's r, alpha, dropout) into the linear layers of a VLM's vision encoder and/or
    projector that ``vlm.lora_vision`` / ``vlm.lora_projector`` name, in place; they train, the rest as before.
    Their weights are saved in ``livecue_model.safetensors`` (``vision.tower.<layer>.lora_A.weight``)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    if not wants_vision_lora(model.cfg):
        raise ValueError("vision LoRA needs architecture: vlm and vlm.lora_vision or vlm.lora_projector")
    if has_vision_lora(model):
        raise ValueError("this model's vision encoder already has LoRA adapters")
    targets = model.vision.lora_targets()
    if not targets or model.cfg.vlm.lora_projector and not any(model.vision._in_projector(t) for t in targets):
        raise ValueError(f"vlm.lora_projector: the {model.cfg.vlm.family} projector "
                         f"({model.vision.projector_name}) has no linear layer for LoRA: train it in full with "
                         "vlm.train_projector")
    lora = model.cfg.lora
    inject_adapter_in_model(PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                           target_modules=targets), model.vision.tower)
    model.train(model.training)
    set_trainable(model)
    return model


def base_name(model: LiveModel) -> str | None:
    """The pretrained model the adapter goes over (its ``base_model_name_or_path``): the LM's, or the VLM's."""
    return (model.cfg.vlm if model.cfg.is_vlm else model.cfg.lm).name_or_path


def has_lora(model: LiveModel) -> bool:
    return any("lora_A" in name for name, _ in model.lm.named_parameters())


def set_trainable(model: LiveModel) -> None:
    """LoRA weights and the connector train; the base LM and the vision tower are frozen.

    Without LoRA (``lora.enabled: false``) the whole LM trains. A VLM's vision encoder and projector train as
    ``vlm.train_vision`` / ``vlm.train_projector`` say (its connector is the identity).
    """
    lora = has_lora(model)
    for name, p in model.lm.named_parameters():
        p.requires_grad_(("lora_" in name) if lora else True)
    model.connector.requires_grad_(True)
    if model.vision is not None and model.cfg.is_vlm:
        model.vision.set_trainable()
    elif model.vision is not None:
        model.vision.tower.requires_grad_(not model.cfg.vision.frozen)


def adapter_state_dict(model: LiveModel) -> dict[str, torch.Tensor]:
    """The LoRA weights with PEFT key names (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model.lm, save_embedding_layers=False)
    return {PREFIX + k: v for k, v in state.items()}


def save_adapter(model: LiveModel, directory: str | Path) -> None:
    """Write the LoRA weights and their PEFT ``adapter_config.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    save_file(state, str(directory / ADAPTER_FILE), metadata={"format": "pt"})
    config = peft_config(model.cfg.lora, base_name(model)).to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, default=str))


def load_adapter(model: LiveModel, directory: str | Path) -> None:
    """Inject LoRA (from the model's config) and load a livecue checkpoint's adapter, checked: ``adapter_config.json``
    valid and agreeing with the config's ``lora`` section, the weights exactly the model's LoRA layers."""
    directory = Path(directory)
    file = verify.require_file(directory / ADAPTER_FILE, "the checkpoint's LoRA adapter weights")
    config = read_adapter_config(directory / ADAPTER_CONFIG)
    lora = model.cfg.lora
    for key, value in (("r", lora.r), ("lora_alpha", lora.alpha)):
        if config[key] != value:
            raise ValueError(f"{str(directory / ADAPTER_CONFIG)!r} says {key}={config[key]!r} but {CONFIG_FILE} has "
                             f"lora.{'alpha' if key == 'lora_alpha' else key}={value!r}")
    if not has_lora(model):
        apply_lora(model)
    tensors = verify.load_tensors(file, device=model.device)
    load_lora_tensors(model, tensors, file, what=f"the config in {CONFIG_FILE}")


def read_adapter_config(file: Path) -> dict:
    """A PEFT ``adapter_config.json``, checked: a LORA adapter with a positive integer ``r`` and ``lora_alpha``."""
    config = verify.read_json(verify.require_file(file, "a LoRA adapter's settings (r, lora_alpha, target_modules)"))
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{str(file)!r}: peft_type must be LORA, got {config.get('peft_type')!r}")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value != int(value):
            raise ValueError(f"{str(file)!r}: {key} must be a positive integer, got {value!r}")
        config[key] = int(value)
    target = config.get("target_modules")
    if not (isinstance(target, str) or isinstance(target, list) and all(isinstance(t, str) for t in target)):
        raise ValueError(f"{str(file)!r}: target_modules must be a regex or a list of names, got {target!r}")
    dropout = config.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"{str(file)!r}: lora_dropout must be a number in [0, 1), got {dropout!r}")
    return config


def frozen_embeddings(model: LiveModel) -> dict[str, torch.Tensor]:
    """PEFT name -> weight of each LoRA-wrapped input/output embedding's frozen base layer: what peft also saves
    when ``target_modules`` names ``lm_head`` / ``embed_tokens`` (``base_model.model.lm_head.base_layer.weight``)."""
    names = {id(m): n for n, m in model.lm.named_modules()}
    out = {}
    for layer in (model.lm.get_input_embeddings(), model.lm.get_output_embeddings()):
        base = getattr(layer, "base_layer", None)
        if isinstance(base, (torch.nn.Linear, torch.nn.Embedding)) and id(base) in names:
            out[f"{PREFIX}{names[id(base)]}.weight"] = base.weight
    return out


def load_lora_tensors(model: LiveModel, tensors: dict[str, torch.Tensor], file: Path, *, what: str,
                      extra: dict[str, tuple[int, ...]] | None = None) -> None:
    """Check adapter ``tensors`` (PEFT names) against the model's injected LoRA layers and load them strictly.

    Names and shapes must be exactly the LoRA layers' (plus ``extra``, e.g. the connector, which the caller loads);
    a saved frozen embedding (``…lm_head.base_layer.weight``) may be there and must equal the model's own.
    """
    from peft import set_peft_model_state_dict

    lora = {k: tuple(v.shape) for k, v in adapter_state_dict(model).items()}
    frozen = frozen_embeddings(model)
    expected = {**lora, **(extra or {}), **{k: tuple(v.shape) for k, v in frozen.items()}}
    verify.check_keys(file, {k: tuple(v.shape) for k, v in tensors.items()}, expected, optional=frozen, what=what)
    for key, weight in frozen.items():
        if key in tensors and not verify.same_values(tensors[key], weight):
            raise ValueError(f"{str(file)!r}: {key!r} differs from the base LM's own weight: this adapter was "
                             "trained over another base model (pass the one it was trained on)")
    result = set_peft_model_state_dict(model.lm, {k[len(PREFIX):]: tensors[k] for k in lora})
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:  # cannot happen after check_keys; a peft change must not turn into silent zeros
        raise ValueError(f"{str(file)!r}: peft did not load LoRA weights {missing[:verify.SHOWN]}")


@torch.no_grad()
def merge_lora(model: LiveModel) -> None:
    """Fold the adapters (the LM's, and a VLM vision encoder's) into the base weights for inference (no LoRA cost per
    step); irreversible here.

    A layer whose weight is shared with the input embeddings (``lm_head`` of a model with tied embeddings, e.g.
    SmolLM2) stays unmerged: merging would change the embedding table too.
    """
    from peft.tuners.lora import LoraLayer

    embedding = model.lm.get_input_embeddings().weight
    vision = list(model.vision.tower.modules()) if has_vision_lora(model) else []
    for module in [*model.lm.modules(), *vision]:
        if isinstance(module, LoraLayer):
            base = module.get_base_layer().weight
            if base.data_ptr() == embedding.data_ptr():
                continue
            module.merge()

"""The paper's released checkpoint and its layout (SPEC §8): load, convert to livecue, export back.

``chenjoya/videollm-online-8b-v1plus`` is a PEFT LoRA adapter over ``meta-llama/Meta-Llama-3-8B-Instruct``:

    adapter_config.json          peft_type LORA, r 128, lora_alpha 256, lora_dropout 0.05, target_modules (regex),
                                 modules_to_save ["connector"], base_model_name_or_path
    adapter_model.safetensors    base_model.model.model.layers.{i}.{self_attn,mlp}.*.lora_{A,B}.weight,
                                 base_model.model.lm_head.lora_{A,B}.weight, base_model.model.connector.{0,2}.*,
                                 base_model.model.lm_head.base_layer.weight (the frozen head: peft saves it because
                                 the target regex names lm_head; checked equal to the base's, never loaded)
    tokenizer files              Llama-3's, with <v> added

The live config is not stored: it is the live1+ preset (SigLIP-L/16-384 frames, CLS + 3×3, ``,`` between frames,
θ = 0.725). livecue loads it with the same template and ids taken from the tokenizer, minus upstream's bugs.

Every file is checked before use (``verify``): ``adapter_config.json`` valid, the weights file readable and finite,
its tensors exactly the connector and the LoRA layers the base LM gets from the adapter's settings, in their shapes.
``convert`` keeps every tensor (the frozen head too) bit for bit; loading the converted checkpoint checks it again.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import CONFIG_FILE, LiveConfig, preset
from ..pretrained import local_dir
from . import verify
from .build import build_model, load_tokenizer, prepare_tokenizer
from .card import CardFacts
from .card_files import save_facts, write_card
from .live import LiveModel
from .lora import ADAPTER_CONFIG, ADAPTER_FILE, PREFIX, apply_lora, load_lora_tensors, merge_lora, read_adapter_config
from .verify import WEIGHTS_FILE, weights_metadata

log = logging.getLogger(__name__)
CONNECTOR_PREFIX = PREFIX + "connector."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "chat_template.jinja")


@dataclass(frozen=True)
class UpstreamParts:
    adapter: str
    base: str
    vision: str
    preset: str = "live1_plus"


ALIASES = {
    "videollm-online-8b-v1plus": UpstreamParts("chenjoya/videollm-online-8b-v1plus",
                                               "meta-llama/Meta-Llama-3-8B-Instruct",
                                               "google/siglip-large-patch16-384"),
}


def is_upstream_dir(path: str | Path) -> bool:
    """An upstream-layout adapter directory: a PEFT adapter config and no livecue config (a missing or broken
    weights file is then reported by :func:`read_adapter`, naming it)."""
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / CONFIG_FILE).exists()


def read_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(adapter_config, tensors)`` of an upstream adapter, checked as far as it can be without the base model:
    valid config, readable finite tensors, a connector, and only LoRA, connector and frozen base-layer tensors."""
    config = read_adapter_config(adapter_dir / ADAPTER_CONFIG)
    file = verify.require_file(adapter_dir / ADAPTER_FILE, "the adapter's weights (LoRA + connector)")
    tensors = verify.load_tensors(file)
    if not any(k.startswith(CONNECTOR_PREFIX) for k in tensors):
        raise ValueError(f"{str(file)!r}: the adapter holds no connector weights ({CONNECTOR_PREFIX}*)")
    other = [k for k in tensors if not (k.startswith(CONNECTOR_PREFIX) or k.startswith(PREFIX)
                                        and ("lora_" in k or ".base_layer." in k))]
    if other:
        raise ValueError(f"{str(file)!r} holds {len(other)} tensors that are neither LoRA, connector nor frozen "
                         f"base-layer weights: {', '.join(other[:verify.SHOWN])}")
    return config, tensors


def upstream_config(adapter_config: dict[str, Any], base: str | None, vision: str | None,
                    preset_name: str = "live1_plus") -> LiveConfig:
    """The live1+ preset with the adapter's LoRA settings and the given base LM / vision tower."""
    target = adapter_config.get("target_modules")
    if isinstance(target, list):
        target = "|".join(rf".*\.{t}$" if "." not in t else t for t in target)
    over = {"lora.r": adapter_config["r"], "lora.alpha": adapter_config["lora_alpha"],
            "lora.dropout": adapter_config.get("lora_dropout", 0.0), "lora.target_modules": target,
            "lm.name_or_path": base or adapter_config.get("base_model_name_or_path")}
    if over["lm.name_or_path"] is None:
        raise ValueError("the adapter does not name its base model: pass --base")
    if vision:
        over["vision.name_or_path"] = vision
    return preset(preset_name, over)


def load_upstream(adapter: str, *, base: str | None = None, vision: str | None = None,
                  device: str | torch.device | None = None, dtype: str | None = None,
                  merge: bool = True) -> tuple[LiveModel, Any]:
    """Load an upstream adapter (alias, hub id or directory) as ``(LiveModel, tokenizer)``."""
    parts = ALIASES.get(adapter)
    if parts is not None:
        adapter, base, vision = parts.adapter, base or parts.base, vision or parts.vision
    adapter_dir = local_dir(adapter, "VideoLLM-online adapter")
    config, tensors = read_adapter(adapter_dir)
    cfg = upstream_config(config, str(local_dir(base, "base LM (Llama-3 is gated: accept its licence and log in)"))
                          if base else None, vision)
    saved = any((adapter_dir / name).is_file() for name in TOKENIZER_FILES)  # upstream saves it with the adapter
    tokenizer = prepare_tokenizer(load_tokenizer(adapter_dir if saved else cfg.lm.name_or_path, saved=saved), cfg)
    model, tokenizer = build_model(cfg, device=device, dtype=dtype, tokenizer=tokenizer,
                                   warn_random=False)  # the connector comes from the adapter
    apply_lora(model)
    load_upstream_tensors(model, tensors, adapter_dir / ADAPTER_FILE)
    if merge:
        merge_lora(model)
    model.eval()
    return model, tokenizer


def load_upstream_tensors(model: LiveModel, tensors: dict[str, torch.Tensor], file: str | Path = ADAPTER_FILE) -> None:
    """Put upstream adapter tensors (LoRA + connector, maybe the frozen head) into a LiveModel with LoRA injected.

    Names and shapes must be exactly the model's LoRA layers and connector; a frozen ``…lm_head.base_layer.weight``
    must equal the base LM's head (checked, not loaded). ``file`` names the source in messages.
    """
    connector = {CONNECTOR_PREFIX + k: tuple(v.shape) for k, v in model.connector.state_dict().items()}
    load_lora_tensors(model, tensors, Path(file), what="the base LM with this adapter's LoRA settings",
                      extra=connector)
    model.connector.load_state_dict({k[len(CONNECTOR_PREFIX):]: tensors[k] for k in connector}, strict=True)


# ---- conversion ----------------------------------------------------------------------------------------------------
def convert_to_livecue(adapter_dir: str | Path, out: str | Path, *, base: str | None = None,
                       vision: str | None = None, origin: str | None = None) -> Path:
    """Upstream adapter directory -> livecue checkpoint directory; every tensor is copied bit for bit. The directory
    gets a model card naming ``origin`` (the hub id or directory the adapter came from)."""
    adapter_dir, out = Path(adapter_dir), Path(out)
    _check_out(adapter_dir, out)
    config, tensors = read_adapter(adapter_dir)
    cfg = upstream_config(config, base, vision)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out)
    connector = {"connector." + k[len(CONNECTOR_PREFIX):]: v for k, v in tensors.items()
                 if k.startswith(CONNECTOR_PREFIX)}
    lora = {k: v for k, v in tensors.items() if not k.startswith(CONNECTOR_PREFIX)}
    save_file(connector, str(out / WEIGHTS_FILE), metadata=weights_metadata(lora=True))
    save_file(lora, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    adapter_config = dict(config, modules_to_save=None)
    (out / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2))
    _copy_tokenizer(adapter_dir, out)
    save_facts(out, CardFacts(origin=origin or str(adapter_dir)))
    write_card(out)
    return out


def export_upstream(checkpoint: str | Path, out: str | Path) -> Path:
    """livecue checkpoint directory -> upstream adapter layout (LoRA + connector in one PEFT adapter)."""
    checkpoint, out = Path(checkpoint), Path(out)
    _check_out(checkpoint, out)
    cfg = LiveConfig.load(checkpoint)
    if not (checkpoint / ADAPTER_FILE).is_file():
        raise FileNotFoundError(f"{str(checkpoint)!r} has no LoRA adapter ({ADAPTER_FILE}) to export")
    config = read_adapter_config(checkpoint / ADAPTER_CONFIG)
    weights = verify.load_tensors(verify.require_file(checkpoint / WEIGHTS_FILE, "the checkpoint's connector"))
    extra = sorted(k for k in weights if not k.startswith("connector."))
    if extra:
        raise ValueError(f"{str(checkpoint)!r} holds non-adapter weights ({extra[:3]}...): the upstream layout "
                         "stores only the adapter and the connector over a pretrained base")
    tensors = verify.load_tensors(checkpoint / ADAPTER_FILE)
    tensors.update({CONNECTOR_PREFIX + k[len("connector."):]: v for k, v in weights.items()})
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_FILE), metadata={"format": "pt"})
    config.update(modules_to_save=["connector"], base_model_name_or_path=cfg.lm.name_or_path)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
    _copy_tokenizer(checkpoint, out)
    return out


def _check_out(source: Path, out: Path) -> None:
    """Conversion writes a new directory: never over its source (that would overwrite the source's adapter)."""
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ValueError(f"--out {str(out)!r} is the source directory: write the converted checkpoint elsewhere")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)

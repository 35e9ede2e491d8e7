"""Save and load livecue checkpoints; load any model source as ``(LiveModel, tokenizer)``.

``load_model(source)`` takes a checkpoint directory, a preset name, a config file, a hub id, the packaged default
model or the paper's released adapter (:mod:`livecue.model.upstream`); building a model from a config is
:mod:`livecue.model.build`.

A livecue checkpoint directory holds ``livecue_config.json``, the tokenizer files (with ``<v>``), a model card
(``README.md``, :mod:`livecue.model.card`) and ``livecue_model.safetensors`` with the weights that cannot be rebuilt
from pretrained sources: always the connector, plus every randomly initialised part (keys prefixed ``connector.``,
``lm.``, ``vision.``). Over a pretrained VLM (``architecture: vlm``) that is the LoRA adapter beside it and the
vision encoder / projector weights it trained (``vision.tower.*``); a random VLM saves everything, as a composed
model's random parts.

Loading is strict and checked before any weight is used (``verify``): the weights file must hold exactly the tensors
the config builds, in the config's shapes, all finite; a missing file, a corrupt one, an invalid config or missing
tokenizer files are refused with one line naming the file. No part of a checkpoint is ever left randomly initialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..config import CONFIG_FILE, LiveConfig, list_presets, preset
from ..pretrained import local_dir
from . import upstream, verify, vlm
from .build import DTYPE_NAMES, build_model, load_tokenizer
from .card_files import refresh_card
from .live import LiveModel
from .lora import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    apply_vision_lora,
    has_lora,
    load_adapter,
    merge_lora,
    read_adapter_config,
    save_adapter,
    wants_vision_lora,
)
from .verify import WEIGHTS_FILE, weights_metadata
from .vision import build_frame_encoder

__all__ = ["save_checkpoint", "checkpoint_state", "load_model", "load_frame_encoder", "check_checkpoint_files",
           "DEFAULT_ALIAS", "DEFAULT_MODEL_DIR"]


# ---- saving -----------------------------------------------------------------------------------------------------
def save_checkpoint(model: LiveModel, tokenizer: Any, directory: str | Path, *, card: bool = True) -> Path:
    """Write config, tokenizer, the LoRA adapter (if any), the weights not rebuildable from pretrained sources and
    the model card.

    ``livecue_model.safetensors`` holds the connector, plus the base LM when it was randomly initialised or trained
    without LoRA, plus the vision tower when it was randomly initialised (a VLM's: the parts it trains). Adapter
    weights go to ``adapter_model.safetensors`` (PEFT layout). ``README.md`` is the model card
    (:mod:`livecue.model.card`: base parts, configuration, intended use and limitations; a training run's checkpoint
    adds its training data and metrics; a hand-written card is kept): ``card=False`` leaves it to the caller
    (training writes it after the manifest it reads).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.cfg.save(directory)
    tokenizer.save_pretrained(str(directory))
    lora = has_lora(model)
    state = checkpoint_state(model, lora=lora)
    save_file({k: v.detach().contiguous().cpu() for k, v in _untie(state).items()}, str(directory / WEIGHTS_FILE),
              metadata=weights_metadata(lora))
    if lora:
        save_adapter(model, directory)
    if card:
        refresh_card(directory)  # a hand-written card (without livecue's marker line) is kept
    return directory


def checkpoint_state(model: LiveModel, *, lora: bool) -> dict[str, torch.Tensor]:
    """What ``livecue_model.safetensors`` holds for ``model`` (with a LoRA adapter beside it or not): the connector,
    the LM when it is random or trained without LoRA, the vision tower when it is random. :func:`save_checkpoint`
    writes it; :func:`load_model` expects exactly these names and shapes."""
    cfg = model.cfg
    state = {f"connector.{k}": v for k, v in model.connector.state_dict().items()}
    if (cfg.vlm if cfg.is_vlm else cfg.lm).name_or_path is None or not lora:
        for k, v in model.lm.state_dict().items():
            if "lora_" not in k:
                state[f"lm.{k.replace('.base_layer.', '.')}"] = v
    if model.vision is not None:
        random = (cfg.vlm if cfg.is_vlm else cfg.vision).name_or_path is None
        if cfg.is_vlm:  # names as without LoRA, plus the vision LoRA layers (vlm.lora_vision / lora_projector)
            tower = vlm.plain_state(model.vision.tower) if random else model.vision.trained_state()
        else:
            tower = model.vision.tower.state_dict() if random else {}
        state.update({f"vision.tower.{k}": v for k, v in tower.items()})
    return state


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: clone tensors that alias an earlier one (tied embeddings)."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


# ---- loading ----------------------------------------------------------------------------------------------------
DEFAULT_ALIAS = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"  # livecue's own (issue 7)


def load_model(source: str | Path, *, device: str | torch.device | None = None, dtype: str | None = None,
               overrides: list[str] | None = None, merge_lora: bool = True, base: str | None = None,
               vision: str | None = None, quantize: str | None = None) -> tuple[LiveModel, Any]:
    """Load ``(LiveModel, tokenizer)`` (:func:`_load_any`: every source it accepts), then quantize it when
    ``quantize`` names a scheme or, with ``quantize=None``, when its config's ``quantize.scheme`` does
    (:func:`livecue.model.quantize.apply_config`: θ re-calibrated for that scheme replaces ``stream.threshold``).
    ``quantize="none"`` loads at full precision whatever the config says; ``merge_lora=False`` (to train on)
    ignores the config's scheme."""
    model, tokenizer = _load_any(source, device=device, dtype=dtype, overrides=overrides, merge_lora=merge_lora,
                                 base=base, vision=vision)
    if quantize is None and not merge_lora:  # loaded to train on (or for its vision side): full precision
        return model, tokenizer
    scheme = model.cfg.quantize.scheme if quantize is None else quantize
    if scheme != "none":
        if not merge_lora:
            raise ValueError("quantization needs the LoRA adapter merged (merge_lora=True)")
        from .quantize import apply_config

        apply_config(model, scheme, source=str(source))
    return model, tokenizer


def _load_any(source: str | Path, *, device: str | torch.device | None = None, dtype: str | None = None,
              overrides: list[str] | None = None, merge_lora: bool = True, base: str | None = None,
              vision: str | None = None) -> tuple[LiveModel, Any]:
    """Load ``(LiveModel, tokenizer)`` from a checkpoint directory, a preset name, a config file, a hub id, the
    packaged default model (``default``), the paper's released adapter (alias ``videollm-online-8b-v1plus`` or a
    directory in its layout), or a pretrained vision-language model (a Hugging Face directory or hub id of a family
    :mod:`livecue.model.vlm` drives, e.g. Qwen2.5-VL: ``architecture: vlm`` with every other field at its default).

    A checkpoint's LoRA adapter is merged into the base weights unless ``merge_lora=False`` (for training on).
    ``base`` / ``vision`` replace the base LM / vision tower of an upstream adapter (local copies of gated weights).
    """
    if str(source) == DEFAULT_ALIAS and not Path(source).exists():
        source = DEFAULT_MODEL_DIR
    if str(source) in upstream.ALIASES or upstream.is_upstream_dir(source):
        return upstream.load_upstream(str(source), base=base, vision=vision, device=device, dtype=dtype,
                                      merge=merge_lora)
    path = Path(source)
    if path.is_dir() and (path / CONFIG_FILE).exists():
        return _load_checkpoint(path, device=device, dtype=dtype, overrides=overrides, merge=merge_lora)
    if path.is_dir() and vlm.is_vlm_dir(path):  # a pretrained VLM as it is (its LIVE behaviour untrained)
        return build_model(vlm.dir_config(path, overrides), device=device, dtype=dtype)
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a livecue checkpoint: it has no {CONFIG_FILE} (nor a "
                                f"config.json of a vision-language model livecue drives: {_families()})")
    if _is_preset(str(source)):
        return build_model(preset(str(source), overrides), device=device, dtype=dtype)
    if path.is_file():
        cfg = LiveConfig.load(path)
        return build_model(cfg.with_overrides(overrides) if overrides else cfg, device=device, dtype=dtype)
    if _looks_like_hub_id(str(source)):
        local = local_dir(str(source), "model")
        if vlm.is_vlm_dir(local):  # the config names the hub id, not this machine's hub cache
            return build_model(vlm.dir_config(str(source), overrides), device=device, dtype=dtype)
        return _load_any(local, device=device, dtype=dtype, overrides=overrides, merge_lora=merge_lora, base=base,
                         vision=vision)
    raise ValueError(f"unknown model {str(source)!r}: not a checkpoint directory, a config file, a preset "
                     f"({', '.join(list_presets())}), {DEFAULT_ALIAS} or {', '.join(upstream.ALIASES)}")


def load_frame_encoder(source: str | Path, *, device: str | torch.device | None = None, dtype: str = "float32",
                       overrides: list[str] | None = None):
    """Only the vision side of a model (for feature caching): ``(FrameEncoder, LiveConfig)``, with dotted config
    ``overrides`` applied (e.g. ``["vision.frame_token_pooled=2"]``).

    Pretrained towers load from their own source; a randomly initialised tower takes its weights from the
    checkpoint's ``livecue_model.safetensors`` (or the preset's seed-0 initialisation). A VLM base's encoder (its
    vision model and projector: :class:`~livecue.model.vlm.VLMFrameEncoder`) comes from the whole model as
    :func:`load_model` loads it (trained projector weights included); its LM is dropped.
    """
    if str(source) == DEFAULT_ALIAS and not Path(source).exists():
        source = DEFAULT_MODEL_DIR
    path = Path(source)
    if path.is_dir() and vlm.is_vlm_dir(path) or _config_of(source).is_vlm:
        model, _ = load_model(source, dtype=dtype, overrides=overrides, merge_lora=False)
        return model.vision.to(device or "cpu").eval(), model.cfg
    cfg = _config_of(source)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # build_model's seed for the vision tower
        encoder = build_frame_encoder(cfg.vision, dtype=DTYPE_NAMES[dtype])
    if cfg.vision.name_or_path is None and path.is_dir():  # a random tower's weights are the checkpoint's
        prefix = "vision.tower."
        weights = verify.require_file(path / WEIGHTS_FILE, "the checkpoint's randomly initialised vision tower "
                                                           "is stored there")
        expected = {prefix + k: tuple(v.shape) for k, v in encoder.tower.state_dict().items()}
        state = verify.load_tensors(weights, expected, prefix=prefix, what=f"the config in {CONFIG_FILE}")
        encoder.tower.load_state_dict({k[len(prefix):]: v for k, v in state.items()}, strict=True)
    return encoder.to(device or "cpu").eval(), cfg


def _config_of(source: str | Path) -> LiveConfig:
    """The config of a checkpoint directory, a config file or a preset (spelt as :func:`load_model` accepts it:
    ``live1+``, ``live1-plus``)."""
    if Path(source).exists():
        return LiveConfig.load(source)
    return preset(str(source)) if _is_preset(str(source)) else LiveConfig.load(str(source))


def _families() -> str:
    return ", ".join(sorted({adapter.name for adapter in vlm.FAMILIES.values()}))


def _is_preset(name: str) -> bool:
    return name in list_presets() or name.replace("-", "_").replace("+", "_plus") in list_presets()


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def check_checkpoint_files(directory: str | Path, *, full: bool = True) -> LiveConfig:
    """Check a livecue checkpoint directory's files without building its model; returns its config.

    ``livecue_config.json`` valid, ``livecue_model.safetensors`` present and readable, the LoRA adapter's files
    complete (and present when the weights were saved with one), the weights' sizes and sha256 equal to those a
    ``livecue_manifest.json`` records (when there is one), the tokenizer files there. With ``full`` every
    tensor is also read and checked finite (what a resume must trust). Names and shapes against the config are
    checked when the model is built (:func:`load_model`). Raises one-line ``ValueError`` / ``FileNotFoundError``.
    """
    path = Path(directory)
    cfg = LiveConfig.load(path)
    weights = verify.require_file(path / WEIGHTS_FILE, "a livecue checkpoint stores its connector (and every "
                                  f"randomly initialised part) there; a directory with only {CONFIG_FILE} is not a "
                                  "checkpoint (pass the config file itself for a random model)")
    files = [weights]
    if (path / ADAPTER_FILE).is_file() or (path / ADAPTER_CONFIG).is_file():
        files.append(verify.require_file(path / ADAPTER_FILE, "the checkpoint's LoRA adapter weights"))
        read_adapter_config(path / ADAPTER_CONFIG)
    elif verify.read_metadata(weights).get("adapter") == "yes":
        raise FileNotFoundError(f"{str(path / ADAPTER_FILE)!r} is missing: {str(weights)!r} was saved with a LoRA "
                                f"adapter beside it ({ADAPTER_FILE} + {ADAPTER_CONFIG})")
    for file in files:
        if full:
            verify.load_tensors(file)
        else:
            verify.read_header(file)
    verify.check_manifest(path, files)  # a training run's checkpoint: the weights' bytes are the ones it wrote
    verify.check_tokenizer_dir(path)
    return cfg


def _load_checkpoint(path: Path, *, device: str | torch.device | None, dtype: str | None,
                     overrides: list[str] | None, merge: bool) -> tuple[LiveModel, Any]:
    """A livecue checkpoint directory, every file checked before its contents are used (cheap checks first)."""
    cfg = check_checkpoint_files(path, full=False)
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    tokenizer = load_tokenizer(path, saved=True)
    model, tokenizer = build_model(cfg, device=device, dtype=dtype, tokenizer=tokenizer,
                                   warn_random=False)  # its weights are the checkpoint's
    if wants_vision_lora(cfg):  # its LoRA layers are in the weights file: inject them first
        apply_vision_lora(model)
    adapter = (path / ADAPTER_FILE).is_file()
    _load_weights(model, path / WEIGHTS_FILE, lora=adapter)
    if adapter:
        load_adapter(model, path)
    if merge:
        merge_lora(model)
    return model, tokenizer


def _load_weights(model: LiveModel, file: Path, *, lora: bool) -> None:
    """Load ``livecue_model.safetensors`` strictly: exactly :func:`checkpoint_state`'s names and shapes, finite."""
    expected = {k: tuple(v.shape) for k, v in checkpoint_state(model, lora=lora).items()}
    state = verify.load_tensors(file, expected, what=f"the config in {CONFIG_FILE}", device=model.device)
    parts = {"connector.": model.connector, "lm.": model.lm}
    if model.vision is not None:
        parts["vision.tower."] = model.vision.tower
    for prefix, module in parts.items():
        own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if own and model.cfg.is_vlm and prefix == "vision.tower.":  # its trained parts: a subset (names checked)
            vlm.load_plain_state(module, own, strict=False)
        elif own:
            module.load_state_dict(own, strict=True)

"""Build a LiveModel and its tokenizer from a config; save and load livecue checkpoints.

``build_model(cfg)`` assembles the parts a config names: pretrained (hub id, local directory or a livecue alias
such as ``smollm2-135m-instruct``) or randomly initialised (``random_init``, e.g. the ``tiny`` preset).
``load_model(source)`` takes a checkpoint directory, a preset name or a config file.

A livecue checkpoint directory holds ``livecue_config.json``, the tokenizer files (with ``<v>``) and
``livecue_model.safetensors`` with the weights that cannot be rebuilt from pretrained sources: always the connector,
plus every randomly initialised part (keys prefixed ``connector.``, ``lm.``, ``vision.``).

Loading is strict and checked before any weight is used (``verify``): the weights file must hold exactly the tensors
the config builds, in the config's shapes, all finite; a missing file, a corrupt one, an invalid config or missing
tokenizer files are refused with one line naming the file. No part of a checkpoint is ever left randomly initialised.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..config import CONFIG_FILE, LiveConfig, list_presets, preset
from ..data.labels import Markers, add_frame_placeholder
from ..data.template import Template
from . import verify
from .live import LiveModel
from .verify import hub_error  # also this module's interface: older callers import it from here
from .vision import build_frame_encoder

log = logging.getLogger(__name__)
WEIGHTS_FILE = "livecue_model.safetensors"
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_lm_path(name: str) -> str:
    """Resolve livecue aliases of offline pretrained LMs to a local directory; other names pass through."""
    from . import offline

    return offline.resolve(name)


def build_tokenizer(cfg: LiveConfig) -> Any:
    """The LM's tokenizer with ``<v>`` added (packaged tiny tokenizer for ``lm.tokenizer: tiny``)."""
    source = cfg.lm.tokenizer or cfg.lm.name_or_path
    if source == "tiny":
        from .tiny_tokenizer import load_tiny_tokenizer

        tokenizer = load_tiny_tokenizer()
    else:
        tokenizer = load_tokenizer(resolve_lm_path(source))
    add_frame_placeholder(tokenizer, cfg.stream.v_placeholder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(source: str | Path, *, saved: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained(source)`` with one-line errors.

    Args:
        source: a hub id or a local directory.
        saved: ``source`` is a directory livecue or upstream saved a tokenizer into (a checkpoint): its tokenizer
            files must all be there.
    """
    from transformers import AutoTokenizer

    if saved:
        verify.check_tokenizer_dir(Path(source))
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as e:  # noqa: BLE001 - tokenizers/JSON/sentencepiece errors become one line naming the source
        raise hub_error("tokenizer", str(source), e) from None


def build_lm(cfg: LiveConfig, tokenizer: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The causal LM: pretrained, or random with ``vocab_size`` = the tokenizer's vocabulary before ``<v>``."""
    import transformers

    if cfg.lm.random_init is not None and cfg.lm.name_or_path is None:
        kwargs = dict(cfg.lm.random_init)
        model_type = kwargs.pop("model_type")
        kwargs.setdefault("vocab_size", len(tokenizer) - 1)
        kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        hf_cfg = transformers.AutoConfig.for_model(model_type, **kwargs)
        hf_cfg._attn_implementation = cfg.lm.attn_implementation
        return transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype)
    return verify.from_pretrained(transformers.AutoModelForCausalLM, resolve_lm_path(cfg.lm.name_or_path),
                                  "language model", dtype=dtype, attn_implementation=cfg.lm.attn_implementation)


def build_model(cfg: LiveConfig, *, device: str | torch.device | None = None, dtype: str | None = None,
                seed: int | None = 0, tokenizer: Any = None) -> tuple[LiveModel, Any]:
    """Assemble ``(LiveModel, tokenizer)`` from a config.

    Args:
        cfg: the model config.
        device: where to put the model (default CPU).
        dtype: override ``cfg.lm.dtype`` (``float32``, ``bfloat16``, ``float16``).
        seed: seed for randomly initialised parts (reproducible random models); ``None`` leaves the RNG alone.
        tokenizer: reuse an already built tokenizer.
    """
    dtype_name = dtype or cfg.lm.dtype
    if dtype_name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype_name!r}")
    torch_dtype = DTYPE_NAMES[dtype_name]
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
    markers = Markers.from_tokenizer(tokenizer, cfg.stream.v_placeholder, cfg.stream.frame_interval)
    with torch.random.fork_rng(devices=[]):  # each random part has its own seed: seed, seed + 1, seed + 2
        if seed is not None:
            torch.manual_seed(seed)
        vision = build_frame_encoder(cfg.vision, dtype=torch_dtype)
        if seed is not None:
            torch.manual_seed(seed + 1)
        lm = build_lm(cfg, tokenizer, torch_dtype)
        if seed is not None:
            torch.manual_seed(seed + 2)
        model = LiveModel(vision, lm, cfg, markers.v)
    model.to(device or "cpu")
    model.eval()
    return model, tokenizer


def template_for(model: LiveModel, tokenizer: Any) -> Template:
    """The template matching a model's config and tokenizer."""
    return Template.from_config(model.cfg, tokenizer)


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def save_checkpoint(model: LiveModel, tokenizer: Any, directory: str | Path) -> Path:
    """Write config, tokenizer, the LoRA adapter (if any) and the weights not rebuildable from pretrained sources.

    ``livecue_model.safetensors`` holds the connector, plus the base LM when it was randomly initialised or trained
    without LoRA, plus the vision tower when it was randomly initialised. Adapter weights go to
    ``adapter_model.safetensors`` (PEFT layout).
    """
    from safetensors.torch import save_file

    from .lora import has_lora, save_adapter

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
    return directory


def weights_metadata(lora: bool) -> dict[str, str]:
    """The header metadata of ``livecue_model.safetensors``: whether a LoRA adapter belongs beside it (a checkpoint
    whose adapter files went missing is refused instead of loading without them)."""
    return {"format": "livecue", "adapter": "yes" if lora else "no"}


def checkpoint_state(model: LiveModel, *, lora: bool) -> dict[str, torch.Tensor]:
    """What ``livecue_model.safetensors`` holds for ``model`` (with a LoRA adapter beside it or not): the connector,
    the LM when it is random or trained without LoRA, the vision tower when it is random. :func:`save_checkpoint`
    writes it; :func:`load_model` expects exactly these names and shapes."""
    state = {f"connector.{k}": v for k, v in model.connector.state_dict().items()}
    if model.cfg.lm.name_or_path is None or not lora:
        for k, v in model.lm.state_dict().items():
            if "lora_" not in k:
                state[f"lm.{k.replace('.base_layer.', '.')}"] = v
    if model.cfg.vision.name_or_path is None and model.vision is not None:
        state.update({f"vision.tower.{k}": v for k, v in model.vision.tower.state_dict().items()})
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


DEFAULT_ALIAS = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"  # livecue's own (issue 7)


def load_model(source: str | Path, *, device: str | torch.device | None = None, dtype: str | None = None,
               overrides: list[str] | None = None, merge_lora: bool = True, base: str | None = None,
               vision: str | None = None) -> tuple[LiveModel, Any]:
    """Load ``(LiveModel, tokenizer)`` from a checkpoint directory, a preset name, a config file, a hub id, the
    packaged default model (``default``), or the paper's released adapter (alias ``videollm-online-8b-v1plus`` or a
    directory in its layout).

    A checkpoint's LoRA adapter is merged into the base weights unless ``merge_lora=False`` (for training on).
    ``base`` / ``vision`` replace the base LM / vision tower of an upstream adapter (local copies of gated weights).
    """
    from . import upstream

    if str(source) == DEFAULT_ALIAS and not Path(source).exists():
        source = DEFAULT_MODEL_DIR
    if str(source) in upstream.ALIASES or upstream.is_upstream_dir(source):
        return upstream.load_upstream(str(source), base=base, vision=vision, device=device, dtype=dtype,
                                      merge=merge_lora)
    path = Path(source)
    if path.is_dir() and (path / CONFIG_FILE).exists():
        return _load_checkpoint(path, device=device, dtype=dtype, overrides=overrides, merge_lora=merge_lora)
    if path.is_dir():
        raise FileNotFoundError(f"{str(path)!r} is not a livecue checkpoint: it has no {CONFIG_FILE}")
    if _is_preset(str(source)):
        return build_model(preset(str(source), overrides), device=device, dtype=dtype)
    if path.is_file():
        cfg = LiveConfig.load(path)
        return build_model(cfg.with_overrides(overrides) if overrides else cfg, device=device, dtype=dtype)
    if _looks_like_hub_id(str(source)):
        return load_model(_download(str(source)), device=device, dtype=dtype, overrides=overrides,
                          merge_lora=merge_lora, base=base, vision=vision)
    raise ValueError(f"unknown model {str(source)!r}: not a checkpoint directory, a config file, a preset "
                     f"({', '.join(list_presets())}), {DEFAULT_ALIAS} or {', '.join(upstream.ALIASES)}")


def load_frame_encoder(source: str | Path, *, device: str | torch.device | None = None, dtype: str = "float32",
                       overrides: list[str] | None = None):
    """Only the vision side of a model (for feature caching): ``(FrameEncoder, LiveConfig)``, with dotted config
    ``overrides`` applied (e.g. ``["vision.frame_token_pooled=2"]``).

    Pretrained towers load from their own source; a randomly initialised tower takes its weights from the
    checkpoint's ``livecue_model.safetensors`` (or the preset's seed-0 initialisation).
    """
    if str(source) == DEFAULT_ALIAS and not Path(source).exists():
        source = DEFAULT_MODEL_DIR
    path = Path(source)
    if path.exists():
        cfg = LiveConfig.load(path)
    else:  # a preset, spelt as load_model accepts it (``live1+``, ``live1-plus``)
        cfg = preset(str(source)) if _is_preset(str(source)) else LiveConfig.load(str(source))
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


def _is_preset(name: str) -> bool:
    return name in list_presets() or name.replace("-", "_").replace("+", "_plus") in list_presets()


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _download(repo_id: str) -> str:
    """A local snapshot of a hub repository holding a livecue checkpoint (uses the local cache when offline)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id)
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear line
        raise hub_error("model", repo_id, e) from None


def check_checkpoint_files(directory: str | Path, *, full: bool = True) -> LiveConfig:
    """Check a livecue checkpoint directory's files without building its model; returns its config.

    ``livecue_config.json`` valid, ``livecue_model.safetensors`` present and readable, the LoRA adapter's files
    complete (and present when the weights were saved with one), the weights' sizes and sha256 equal to those a
    ``livecue_manifest.json`` records (when there is one), the tokenizer files there. With ``full`` every
    tensor is also read and checked finite (what a resume must trust). Names and shapes against the config are
    checked when the model is built (:func:`load_model`). Raises one-line ``ValueError`` / ``FileNotFoundError``.
    """
    from .lora import ADAPTER_CONFIG, ADAPTER_FILE, read_adapter_config

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
                     overrides: list[str] | None, merge_lora: bool) -> tuple[LiveModel, Any]:
    """A livecue checkpoint directory, every file checked before its contents are used (cheap checks first)."""
    from .lora import ADAPTER_FILE, load_adapter
    from .lora import merge_lora as merge

    cfg = check_checkpoint_files(path, full=False)
    cfg = cfg.with_overrides(overrides) if overrides else cfg
    tokenizer = load_tokenizer(path, saved=True)
    model, tokenizer = build_model(cfg, device=device, dtype=dtype, tokenizer=tokenizer)
    adapter = (path / ADAPTER_FILE).is_file()
    _load_weights(model, path / WEIGHTS_FILE, lora=adapter)
    if adapter:
        load_adapter(model, path)
        if merge_lora:
            merge(model)
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
        if own:
            module.load_state_dict(own, strict=True)

"""Where a VLM base comes from: its tokenizer, its Hugging Face config and weights, and what livecue derives from them.

* :func:`load_vlm_tokenizer`: the VLM's own tokenizer (a hub id or a directory), or the packaged tiny one with the
  family's tokens (``vlm.tokenizer: tiny``).
* :func:`family_config`: the family's adapter and the Hugging Face config (read from the model's directory, or built
  from ``vlm.random_init`` with the tokenizer's ids).
* :func:`derive`: the config with what the model fixes filled in: ``stream.v_placeholder`` (and the frame's prefix,
  suffix and chat format), ``vlm.frame_tokens``, ``vlm.family`` (and ``vlm.frame_resolution``, when it is left at its
  default and the family has its own image size). A value set by hand must agree.
* :func:`build_vlm_parts`: the VLM built (random) or loaded (pretrained, strictly) and split into the frame encoder,
  the text LM and the position scheme.
* :func:`is_vlm_dir`, :func:`dir_config`: a Hugging Face VLM directory (``--model DIR``) and the config livecue makes
  for it.

transformers is imported inside the functions (importing it costs seconds).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ...config import CONFIG_FILE, LiveConfig, StreamConfig, VLMConfig
from ...pretrained import hub_error, local_dir
from .. import lm as lm_api
from .. import verify
from ..tokenizer import load_tokenizer
from ..vision import preprocessor_mean_std
from .base import FAMILIES, FrameLayout, TextLM, VLMAdapter, VLMFrameEncoder, adapter_for

WHAT = "vision-language model"


def source_dir(cfg: VLMConfig) -> Path:
    """The local directory of a pretrained VLM (a hub id is downloaded, or found in the hub cache)."""
    return local_dir(str(cfg.name_or_path), WHAT)


def family_name(cfg: VLMConfig) -> str:
    """``vlm.family``, else the model_type of ``random_init`` or of the pretrained model's ``config.json``."""
    if cfg.family:
        return cfg.family
    if cfg.name_or_path is None:
        return str((cfg.random_init or {}).get("model_type"))
    config = verify.read_json(verify.require_file(source_dir(cfg) / "config.json", f"a {WHAT} directory holds its "
                                                                                   "Hugging Face config there"))
    return str(config.get("model_type"))


def load_vlm_tokenizer(cfg: VLMConfig) -> Any:
    """The VLM's tokenizer: ``vlm.tokenizer`` (``tiny``: the family's tiny tokenizer), else the model's own."""
    if cfg.tokenizer == "tiny":
        return adapter_for(family_name(cfg)).tiny_tokenizer()
    return load_tokenizer(cfg.tokenizer or source_dir(cfg))


def family_config(cfg: VLMConfig, tokenizer: Any) -> tuple[VLMAdapter, Any]:
    """The family's adapter and the model's Hugging Face config."""
    adapter = adapter_for(family_name(cfg))
    if cfg.name_or_path is None:
        hf_config = adapter.random_config(cfg.random_init or {}, tokenizer)
    else:
        from transformers import AutoConfig  # see the module docstring

        path = source_dir(cfg)
        try:
            hf_config = AutoConfig.from_pretrained(str(path))
        except Exception as e:  # noqa: BLE001 - JSON/unknown-architecture errors become one line naming the source
            raise hub_error(f"{WHAT} config", str(path), e) from None
    return adapter, hf_config


def derive(cfg: LiveConfig, tokenizer: Any, adapter: VLMAdapter, hf_config: Any) -> LiveConfig:
    """``cfg`` with the values the model fixes filled in (``stream.*`` strings, ``vlm.frame_tokens``, ``vlm.family``;
    ``vlm.frame_resolution`` 0 becomes the family's own frame size).

    A field still at its default is filled; one set to another value than the model's is refused (ValueError naming
    it), so a saved config always describes its model.
    """
    defaults = StreamConfig()
    if not cfg.vlm.frame_resolution:  # 0: the family's own frame size
        cfg = cfg.with_overrides({"vlm.frame_resolution": adapter.default_resolution(hf_config)})
    stream = adapter.stream_fields(tokenizer, hf_config)
    layout = frame_layout(cfg.vlm, adapter, hf_config)
    updates: dict[str, Any] = {"vlm.family": adapter.name, "vlm.frame_tokens": layout.num_tokens}
    for key, value in stream.items():
        current = getattr(cfg.stream, key)
        if current not in (getattr(defaults, key), value):
            raise ValueError(f"stream.{key} is {current!r} but the {adapter.name} model's is {value!r}: leave it "
                             "unset (the model fills it)")
        updates[f"stream.{key}"] = value
    given = {"vlm.family": cfg.vlm.family, "vlm.frame_tokens": cfg.vlm.frame_tokens}
    for key, value in given.items():
        if value and value != updates[key]:
            raise ValueError(f"{key} is {value!r} but the model's is {updates[key]!r} (it is derived: set it to "
                             f"{'null' if key == 'vlm.family' else 0} to derive it again)")
    return cfg.with_overrides(updates)


def frame_layout(cfg: VLMConfig, adapter: VLMAdapter, hf_config: Any) -> FrameLayout:
    """One frame's token grid at ``vlm.frame_resolution``, pooled to ``vlm.frame_pooled``."""
    return FrameLayout(adapter.frame_grid(hf_config, cfg.frame_resolution), cfg.frame_pooled)


@dataclasses.dataclass
class VLMBuild:
    """A VLM as LiveModel composes it."""

    encoder: VLMFrameEncoder
    lm: TextLM
    positions: Any  # the position scheme (LiveModel.positions), or None


def build_vlm_parts(cfg: LiveConfig, adapter: VLMAdapter, hf_config: Any, v: int, dtype: torch.dtype) -> VLMBuild:
    """Build (``random_init``, from the current RNG) or load (pretrained, strictly: no weight left random) the VLM
    and split it into LiveModel's parts."""
    vlm = cfg.vlm
    if vlm.name_or_path is None:
        hf_config._attn_implementation = vlm.attn_implementation
        model = adapter.model_class().from_config(hf_config, dtype=dtype)
        adapter.init_random(model)
        mean, std = adapter.mean, adapter.std
    else:
        path = source_dir(vlm)
        model = verify.from_pretrained(adapter.model_class(), str(path), WHAT, dtype=dtype,
                                       attn_implementation=vlm.attn_implementation)
        mean, std = preprocessor_mean_std(str(path))
        mean, std = mean or adapter.mean, std or adapter.std
    parts = adapter.parts(model)
    levels = adapter.deepstack_levels(hf_config)
    lm = TextLM(parts.language_model, parts.lm_head, frame_masks=adapter.frame_masks(), deepstack_levels=levels)
    layout = frame_layout(vlm, adapter, hf_config)
    width = lm_api.hidden_size(lm) * (1 + levels)  # the tokens, then their DeepStack levels
    encoder = VLMFrameEncoder(adapter, parts.vision, parts.projector, vlm, layout, width, mean, std)
    return VLMBuild(encoder, lm, adapter.positions(v, layout.shape))


def is_vlm_dir(path: str | Path) -> bool:
    """A Hugging Face VLM directory of a family livecue drives (``config.json`` with such a ``model_type``) that is
    not a livecue checkpoint."""
    path = Path(path)
    if not (path / "config.json").is_file() or (path / CONFIG_FILE).exists():
        return False
    try:
        return verify.read_json(path / "config.json").get("model_type") in FAMILIES
    except ValueError:
        return False


def dir_config(path: str | Path, overrides: list[str] | None = None) -> LiveConfig:
    """The config of a pretrained VLM (a directory or a hub id) used as it is: ``architecture: vlm`` with the
    defaults of every other section, then ``overrides`` (its derived fields are filled when the model is built)."""
    cfg = LiveConfig(name=Path(path).name, architecture="vlm", vlm=VLMConfig(name_or_path=str(path)))
    return cfg.with_overrides(overrides) if overrides else cfg

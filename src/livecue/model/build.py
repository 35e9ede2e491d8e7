"""Build a LiveModel and its tokenizer from a config: the parts it names, pretrained or randomly initialised.

``build_model(cfg)`` assembles the parts a config names: pretrained (hub id, local directory or a livecue alias such
as ``smollm2-135m-instruct``, :mod:`livecue.pretrained`) or randomly initialised (``random_init``, e.g. the ``tiny``
preset). Loading a saved model (a checkpoint directory, a preset name, a config file) is :mod:`livecue.model.load`.

transformers is imported inside the functions that build from it: importing it costs seconds, and the rest of
livecue (configs, data, the CLI's help) must not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import LiveConfig
from ..data.labels import Markers, add_frame_placeholder
from ..pretrained import hub_error, resolve
from . import verify
from .live import LiveModel
from .tiny_tokenizer import load_tiny_tokenizer
from .vision import build_frame_encoder

DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_tokenizer(cfg: LiveConfig) -> Any:
    """The LM's tokenizer with ``<v>`` added (packaged tiny tokenizer for ``lm.tokenizer: tiny``)."""
    source = cfg.lm.tokenizer or cfg.lm.name_or_path
    return prepare_tokenizer(load_tiny_tokenizer() if source == "tiny" else load_tokenizer(resolve(source)), cfg)


def prepare_tokenizer(tokenizer: Any, cfg: LiveConfig) -> Any:
    """Make an LM's tokenizer the model's: ``cfg.stream.v_placeholder`` added, eos as the pad token when it has
    none. Returns the same tokenizer."""
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
    from transformers import AutoTokenizer  # only here: see the module docstring

    if saved:
        verify.check_tokenizer_dir(Path(source))
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as e:  # noqa: BLE001 - tokenizers/JSON/sentencepiece errors become one line naming the source
        raise hub_error("tokenizer", str(source), e) from None


def build_lm(cfg: LiveConfig, tokenizer: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The causal LM: pretrained, or random with ``vocab_size`` = the tokenizer's vocabulary before ``<v>``."""
    import transformers  # only here: see the module docstring

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
    return verify.from_pretrained(transformers.AutoModelForCausalLM, resolve(cfg.lm.name_or_path),
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

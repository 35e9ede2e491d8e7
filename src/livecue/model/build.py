"""Build a LiveModel and its tokenizer from a config: the parts it names, pretrained or randomly initialised.

``build_model(cfg)`` assembles the parts a config names: pretrained (hub id, local directory or a livecue alias such
as ``smollm2-135m-instruct``, :mod:`livecue.pretrained`) or randomly initialised (``random_init``, e.g. the ``tiny``
preset). Loading a saved model (a checkpoint directory, a preset name, a config file) is :mod:`livecue.model.load`.

A model with randomly initialised parts is for tests and benchmarks: ``build_model`` says so with one ``logging``
warning (logger ``livecue.model.build``) naming them (:func:`random_parts`), unless the caller loads their weights
next (``warn_random=False``: a checkpoint). The commands turn that warning into one line of their own
(:func:`livecue.commands._common.announce_random`).

transformers is imported inside the functions that build from it: importing it costs seconds, and the rest of
livecue (configs, data, the CLI's help) must not pay for it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..config import LiveConfig
from ..data.labels import Markers
from ..data.template import Template
from ..pretrained import resolve
from . import verify, vlm
from .live import LiveModel
from .tiny_tokenizer import load_tiny_tokenizer
from .tokenizer import load_tokenizer, prepare_tokenizer
from .vision import build_frame_encoder

DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: every part of a composed model / of a VLM base, as :func:`random_parts` names them
COMPOSED_PARTS, VLM_PARTS = ("vision", "connector", "lm"), ("vlm",)
#: the ``extra`` key of build_model's random-weights warning: the list of random parts (for the commands)
RANDOM_PARTS_KEY = "livecue_random_parts"

log = logging.getLogger(__name__)


def random_parts(cfg: LiveConfig) -> list[str]:
    """The parts :func:`build_model` initialises randomly for ``cfg``: those with no pretrained source.

    A composed model's connector is always random when built (a checkpoint stores it); its vision tower and LM are
    random when their ``name_or_path`` is null (``random_init``, e.g. the ``tiny`` preset). A VLM base (``vlm``) is
    random when ``vlm.name_or_path`` is null (the ``tiny_<family>`` presets). ``[]``: every part is pretrained.

    Returns:
        Names from :data:`COMPOSED_PARTS` / :data:`VLM_PARTS`, in that order, e.g. ``["vision", "connector", "lm"]``
        for ``tiny``, ``["connector"]`` for ``live1_plus``.
    """
    if cfg.is_vlm:
        return [] if cfg.vlm.name_or_path is not None else ["vlm"]
    random = {"vision": cfg.vision.name_or_path is None, "connector": True, "lm": cfg.lm.name_or_path is None}
    return [part for part in COMPOSED_PARTS if random[part]]


def describe_random(parts: list[str]) -> str:
    """``random weights`` for a wholly random model, ``random weights (connector)`` when only some parts are."""
    whole = set(parts) in (set(COMPOSED_PARTS), set(VLM_PARTS))
    return "random weights" if whole else f"random weights ({', '.join(parts)})"


def build_tokenizer(cfg: LiveConfig) -> Any:
    """The model's tokenizer with its placeholder (packaged tiny tokenizer for ``lm.tokenizer: tiny``; a VLM's own,
    its config resolved first: :func:`resolve_config`)."""
    if cfg.is_vlm:
        tokenizer = vlm.load_vlm_tokenizer(cfg.vlm)
        return prepare_tokenizer(tokenizer, resolve_config(cfg, tokenizer))
    source = cfg.lm.tokenizer or cfg.lm.name_or_path
    return prepare_tokenizer(load_tiny_tokenizer() if source == "tiny" else load_tokenizer(resolve(source)), cfg)


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


def model_markers(cfg: LiveConfig, tokenizer: Any) -> Markers:
    """The marker ids of the model's template (its chat format and frame layout) in ``tokenizer``."""
    return Markers.from_template(tokenizer, Template.from_config(cfg, tokenizer))


def resolve_config(cfg: LiveConfig, tokenizer: Any = None) -> LiveConfig:
    """``cfg`` with every value its model fixes filled in: for a VLM base, the placeholder, frame prefix/suffix and
    chat format of its family (read from the tokenizer and the model's config) and the tokens per frame
    (:func:`livecue.model.vlm.derive`). A composed model's config is returned as it is. Build datasets and templates
    from the resolved config (``build_model`` resolves it too: ``model.cfg``)."""
    if not cfg.is_vlm:
        return cfg
    tokenizer = tokenizer if tokenizer is not None else vlm.load_vlm_tokenizer(cfg.vlm)
    return vlm.derive(cfg, tokenizer, *vlm.family_config(cfg.vlm, tokenizer))


def build_model(cfg: LiveConfig, *, device: str | torch.device | None = None, dtype: str | None = None,
                seed: int | None = 0, tokenizer: Any = None, warn_random: bool = True) -> tuple[LiveModel, Any]:
    """Assemble ``(LiveModel, tokenizer)`` from a config.

    Parts without a pretrained source are randomly initialised (:func:`random_parts`); one ``logging`` warning says
    so, e.g. ``tiny: random weights, for tests and benchmarks (load_model("default") is the trained default
    model)``, unless ``warn_random`` is False.

    Args:
        cfg: the model config (a VLM's is resolved first: :func:`resolve_config`; ``model.cfg`` is the result).
        device: where to put the model (default CPU).
        dtype: override ``cfg.lm.dtype`` (a VLM's ``cfg.vlm.dtype``): ``float32``, ``bfloat16``, ``float16``.
        seed: seed for randomly initialised parts (reproducible random models); ``None`` leaves the RNG alone.
        tokenizer: reuse an already built tokenizer.
        warn_random: warn when parts are random; False when the caller loads their weights next (a checkpoint).
    """
    dtype_name = dtype or (cfg.vlm.dtype if cfg.is_vlm else cfg.lm.dtype)
    if dtype_name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype_name!r}")
    torch_dtype = DTYPE_NAMES[dtype_name]
    if cfg.is_vlm:
        model, tokenizer = _build_vlm_model(cfg, torch_dtype, seed, tokenizer)
    else:
        tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)
        markers = model_markers(cfg, tokenizer)
        with torch.random.fork_rng(devices=[]):  # each random part has its own seed: seed, seed + 1, seed + 2
            if seed is not None:
                torch.manual_seed(seed)
            vision = build_frame_encoder(cfg.vision, dtype=torch_dtype)
            if seed is not None:
                torch.manual_seed(seed + 1)
            lm = build_lm(cfg, tokenizer, torch_dtype)
            if seed is not None:
                torch.manual_seed(seed + 2)
            model = LiveModel(vision, lm, cfg, markers.v, frame_end_id=markers.frame_end)
    model.to(device or "cpu")
    model.eval()
    if warn_random and (parts := random_parts(cfg)):
        log.warning("%s: %s, for tests and benchmarks (load_model(%r) is the trained default model)", cfg.name,
                    describe_random(parts), "default", extra={RANDOM_PARTS_KEY: parts})
    return model, tokenizer


def _build_vlm_model(cfg: LiveConfig, dtype: torch.dtype, seed: int | None,
                     tokenizer: Any) -> tuple[LiveModel, Any]:
    """A VLM base: its config resolved, the VLM built (random, from ``seed``) or loaded, composed with an identity
    connector and the family's positions."""
    tokenizer = tokenizer if tokenizer is not None else vlm.load_vlm_tokenizer(cfg.vlm)
    adapter, hf_config = vlm.family_config(cfg.vlm, tokenizer)
    cfg = vlm.derive(cfg, tokenizer, adapter, hf_config)
    prepare_tokenizer(tokenizer, cfg)
    markers = model_markers(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        parts = vlm.build_vlm_parts(cfg, adapter, hf_config, markers.v, dtype)
    model = LiveModel(parts.encoder, parts.lm, cfg, markers.v, frame_end_id=markers.frame_end,
                      connector=torch.nn.Identity(), positions=parts.positions)
    return model, tokenizer

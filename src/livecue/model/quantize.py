"""Weight-only quantization of a loaded model's language model with torchao (the optional ``quant`` extra).

Schemes (:data:`SCHEMES`), applied in place by :func:`quantize_model` after loading (and after the LoRA merge):

- ``int8``: per-channel symmetric int8 weights (``Int8WeightOnlyConfig``), activations stay in the model's dtype;
  CPU and GPU.
- ``int4``: 4-bit weights in groups of :data:`INT4_GROUP` input channels. On CPU torchao 0.18 has no packed int4
  kernel without its ``mslk`` package, so livecue uses ``IntxWeightOnlyConfig(weight_dtype=torch.int4)``: int4
  values and per-group scales, stored one per byte (the accuracy of int4, the memory of int8). On a CUDA GPU it is
  ``Int4WeightOnlyConfig`` (tinygemm tile-packed layout, bfloat16 models only).
- ``fp8``: float8 (e4m3) weights (``Float8WeightOnlyConfig``), only on a CUDA GPU of compute capability ≥ 8.9
  (Ada, Hopper and later); anywhere else one line says so.

What is quantized: the ``nn.Linear`` layers of the LM (attention and MLP projections). ``lm_head`` is kept at full
precision by default: the speak/silence decision is a comparison of one softmax probability with θ, read off
lm_head's output, and the benchmark (benchmarks/results/quantize_cpu.md) measures what quantizing it costs. The
vision tower is left alone unless ``vision=True`` (it runs once per frame, off the per-token path).

Quantizing shifts p(silence) a little, so the speak rate at the model's θ moves: ``livecue quantize`` re-calibrates
θ on a few streams (:func:`livecue.eval.calibrate.match_speak_rate`) and stores ``quantize.scheme`` and
``quantize.threshold`` in the checkpoint's config, which :func:`livecue.model.load.load_model` applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

SCHEMES = ("int8", "int4", "fp8")
INSTALL_HINT = "pip install 'livecue[quant]'"
INT4_GROUP = 32          # input channels per int4 scale (a layer whose width it does not divide stays unquantized)
FP8_CAPABILITY = (8, 9)  # the first CUDA compute capability with float8 matmuls (Ada)

__all__ = ["SCHEMES", "quantize_model", "apply_config", "check_scheme", "quantized_layers"]
log = logging.getLogger(__name__)


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`SCHEMES` (ValueError in one line otherwise)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {scheme!r}: choose one of {', '.join(SCHEMES)}")
    return scheme


class _BenignImportLines(logging.Filter):
    """Drops the lines torchao 0.18 logs when it is first imported on a machine without the GPUs its optional
    kernels are for (none of which the schemes here use): ``Failed to load .../_C_cutlass_90a.abi3.so`` (Hopper
    CUTLASS kernels) and ``.../_C_mxfp8...so`` (Blackwell MX-fp8 kernels), ``Detected no triton`` (triton int8
    matmuls for dynamic-activation schemes on GPU), and torch's pytree note that ``register_constant`` on an Enum is
    deprecated. (transformers / peft may import torchao before livecue does: the CLI filters the same lines,
    livecue.cli.BENIGN_LOGS.)"""

    PATTERNS = (re.compile(r"Failed to load \S*/torchao/_C_(cutlass_90a\.abi3|mxfp8\.\S*)\.so"),
                re.compile(r"Warning: Detected no triton"),
                re.compile(r"<enum '[^']*'> is an Enum subclass and is now natively supported by torch\.compile"))

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not any(p.match(text) for p in self.PATTERNS)


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("torchao", "torchao.kernel.intmm", "torch.utils._pytree")]
    quiet = _BenignImportLines()
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _torchao() -> Any:
    """The ``torchao.quantization`` module (ImportError with the install line when torchao is missing)."""
    try:
        with _quiet_import():
            import torchao.quantization as quantization
    except ImportError:
        raise ImportError(f"quantization needs torchao: {INSTALL_HINT}") from None
    return quantization


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _check_device(scheme: str, device: torch.device, dtype: torch.dtype) -> None:
    """One line (ValueError) when ``scheme`` cannot run on ``device``."""
    if scheme == "fp8":
        if device.type != "cuda":
            raise ValueError(f"--quantize fp8 needs a CUDA GPU with float8 support (compute capability ≥ "
                             f"{FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]}); the model is on {device}: use int8 or int4")
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            raise ValueError(f"--quantize fp8 needs compute capability ≥ {FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]}; "
                             f"{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}: use int8 "
                             f"or int4")
    if scheme == "int4" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"--quantize int4 runs on cpu or a CUDA GPU, not {device.type}: use int8")
    if scheme == "int4" and device.type == "cuda" and dtype != torch.bfloat16:
        raise ValueError(f"--quantize int4 on a GPU needs a bfloat16 model (torchao's int4 kernel), got {dtype}: "
                         f"add --dtype bfloat16")


def _config(scheme: str, device: torch.device, quantization: Any) -> Any:
    if scheme == "int8":
        return quantization.Int8WeightOnlyConfig()
    if scheme == "fp8":
        return quantization.Float8WeightOnlyConfig()
    if device.type == "cuda":
        return quantization.Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    from torchao.quantization.granularity import PerGroup

    return quantization.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP))


def _filter(scheme: str, device: torch.device, *, lm_head: bool) -> Callable[[nn.Module, str], bool]:
    """The linear layers to quantize: not ``lm_head`` unless asked; for int4, those whose input width is a whole
    number of groups."""
    group = (128 if device.type == "cuda" else INT4_GROUP) if scheme == "int4" else 1

    def wanted(module: nn.Module, name: str) -> bool:
        if not isinstance(module, nn.Linear) or module.in_features % group:
            return False
        return lm_head or name.split(".")[-1] != "lm_head"

    return wanted


def quantize_model(model: Any, scheme: str, *, lm_head: bool = False, vision: bool = False) -> None:
    """Quantize ``model`` (a :class:`~livecue.model.live.LiveModel`) in place: its LM's linear layers (``lm_head``
    too with ``lm_head=True``; the vision tower's with ``vision=True``). Run it after loading and the LoRA merge.

    Raises:
        ValueError: an unknown scheme, or one the model's device lacks (fp8 off a float8 GPU; int4 on mps).
        ImportError: torchao is not installed (the line names ``pip install 'livecue[quant]'``).
    """
    check_scheme(scheme)
    lm = model.lm
    weight = next(lm.parameters())
    _check_device(scheme, weight.device, weight.dtype)
    quantization = _torchao()
    config = _config(scheme, weight.device, quantization)
    with torch.no_grad():
        quantization.quantize_(lm, config, filter_fn=_filter(scheme, weight.device, lm_head=lm_head))
        if vision and getattr(model, "vision", None) is not None:
            quantization.quantize_(model.vision, config, filter_fn=_filter(scheme, weight.device, lm_head=True))


def quantized_layers(module: nn.Module) -> list[str]:
    """Names of the linear layers of ``module`` whose weight is a torchao quantized tensor."""
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and type(m.weight).__module__.startswith("torchao")]


def apply_config(model: Any, scheme: str, *, source: str = "the model") -> None:
    """Quantize a freshly loaded ``model`` with ``scheme`` and set its θ: the config's ``quantize.threshold`` when
    it was re-calibrated for this scheme, else ``stream.threshold`` with one warning naming the command that
    re-calibrates. ``model.cfg.quantize`` then says what was applied."""
    quantize_model(model, scheme)
    saved = model.cfg.quantize
    recalibrated = saved.scheme == scheme and saved.threshold is not None
    if recalibrated:
        model.cfg.stream.threshold = saved.threshold
    else:
        log.warning("%s quantized to %s: θ=%.3f was calibrated at full precision; re-calibrate it with "
                    "`livecue quantize --model %s --scheme %s --calibration DATA.jsonl --out DIR`", source, scheme,
                    model.cfg.stream.threshold, source, scheme)
    model.cfg.quantize = dataclasses.replace(saved, scheme=scheme, threshold=saved.threshold if recalibrated else None)

"""Which torch device to run on: ``auto`` (CUDA, else Apple MPS, else CPU) or a named one, checked to exist.

:func:`resolve_device` is the one place livecue asks torch which accelerators this machine has; the commands call it
before they load a model, so ``--device cuda`` on a machine without CUDA costs one line, not a model load::

    resolve_device("auto")   # cuda:0 on a GPU machine, mps on a Mac, else cpu
    resolve_device("cuda")   # on a CPU-only torch: ValueError("device cuda: CUDA is not available on this
                             # machine (torch 2.13.0+cpu); use device cpu or auto")
"""

from __future__ import annotations

import torch

AUTO = "auto"
#: what ``auto`` tries, in order (the first one available wins; cpu always is)
AUTO_ORDER = ("cuda", "mps", "cpu")
_NAMES = {"cuda": "CUDA", "mps": "MPS (Apple Metal)", "xpu": "XPU (Intel GPU)"}


def available(kind: str) -> bool:
    """Whether this machine (and this build of torch) has a device of type ``kind`` (``cuda``, ``mps``, ...)."""
    if kind == "cpu":
        return True
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    backend = getattr(torch, kind, None)
    return bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())


def _count(kind: str) -> int:
    backend = getattr(torch, kind, None)
    return int(backend.device_count()) if backend is not None and hasattr(backend, "device_count") else 1


def resolve_device(name: str | torch.device | None = AUTO, *, option: str = "device") -> torch.device:
    """The torch device ``name`` stands for, checked to exist on this machine.

    Args:
        name: ``auto`` (or None): the first of cuda, mps, cpu that is available; otherwise a torch device string
            (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or a ``torch.device``.
        option: how the messages name the value (the commands pass ``--device``).

    Returns:
        The device (``cuda`` resolved to ``cuda:0``: the one torch uses for it).

    Raises:
        ValueError: one line: ``name`` is not a device string, or that device is not available here, e.g.
            ``--device cuda: CUDA is not available on this machine (torch 2.13.0+cpu); use --device cpu or auto``.
    """
    if name is None or (isinstance(name, str) and name.strip() == AUTO):
        kind = next(k for k in AUTO_ORDER if available(k))
        return torch.device(f"{kind}:0" if kind == "cuda" else kind)
    try:
        device = name if isinstance(name, torch.device) else torch.device(name.strip())
    except (RuntimeError, ValueError, TypeError, AttributeError):
        raise ValueError(f"{option} {name!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
    hint = f"use {option} cpu or auto"
    what = _NAMES.get(device.type, device.type)
    if not available(device.type):
        raise ValueError(f"{option} {name}: {what} is not available on this machine (torch {torch.__version__}); "
                         f"{hint}")
    if device.type == "cuda" or (device.index is not None and device.type != "cpu"):
        count = _count(device.type)
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ValueError(f"{option} {name}: this machine has {count} {what} device(s) "
                             f"({device.type}:0{f' to {device.type}:{count - 1}' if count > 1 else ''}); {hint}")
        return torch.device(device.type, index)
    return device


def compile_mode(device: torch.device) -> str:
    """The ``torch.compile`` mode of a static-shape step on ``device``: ``reduce-overhead`` (CUDA graphs: one
    launch per step) where torch has them, else ``default``."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"


__all__ = ["AUTO", "AUTO_ORDER", "available", "compile_mode", "resolve_device"]

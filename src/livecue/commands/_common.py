"""Shared command-line helpers: checked option values, model selection and dotted config overrides.

The stream options (θ, fps, system prompt, reply cap, sampling, memory) are declared once, in
:data:`livecue.inference.options.OPTIONS`: commands add them with ``StreamOptions.add_arguments``.

Every numeric option of a command takes one of the ``type=`` checkers of :mod:`livecue.argtypes` (re-exported
here), so argparse refuses a bad value with one line naming the option and the allowed range, e.g.
``livecue watch: error: argument --fps: must be a finite number in (0, 240], got 'nan'`` (exit 2).

Every model-taking command adds ``--model`` / ``--device`` with :func:`add_model_argument`: the model defaults to
the packaged default model (``default``), the device to ``auto`` (cuda, else mps, else cpu). :func:`check_model_args`
refuses a missing device or a ``--model`` path that does not exist in one line before anything loads;
:func:`load_from_args` loads the model, and a model with random weights announces itself in one line on stderr
(:func:`announce_random`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from ..argtypes import (  # noqa: F401 - re-exported for the commands
    FPS,
    MAX_FPS,
    MAX_INT,
    MAX_SECONDS,
    SEED,
    STREAM_TIME,
    Number,
    Text,
    finite_float,
    int_range,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    text,
)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``--a.b=c`` config overrides from the other arguments."""
    rest, overrides = [], []
    for arg in argv:
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "=" in arg and "." in key:
            overrides.append(arg[2:])
        else:
            rest.append(arg)
    return rest, overrides


DEFAULT_MODEL = "default"  # the packaged default model: livecue.model.load.DEFAULT_ALIAS (a test keeps them equal)
QUANTIZE_CHOICES = ("none", "int8", "int4", "fp8")  # livecue.config.QUANTIZE_SCHEMES (a test keeps them equal)
DEFAULT_DEVICE = "auto"  # livecue.model.devices.AUTO: cuda, else mps, else cpu
RANDOM_HINT = f"for tests and benchmarks (pass --model {DEFAULT_MODEL} for the trained default model)"


def add_model_argument(parser: argparse.ArgumentParser, default: str = DEFAULT_MODEL) -> None:
    """``--model`` (default: the packaged default model), ``--adapter``/``--base``/``--vision``, ``--dtype``,
    ``--quantize`` and ``--device`` (default ``auto``); :func:`load_from_args` loads what they name."""
    parser.add_argument("--model", default=default,
                        help="a checkpoint directory, a config file (.yaml/.json), a preset (live1, live1_plus, "
                             "tiny: random weights, for tests), a hub id, or the paper's model "
                             "(videollm-online-8b-v1plus or a directory in its adapter layout); default: "
                             "%(default)s (the packaged default model)")
    parser.add_argument("--adapter", default=None,
                        help="an upstream VideoLLM-online adapter (hub id or directory); replaces --model")
    parser.add_argument("--base", default=None, help="the base LM of an upstream adapter (hub id or local copy)")
    parser.add_argument("--vision", default=None, help="the vision tower of an upstream adapter (hub id or dir)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="override the LM dtype")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                        help="weight-only quantization of the LM at load (torchao: pip install 'livecue[quant]'): "
                             "int8, int4, fp8 (a float8 GPU only), none (full precision); default: the "
                             "checkpoint's quantize.scheme (docs/quantization.md)")
    parser.add_argument("--device", default=DEFAULT_DEVICE,
                        help="torch device: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps "
                             "(default: %(default)s)")
    parser.set_defaults(command=parser.prog)  # names the command in load_from_args' lines


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``livecue watch: error: argument --fps: ... (see livecue watch --help)``
    instead of the usage block followed by the error (exit status 2, as argparse)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    kwargs.setdefault("epilog", "Config overrides: --section.key=value (e.g. --stream.threshold=0.8).")
    return ArgumentParser(prog=f"livecue {prog}", description=description, **kwargs)


def check_model_source(source: str, option: str = "--model",
                       what: str = "checkpoint directory or config file") -> None:
    """Refuse a model source that names a local path which does not exist (``./runs/fnal``, ``x.yaml``), in one
    line, before any model code is imported. Preset names, aliases and hub ids (``org/name``) pass: loading them
    says what is wrong."""
    if source == DEFAULT_MODEL or Path(source).expanduser().exists():
        return
    if source.startswith((".", "/", "~")) or source.endswith(("/", "\\", ".yaml", ".yml", ".json")) or \
            source.count("/") > 1:
        raise FileNotFoundError(f"{option} {source!r}: no such {what}")


def check_device(name: str | None, option: str = "--device") -> str:
    """``name`` resolved (``auto`` -> ``cuda:0`` / ``mps`` / ``cpu``) and checked to exist on this machine, as a
    string; one line (ValueError) when it does not: ``--device cuda: CUDA is not available on this machine (torch
    2.13.0+cpu); use --device cpu or auto``. Imports torch."""
    from ..model.devices import resolve_device

    return str(resolve_device(name, option=option))


def check_model_args(args: argparse.Namespace) -> None:
    """The cheap checks of :func:`add_model_argument`'s options, before any model loads: ``--model`` /
    ``--adapter`` / ``--base`` / ``--vision`` paths exist, ``--device`` is available (``args.device`` becomes the
    resolved device)."""
    if args.adapter is None:
        check_model_source(args.model)
    for option in ("adapter", "base", "vision"):
        if getattr(args, option, None) is not None:
            check_model_source(getattr(args, option), f"--{option}", "directory")
    args.device = check_device(args.device)


def source_random_parts(source: str, overrides: list[str] | None = None) -> list[str]:
    """The random parts (:func:`livecue.model.build.random_parts`) of the model ``source`` names, from its config
    alone (nothing is built): a preset or a config file is built from its config; a checkpoint directory, a hub id,
    the default model and the paper's adapter carry their weights (``[]``). Raises the config's own one-line error
    for a broken config file."""
    from ..config import LiveConfig, list_presets, preset
    from ..model.build import random_parts

    path = Path(source)
    if path.is_file():
        cfg = LiveConfig.load(path)
        return random_parts(cfg.with_overrides(overrides) if overrides else cfg)
    name = source.replace("live1+", "live1_plus").replace("-", "_")
    if not path.is_dir() and name in list_presets():
        return random_parts(preset(name, overrides or None))
    return []


@contextlib.contextmanager
def announce_random(command: str, source: str, parts: list[str] | None = None) -> Iterator[None]:
    """Load a model inside this block: if it has random weights, say so in one line on stderr when the block ends
    without an error, ``livecue watch: tiny: random weights, for tests and benchmarks (pass --model default for the
    trained default model)``, instead of :func:`livecue.model.build.build_model`'s logging warning (which it holds
    back). A block that fails says only its error (open the source in the block too).

    Args:
        command: the command, as its lines name it (``livecue watch``).
        source: the model as the user named it.
        parts: random parts known without ``build_model`` (a frame encoder built alone: ``livecue encode``).
    """
    from ..model.build import RANDOM_PARTS_KEY, describe_random
    from ..model.build import log as build_log

    seen: list[list[str]] = [list(parts)] if parts else []

    def hold_back(record: logging.LogRecord) -> bool:
        found = getattr(record, RANDOM_PARTS_KEY, None)
        if found is None:
            return True
        seen.append(found)
        return False

    build_log.addFilter(hold_back)
    try:
        yield
    finally:
        build_log.removeFilter(hold_back)
    if seen:
        print(f"{command}: {source}: {describe_random(seen[-1])}, {RANDOM_HINT}", file=sys.stderr, flush=True)


def load_from_args(args: argparse.Namespace, overrides: list[str] | None = None, *, announce: bool = True):
    """``(LiveModel, tokenizer)`` from the options of :func:`add_model_argument`, checked first
    (:func:`check_model_args`); a random model announces itself (:func:`announce_random`; ``announce=False``: the
    caller's own ``announce_random`` block does, e.g. around loading and opening the source)."""
    check_model_args(args)
    from ..model.load import load_model

    source = args.adapter or args.model
    with announce_random(args.command, source) if announce else contextlib.nullcontext():
        return load_model(source, device=args.device, dtype=args.dtype, overrides=overrides or None,
                          base=args.base, vision=args.vision, quantize=getattr(args, "quantize", None))



def has_accelerate() -> bool:
    """Whether accelerate is installed: its state then gives each process of a launched run its device."""
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def distributed(device: str | None) -> tuple[int, int, Any, Callable[[], None], bool]:
    """``(rank, world size, device, barrier, is_main)`` from accelerate's state when launched with several processes
    (``accelerate launch --multi_gpu --num_processes N`` on GPUs; ``torchrun --nproc_per_node N`` on CPUs, where
    processes talk over gloo), else one process. ``device`` None: the process's own device (accelerate's:
    ``cuda:<local rank>`` on GPUs, else what ``auto`` finds), else ``device`` as given."""
    try:
        from accelerate import PartialState
    except ImportError:
        return 0, 1, device or "cpu", lambda: None, True
    from ..model.devices import resolve_device

    # accelerate treats CPU processes as distributed only when told they run on the CPU
    state = PartialState(cpu=resolve_device(device).type == "cpu")
    return (state.process_index, state.num_processes, device or state.device, state.wait_for_everyone,
            state.is_main_process)

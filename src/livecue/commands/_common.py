"""Shared command-line helpers: checked option values, model selection and dotted config overrides.

The stream options (θ, fps, system prompt, reply cap, sampling, memory) are declared once, in
:data:`livecue.inference.options.OPTIONS`: commands add them with ``StreamOptions.add_arguments``.

Every numeric option of a command takes one of the ``type=`` checkers of :mod:`livecue.argtypes` (re-exported
here), so argparse refuses a bad value with one line naming the option and the allowed range, e.g.
``livecue watch: error: argument --fps: must be a finite number in (0, 240], got 'nan'`` (exit 2).
"""

from __future__ import annotations

import argparse
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


def add_model_argument(parser: argparse.ArgumentParser, default: str = "tiny") -> None:
    parser.add_argument("--model", default=default,
                        help="a checkpoint directory, a config file (.yaml/.json), a preset (live1, live1_plus, "
                             "tiny), a hub id, or the paper's model (videollm-online-8b-v1plus or a directory in "
                             "its adapter layout); default: %(default)s")
    parser.add_argument("--adapter", default=None,
                        help="an upstream VideoLLM-online adapter (hub id or directory); replaces --model")
    parser.add_argument("--base", default=None, help="the base LM of an upstream adapter (hub id or local copy)")
    parser.add_argument("--vision", default=None, help="the vision tower of an upstream adapter (hub id or dir)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="override the LM dtype")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``livecue watch: error: argument --fps: ... (see livecue watch --help)``
    instead of the usage block followed by the error (exit status 2, as argparse)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def parser(prog: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    kwargs.setdefault("epilog", "Config overrides: --section.key=value (e.g. --stream.threshold=0.8).")
    return ArgumentParser(prog=f"livecue {prog}", description=description, **kwargs)


def load_from_args(args: argparse.Namespace, overrides: list[str] | None = None):
    """``(LiveModel, tokenizer)`` from the options of :func:`add_model_argument`."""
    from ..model.load import load_model

    return load_model(args.adapter or args.model, device=args.device, dtype=args.dtype,
                      overrides=overrides or None, base=args.base, vision=args.vision)


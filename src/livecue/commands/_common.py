"""Shared command-line helpers: model selection and dotted config overrides."""

from __future__ import annotations

import argparse


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


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"livecue {prog}", description=description,
        epilog="Config overrides: --section.key=value (e.g. --stream.threshold=0.8).")


def load_from_args(args: argparse.Namespace, overrides: list[str] | None = None):
    """``(LiveModel, tokenizer)`` from the options of :func:`add_model_argument`."""
    from ..model.load import load_model

    return load_model(args.adapter or args.model, device=args.device, dtype=args.dtype,
                      overrides=overrides or None, base=args.base, vision=args.vision)

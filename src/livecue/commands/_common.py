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
                        help="a checkpoint directory, a config file (.yaml/.json) or a preset "
                             "(live1, live1_plus, tiny); default: %(default)s")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="override the LM dtype")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"livecue {prog}", description=description,
        epilog="Config overrides: --section.key=value (e.g. --stream.threshold=0.8).")

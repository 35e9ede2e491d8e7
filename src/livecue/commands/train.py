"""``livecue train CONFIG.yaml [--a.b=c ...] [--resume] [--report-to T] [--name N]``: LIVE fine-tuning (see
livecue.train.recipe).

Multi-GPU / multi-node: ``accelerate launch --config_file configs/accelerate/ddp.yaml -m livecue.cli train ...``.
Every field of the config, with its meaning, unit and range: ``livecue config --fields train`` (docs/config.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import LiveConfig, tracker_names
from ._common import parser, split_overrides


def report_to(value: str) -> str:
    """argparse type of ``--report-to``: a valid ``train.report_to``."""
    try:
        tracker_names(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace("train.report_to", "--report-to")) from None
    return value


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("train", "Fine-tune a LIVE model (LoRA + connector) on streaming-dialogue records.",
               epilog="Config overrides: --section.key=value (e.g. --train.learning_rate=1e-4); every field with "
                      "its meaning, unit and range: livecue config --fields [SECTION].")
    p.add_argument("config", help="YAML/JSON config (may start with 'base: PRESET'), a preset or a checkpoint dir")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.output_dir that verifies (an unusable one is "
                        "skipped with a warning; a run config that differs from the checkpoint's is refused)")
    p.add_argument("--report-to", type=report_to, default=None, metavar="TRACKERS",
                   help="experiment trackers (accelerate's): tensorboard, wandb, trackio, mlflow, several joined "
                        "by commas, all (every one installed) or none; sets train.report_to (default: the "
                        "config's, tensorboard unless set). log.jsonl is always written")
    p.add_argument("--name", default=None,
                   help="the trained model's name (its config's 'name'); default: the config's, except that a run "
                        "continuing a checkpoint (train.init_from, or a checkpoint directory as CONFIG) is named "
                        "after its output directory instead of keeping the checkpoint's name")
    args = p.parse_args(argv)

    from ..train.recipe import train  # torch, transformers: not needed for --help
    from ..train.trainable import own_name

    cfg = LiveConfig.load(args.config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    options = {"train.report_to": args.report_to, "name": args.name}
    if any(v is not None for v in options.values()):
        cfg = cfg.with_overrides({k: v for k, v in options.items() if v is not None})
    if args.name is None and Path(args.config).is_dir():  # a checkpoint's config: its name is that model's
        cfg = own_name(cfg, LiveConfig.load(args.config).name)
    result = train(cfg, resume=args.resume, keep_name=args.name is not None)
    if result.final_dir is not None:
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        print(f"trained {result.steps} steps (last loss {last}); model: {result.final_dir}")
    return 0

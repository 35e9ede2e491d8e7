"""``livecue train CONFIG.yaml [--a.b=c ...] [--resume]``: LIVE fine-tuning (see livecue.train.recipe).

Multi-GPU / multi-node: ``accelerate launch --config_file configs/accelerate/ddp.yaml -m livecue.cli train ...``.
Every field of the config, with its meaning, unit and range: ``livecue config --fields train`` (docs/config.md).
"""

from __future__ import annotations

from ..config import LiveConfig
from ._common import parser, split_overrides


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = parser("train", "Fine-tune a LIVE model (LoRA + connector) on streaming-dialogue records.",
               epilog="Config overrides: --section.key=value (e.g. --train.learning_rate=1e-4); every field with "
                      "its meaning, unit and range: livecue config --fields [SECTION].")
    p.add_argument("config", help="YAML/JSON config (may start with 'base: PRESET'), a preset or a checkpoint dir")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in train.output_dir that verifies (an unusable one is "
                        "skipped with a warning; a run config that differs from the checkpoint's is refused)")
    args = p.parse_args(argv)

    from ..train.recipe import train  # torch, transformers: not needed for --help

    cfg = LiveConfig.load(args.config)
    if overrides:
        cfg = cfg.with_overrides(overrides)
    result = train(cfg, resume=args.resume)
    if result.final_dir is not None:
        last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
        print(f"trained {result.steps} steps (last loss {last}); model: {result.final_dir}")
    return 0

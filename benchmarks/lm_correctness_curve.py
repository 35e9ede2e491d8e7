"""Held-out quality against training steps: teacher-forced eval of every checkpoint of a training run.

For each ``RUN_DIR/checkpoint-STEP`` (and ``RUN_DIR/final``), runs ``livecue eval --task narration`` on held-out
streams and prints a Markdown table of LM-Correctness, Fluency, TimeDiff and LM-PPL by step (the curve issue 22 asks
for), plus the untrained floor when ``--floor CONFIG`` is given. Each evaluation is kept in
``OUT/<checkpoint name>/eval-narration.json``; a rerun reuses what is there, so the script can follow a training run
(set ``train.save_total_limit`` high enough that the checkpoints you want are kept).

    python benchmarks/lm_correctness_curve.py RUN_DIR --data data/world/test.jsonl \
        [--feature-cache data/world_cache_h3] [--floor configs/default_model.yaml --floor-override \
        --vision.frame_colour_bins=3] [--out RUN_DIR/curve] [--max-samples N] > curve.md
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

METRICS = (("lm_correctness", "LM-Correctness"), ("fluency", "Fluency"), ("time_diff", "TimeDiff (s)"),
           ("lm_ppl", "LM-PPL"))


def checkpoints(run_dir: Path) -> list[tuple[str, Path]]:
    """``(label, path)`` of every checkpoint of the run in step order, ``final`` last."""
    found = sorted((int(m[1]), p) for p in run_dir.glob("checkpoint-*")
                   if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    out = [(str(step), p) for step, p in found]
    if (run_dir / "final").is_dir():
        out.append(("final", run_dir / "final"))
    return out


def evaluate(model: list[str], out: Path, args: argparse.Namespace) -> dict[str, float]:
    """The narration metrics of ``model`` (a checkpoint path, or a config plus overrides), cached in ``out``."""
    report = out / "eval-narration.json"
    if not report.is_file():
        cmd = [args.livecue, "eval", "--model", *model, "--data", args.data, "--task", "narration", "--out", str(out)]
        if args.feature_cache:
            cmd += ["--feature-cache", args.feature_cache]
        if args.max_samples:
            cmd += ["--max-samples", str(args.max_samples)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())["metrics"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", required=True, help="held-out records (e.g. data/world/test.jsonl)")
    p.add_argument("--feature-cache", default=None)
    p.add_argument("--out", type=Path, default=None, help="where each evaluation is kept (default RUN_DIR/curve)")
    p.add_argument("--floor", default=None, help="a config evaluated untrained, the floor row (e.g. the run's yaml)")
    p.add_argument("--floor-override", action="append", default=[], help="a --a.b=c override for --floor")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--livecue", default=str(Path(sys.executable).with_name("livecue")))
    args = p.parse_args()
    out = args.out or args.run_dir / "curve"
    rows: list[tuple[str, dict[str, float]]] = []
    if args.floor:
        rows.append(("untrained", evaluate([args.floor, *args.floor_override], out / "untrained", args)))
    found = checkpoints(args.run_dir)
    if not found:
        raise SystemExit(f"no checkpoint-STEP or final directory in {args.run_dir}")
    for label, path in found:
        rows.append((label, evaluate([str(path)], out / path.name, args)))
    print("| step | " + " | ".join(name for _, name in METRICS) + " |")
    print("|---" + "|---:" * len(METRICS) + "|")
    for label, m in rows:
        print(f"| {label} | " + " | ".join(f"{m[key]:.3f}" if key in m else "–" for key, _ in METRICS) + " |")


if __name__ == "__main__":
    main()

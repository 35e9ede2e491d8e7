"""Summarise a training run's log.jsonl as a Markdown report (loss curve, tokens/s, decision accuracy).

    python benchmarks/training_report.py RUN_DIR [--every 25] > report.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--every", type=int, default=25)
    args = p.parse_args()
    rows: dict[int, dict] = {}
    evals: dict[int, dict] = {}
    for line in (Path(args.run_dir) / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        (evals if "eval_loss" in rec else rows)[rec["step"]] = rec  # a resumed run re-logs steps: keep the last
    steps = sorted(rows)
    print(f"{len(steps)} logged steps, last step {steps[-1]}; "
          f"median tokens/s {statistics.median(rows[s]['tokens_per_s'] for s in steps):.0f}\n")
    print("| step | loss (mean of window) | lr | tokens/s |\n|---:|---:|---:|---:|")
    window: list[float] = []
    for s in steps:
        window.append(rows[s]["loss"])
        if s % args.every == 0 or s == steps[-1]:
            print(f"| {s} | {statistics.mean(window):.3f} | {rows[s]['lr']:.2e} | {rows[s]['tokens_per_s']:.0f} |")
            window = []
    if evals:
        print("\n| step | eval loss | speak/silence decision acc | majority baseline | speak recall |")
        print("|---:|---:|---:|---:|---:|")
        for s in sorted(evals):
            e = evals[s]
            print(f"| {s} | {e['eval_loss']:.3f} | {e.get('decision_acc', float('nan')):.3f} | "
                  f"{e.get('majority', float('nan')):.3f} | {e.get('speak_recall', float('nan')):.3f} |")


if __name__ == "__main__":
    main()

"""Linear probe: how well do cached frame features tell which colours and shapes are on screen?

Fits a multi-label logistic regression from a world feature cache (``livecue encode``) to the set of colours and
the set of shapes visible in each frame (from the world's own story, ``simulate_stream``), on the train split, and
scores it on the test split. Used to explain the default model's content errors (benchmarks/results/default_model.md).

    python benchmarks/probe_features.py DATA_DIR [--tokens cls|all] [--max-train N] [--cache world_cache]
        [--columns all|tower|colour] [--probe linear|mlp]

``--columns colour`` keeps only what ``vision.frame_colour_bins`` appended (the columns after the tower's 1280);
``--probe mlp`` fits a one-hidden-layer MLP (256 GELU units) instead of a linear map.

DATA_DIR holds ``world/{train,test}.jsonl`` and the cache directory (scripts/train_default_model.sh makes both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from livecue.data.world import WorldConfig, simulate_stream


def load(data: Path, split: str, index: dict, colours: list[str], shapes: list[str], limit: int | None,
         cache: str = "world_cache"):
    xs, ys = [], []
    for line in (data / "world" / f"{split}.jsonl").read_text().splitlines()[:limit]:
        rec = json.loads(line)
        entry = index["videos"].get(rec["video"])
        if entry is None:
            continue
        feats = load_file(str(data / cache / entry["file"]))["features"].float()  # (N, K, D)
        meta = rec["meta"]
        states = simulate_stream(WorldConfig.from_dict(meta["config"]), meta["seed"]).states
        for k in range(min(len(states), feats.shape[0])):
            names = {o.name for o in states[k]}
            xs.append(feats[k])
            ys.append([any(n.startswith(c + " ") for n in names) for c in colours]
                      + [any(n.endswith(" " + s) for n in names) for s in shapes])
    return torch.stack(xs), torch.tensor(ys, dtype=torch.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--tokens", choices=["cls", "all"], default="cls")
    p.add_argument("--max-train", type=int, default=None, help="use the first N train streams")
    p.add_argument("--cache", default="world_cache", help="feature cache directory inside DATA_DIR")
    p.add_argument("--columns", choices=["all", "tower", "colour"], default="all")
    p.add_argument("--tower-width", type=int, default=1280, help="feature columns that come from the tower")
    p.add_argument("--probe", choices=["linear", "mlp"], default="linear")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    args = p.parse_args()
    torch.manual_seed(0)
    index = json.loads((args.data / args.cache / "index.json").read_text())
    cfg = WorldConfig()
    colours, shapes = list(cfg.colours), list(cfg.shapes)
    xtr, ytr = load(args.data, "train", index, colours, shapes, args.max_train, args.cache)
    xte, yte = load(args.data, "test", index, colours, shapes, None, args.cache)
    keep = slice(0, 1) if args.tokens == "cls" else slice(None)
    cols = {"all": slice(None), "tower": slice(0, args.tower_width), "colour": slice(args.tower_width, None)}
    a, b = xtr[:, keep, cols[args.columns]].flatten(1), xte[:, keep, cols[args.columns]].flatten(1)
    mu, sd = a.mean(0), a.std(0) + 1e-4
    a, b = (a - mu) / sd, (b - mu) / sd
    probe = (torch.nn.Linear(a.shape[1], ytr.shape[1]) if args.probe == "linear" else
             torch.nn.Sequential(torch.nn.Linear(a.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, ytr.shape[1])))
    opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=args.weight_decay)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(a)).split(256):
            loss = F.binary_cross_entropy_with_logits(probe(a[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = (probe(b) > 0).float()
    print(f"{len(a)} train frames, {len(b)} test frames, {args.probe} probe on {args.tokens} tokens, "
          f"{args.columns} columns ({a.shape[1]}-d)")
    for name, cols in (("colour", slice(0, len(colours))), ("shape", slice(len(colours), None))):
        hit = pred[:, cols] == yte[:, cols]
        rate = yte[:, cols].mean(0)
        base = torch.maximum(rate, 1 - rate).mean()
        print(f"{name:6s}: per-label acc {hit.float().mean():.3f} (majority {base:.3f}), "
              f"exact set {hit.all(1).float().mean():.3f}")


if __name__ == "__main__":
    main()

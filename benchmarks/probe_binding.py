"""Binding probe: do cached frame tokens tell which (colour, shape) PAIRS are on screen, not just which colours and
which shapes?

Per frame the labels are the set of objects on screen (``"<colour> <shape>"``, from the world's own story,
``simulate_stream``) as a multi-label target over every colour × shape pair of the world config, plus the colour set
and the shape set for reference. A probe is fitted on the train split's frames and scored on the test split's:
pair per-label accuracy and exact set, the *binding* score (among frames with ≥ 2 objects, the share whose predicted
pair set is exactly right) and the *swapped* rate (among those frames, the share predicting a pair that is not on
screen although its colour belongs to one on-screen object and its shape to another), and the colour / shape exact
set. Used for issue 22 (benchmarks/results/default_model_binding.md).

    python benchmarks/probe_binding.py DATA_DIR CACHE [--pooled K] [--no-cls] [--segments N]
        [--probe linear mlp token object]
        [--columns all|tower|colour] [--max-train N] [--epochs 10] [--compare OTHER_CACHE]

DATA_DIR holds ``{train,test}.jsonl`` (``livecue world``); CACHE is a ``livecue encode`` feature cache of its videos.
Probes: ``linear`` and ``mlp`` (256 GELU units) read all the frame's tokens concatenated in their fixed order;
``token`` applies one MLP (256 units) to every token alone and max-pools the logits over the tokens (an
object-centric reading: some single token must carry both the colour and the shape).

Layouts without a second encode: a cache of EfficientNet-Lite0 encoded at its full feature grid
(``--vision.frame_token_pooled=7`` at 224 px, ``--vision.frame_colour_bins=B``) holds every coarser layout exactly,
because ``adaptive_avg_pool2d`` of the grid is the pooled token and a pooled token's region is a union of equal
grid cells, so its colour histogram is the mean of the cells' pixel shares (undoing the ``log(1 + 100·share)``
scaling of ``livecue.model.vision.region_colours``). ``--pooled K`` / ``--no-cls`` derive that layout from the
cache; ``--compare`` reports the largest difference to a cache encoded directly in that layout (float16 rounding).
``--segments N`` adds ``vision.frame_colour_segments=N`` tokens as ``livecue encode`` would write them: the
library's own ``colour_segments`` on the video's decoded frames (``decode_at_fps``, letterboxed) and the cache's
tower grid (float16 like the cache).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from livecue.config import VisionConfig
from livecue.data.features import INDEX, feature_file
from livecue.data.video import decode_at_fps, letterbox
from livecue.data.world import WorldConfig, simulate_stream
from livecue.data.world_render import COLOURS
from livecue.model.vision import colour_cells, colour_segments

HIDDEN = 256


def derive(feats: torch.Tensor, header: dict, cls: bool, pooled: int) -> torch.Tensor:
    """``(F, K0, D)`` tokens of the cache -> ``(F, K, D)`` tokens of layout (cls, pooled), as ``livecue encode``
    would have written them (in float32)."""
    v = header["vision"]
    if v["frame_token_cls"] == cls and v["frame_token_pooled"] == pooled:
        return feats
    g, bins = v["frame_token_pooled"], v["frame_colour_bins"]
    if v["kind"] != "efficientnet_lite0" or g != v["resolution"] // 32:
        raise ValueError(f"deriving another layout needs an EfficientNet-Lite0 cache at its full grid "
                         f"(frame_token_pooled={v['resolution'] // 32}); this one has {v['kind']}, pooled {g}")
    if pooled < 1 or pooled > g:
        raise ValueError(f"--pooled must be in 1..{g} (the cache's grid), got {pooled}")
    n, width = feats.shape[0], feats.shape[-1]
    off = int(v["frame_token_cls"])
    grid = feats[:, off:off + g * g].float().reshape(n, g, g, width).permute(0, 3, 1, 2)  # (F, D, g, g)
    colour = bins**3
    tower, share = grid[:, :width - colour], torch.expm1(grid[:, width - colour:] * math.log(101)) / 100
    parts = [(tower.mean((2, 3))[:, None], share.mean((2, 3))[:, None])] if cls else []
    parts.append((F.adaptive_avg_pool2d(tower, pooled).flatten(2).transpose(1, 2),
                  F.adaptive_avg_pool2d(share, pooled).flatten(2).transpose(1, 2)))
    tokens = torch.cat([t for t, _ in parts], 1)
    shares = torch.cat([s for _, s in parts], 1)
    return torch.cat([tokens, torch.log1p(100 * shares.clamp(min=0)) / math.log(101)], -1) if colour else tokens


def with_segments(tokens: torch.Tensor, feats: torch.Tensor, header: dict, video: Path, segments: int) -> torch.Tensor:
    """Append ``segments`` colour-segment tokens (``livecue.model.vision.colour_segments``) to derived ``tokens``:
    the frames decoded from ``video`` at the cache's fps, the tower grid from the cache's full-grid tokens."""
    v = dict(header["vision"])
    g, colour = v["frame_token_pooled"], v["frame_colour_bins"] ** 3
    if v["kind"] != "efficientnet_lite0" or g != v["resolution"] // 32 or not colour:
        raise ValueError("--segments needs an EfficientNet-Lite0 cache at its full grid with frame_colour_bins > 0")
    v["frame_colour_segments"] = segments
    cfg = VisionConfig(**v)
    frames = [torch.from_numpy(f).permute(2, 0, 1) for _, f in decode_at_fps(video, header["fps"])]
    n = min(len(frames), feats.shape[0])
    boxed = letterbox(torch.stack(frames[:n]), cfg.resolution).float()
    off, width = int(v["frame_token_cls"]), feats.shape[-1] - colour
    grid = feats[:n, off:off + g * g, :width].float().reshape(n, g, g, width).permute(0, 3, 1, 2)
    seg = colour_segments(boxed, grid, cfg).half().float()  # the cache's float16
    padded = F.pad(tokens[:n].float(), (0, cfg.segment_width))
    return torch.cat([padded, seg], 1)


def load(data: Path, split: str, cache: Path, header: dict, args: argparse.Namespace, pairs: list[str],
         colours: list[str], shapes: list[str], limit: int | None):
    """Frames of one split -> tokens (N, K, D), labels (N, pairs + colours + shapes), objects on screen (N,), and
    per object whose colour no other on-screen object shares: (frame, the token at it or -1, its pair) (M, 3)."""
    xs, ys, counts, objects = [], [], [], []
    missing = 0
    for line in (data / f"{split}.jsonl").read_text().splitlines()[:limit]:
        rec = json.loads(line)
        file = feature_file(cache, rec["video"])
        if not file.is_file():
            missing += 1
            continue
        raw = load_file(str(file))["features"]
        feats = derive(raw, header, args.cls, args.pooled).float()
        if args.segments:
            feats = with_segments(feats, raw, header, data / rec["video"], args.segments)
        meta = rec["meta"]
        states = simulate_stream(WorldConfig.from_dict(meta["config"]), meta["seed"]).states
        res = header["vision"]["resolution"]
        for k in range(min(len(states), feats.shape[0])):
            names = {o.name for o in states[k]}
            for o in states[k]:
                if [p.colour for p in states[k]].count(o.colour) == 1:
                    objects.append((len(xs), object_token(feats[k], o, res, meta["config"]["grid"], args),
                                    pairs.index(o.name)))
            xs.append(feats[k])
            ys.append([p in names for p in pairs] + [any(n.startswith(c + " ") for n in names) for c in colours]
                      + [any(n.endswith(" " + s) for n in names) for s in shapes])
            counts.append(len(states[k]))
    if missing:
        print(f"{split}: {missing} streams not in the cache, skipped")
    if not xs:
        raise ValueError(f"no {split} frames found in the cache {str(cache)!r}")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.float32), torch.tensor(counts), torch.tensor(objects)


def object_token(tokens: torch.Tensor, obj, res: int, grid: int, args: argparse.Namespace) -> int:
    """The token at a world object: with ``--segments`` the segment whose colour cell is the object's colour's
    (-1 if none), else the pooled token whose region holds the object's centre."""
    if args.segments:
        rgb = torch.tensor(COLOURS[obj.colour], dtype=torch.float32).view(1, 3, 1, 1)
        cell = int(colour_cells(rgb, args.bins))
        end = tokens.shape[1] - VisionConfig(frame_colour_bins=args.bins, frame_colour_segments=1).segment_width
        for j in range(tokens.shape[0] - args.segments, tokens.shape[0]):
            seg = tokens[j, end - args.bins**3:end]  # the segment's colour cell
            if seg.abs().sum() > 0 and int(seg.argmax()) == cell:
                return j
        return -1
    span = res / args.pooled
    row, col = (min(int(v * res / grid // span), args.pooled - 1) for v in (obj.y, obj.x))
    return int(args.cls) + row * args.pooled + col


def fit(probe: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, args: argparse.Namespace) -> None:
    """Adam (lr 1e-3, ``--weight-decay``), ``--epochs`` seeded shuffles of ``--batch-size``."""
    opt = torch.optim.Adam(probe.parameters(), 1e-3, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            loss = loss_fn(probe(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def object_readout(a: torch.Tensor, objects_tr: torch.Tensor, b: torch.Tensor, objects_te: torch.Tensor,
                   n_pairs: int, args: argparse.Namespace) -> float:
    """Fit a softmax MLP (256 GELU) on the token at each train object to name its pair; the test objects' accuracy
    (an object with no token at it counts as wrong)."""
    torch.manual_seed(args.seed)
    probe = nn.Sequential(nn.Linear(a.shape[2], HIDDEN), nn.GELU(), nn.Linear(HIDDEN, n_pairs))
    train = objects_tr[objects_tr[:, 1] >= 0]
    fit(probe, a[train[:, 0], train[:, 1]], train[:, 2], F.cross_entropy, args)
    found = objects_te[:, 1] >= 0
    with torch.no_grad():
        pred = probe(b[objects_te[found, 0], objects_te[found, 1]]).argmax(1)
    return (pred == objects_te[found, 2]).sum().item() / len(objects_te)


def build_probe(kind: str, tokens: int, width: int, out: int) -> nn.Module:
    if kind == "linear":
        return nn.Sequential(nn.Flatten(1), nn.Linear(tokens * width, out))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(1), nn.Linear(tokens * width, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, out))
    return TokenProbe(width, out)


class TokenProbe(nn.Module):
    """One MLP per token (shared weights), logits max-pooled over the frame's tokens."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, out)
        return self.mlp(x).amax(1)


def fit_and_score(kind: str, a: torch.Tensor, ytr: torch.Tensor, b: torch.Tensor, yte: torch.Tensor,
                  count: torch.Tensor, n_pairs: int, n_colours: int, pair_parts: list[tuple[int, int]],
                  args: argparse.Namespace) -> dict[str, float]:
    torch.manual_seed(args.seed)
    probe = build_probe(kind, a.shape[1], a.shape[2], ytr.shape[1])
    fit(probe, a, ytr, F.binary_cross_entropy_with_logits, args)
    with torch.no_grad():
        pred = torch.cat([probe(chunk) for chunk in b.split(512)]) > 0
    truth = yte > 0.5
    pair, colour, shape = slice(0, n_pairs), slice(n_pairs, n_pairs + n_colours), slice(n_pairs + n_colours, None)
    exact = (pred[:, pair] == truth[:, pair]).all(1)
    multi = count >= 2
    # swapped: a predicted pair absent from the screen whose colour and shape are both on screen (in two objects)
    on_colour = truth[:, colour][:, [c for c, _ in pair_parts]]  # (N, pairs): this pair's colour is on screen
    on_shape = truth[:, shape][:, [s for _, s in pair_parts]]
    swapped = (pred[:, pair] & ~truth[:, pair] & on_colour & on_shape).any(1)
    return {"pair_label": (pred[:, pair] == truth[:, pair]).float().mean().item(),
            "pair_exact": exact.float().mean().item(),
            "binding": exact[multi].float().mean().item(),
            "swapped": swapped[multi].float().mean().item(),
            "colour_exact": (pred[:, colour] == truth[:, colour]).all(1).float().mean().item(),
            "shape_exact": (pred[:, shape] == truth[:, shape]).all(1).float().mean().item()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path, help="directory with train.jsonl and test.jsonl (livecue world)")
    p.add_argument("cache", type=Path, help="livecue encode feature cache of its videos")
    p.add_argument("--pooled", type=int, default=None, help="k×k pooled tokens (default: the cache's)")
    p.add_argument("--no-cls", dest="cls", action="store_false", default=None, help="drop the CLS token")
    p.add_argument("--segments", type=int, default=0, help="add N colour-segment tokens (vision.frame_colour_segments)")
    p.add_argument("--probe", nargs="+", choices=["linear", "mlp", "token", "object"],
                   default=["linear", "mlp", "token"])
    p.add_argument("--max-train", type=int, default=None, help="use the first N train streams")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--columns", choices=["all", "tower", "colour"], default="all",
                   help="tower: only the tower's features; colour: only the colour histograms (and segments' "
                        "silhouettes and centroids)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare", type=Path, default=None,
                   help="a cache encoded directly in the derived layout: print the largest difference and stop")
    args = p.parse_args()
    index_file = args.cache / INDEX
    if not index_file.is_file():
        raise SystemExit(f"error: {str(index_file)!r} not found: CACHE must be a livecue encode cache")
    header = json.loads(index_file.read_text())
    vision = header["vision"]
    args.cls = vision["frame_token_cls"] if args.cls is None else args.cls
    args.pooled = vision["frame_token_pooled"] if args.pooled is None else args.pooled
    args.bins = vision["frame_colour_bins"]
    if args.compare is not None:
        diffs = []
        for key in json.loads((args.compare / INDEX).read_text())["videos"]:
            if feature_file(args.cache, key).is_file():
                mine = derive(load_file(str(feature_file(args.cache, key)))["features"], header, args.cls, args.pooled)
                theirs = load_file(str(feature_file(args.compare, key)))["features"].float()
                diffs.append((mine.float() - theirs).abs().max().item())
        if not diffs:
            raise SystemExit("error: the two caches share no video")
        print(f"{len(diffs)} videos: largest |derived - encoded| = {max(diffs):.4g}")
        return
    cfg = WorldConfig()
    colours, shapes = list(cfg.colours), list(cfg.shapes)
    pairs = [f"{c} {s}" for c in colours for s in shapes]
    pair_parts = [(ci, si) for ci in range(len(colours)) for si in range(len(shapes))]
    start = time.perf_counter()
    xtr, ytr, _, otr = load(args.data, "train", args.cache, header, args, pairs, colours, shapes, args.max_train)
    xte, yte, count, ote = load(args.data, "test", args.cache, header, args, pairs, colours, shapes, None)
    colour = vision["frame_colour_bins"] ** 3
    if args.columns != "all" and not colour:
        raise SystemExit("error: --columns tower|colour needs a cache encoded with vision.frame_colour_bins > 0")
    segment = VisionConfig(frame_colour_bins=2, frame_colour_segments=args.segments).segment_width
    tower = xtr.shape[2] - colour - segment
    cols = {"all": slice(None), "tower": slice(0, tower), "colour": slice(tower, None)}
    xtr, xte = xtr[..., cols[args.columns]], xte[..., cols[args.columns]]
    mu, sd = xtr.mean((0, 1)), xtr.std((0, 1)) + 1e-4  # per feature column, shared by all tokens
    # each column group (tower, colour histogram, segment silhouette + centroid) gets the same total variance, so
    # the 1280 tower columns do not drown the histogram's 27 in the probe's first layer
    widths = torch.tensor([tower] * tower + [colour] * colour + [segment] * segment)[cols[args.columns]]
    sd = sd * widths.sqrt() if args.columns == "all" else sd
    a, b = (xtr - mu) / sd, (xte - mu) / sd
    layout = ("cls + " if args.cls else "") + f"{args.pooled}x{args.pooled}" + (
        f" + {args.segments} segments" if args.segments else "") + (
        "" if args.columns == "all" else f" ({args.columns} only)")
    print(f"layout {layout} = {a.shape[1]} tokens x {a.shape[2]} ({vision['frame_colour_bins']} colour bins); "
          f"{len(a)} train frames, {len(b)} test frames ({int((count >= 2).sum())} with >= 2 objects); "
          f"loaded in {time.perf_counter() - start:.0f} s")
    print("| layout | tokens/frame | probe | pair per-label | pair exact set | binding (>= 2 objects) | swapped "
          "| colour exact set | shape exact set | fit s |")
    for kind in args.probe:
        start = time.perf_counter()
        if kind == "object":
            acc = object_readout(a, otr, b, ote, len(pairs), args)
            print(f"object readout ({'segment' if args.segments else 'region'} token at each object, "
                  f"{len(ote)} test objects): pair accuracy {acc:.3f} ({time.perf_counter() - start:.0f} s)")
            continue
        m = fit_and_score(kind, a, ytr, b, yte, count, len(pairs), len(colours), pair_parts, args)
        print(f"| {layout} | {a.shape[1]} | {kind} | {m['pair_label']:.3f} | {m['pair_exact']:.3f} | "
              f"{m['binding']:.3f} | {m['swapped']:.3f} | {m['colour_exact']:.3f} | {m['shape_exact']:.3f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()

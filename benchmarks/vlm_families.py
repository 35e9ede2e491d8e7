"""Per-frame cost and memory of each VLM family as a LIVE base, at equal per-frame token budgets (tiny random
configs on the CPU), beside the composed ``tiny`` model.

For every VLM preset (``src/livecue/presets/tiny_*.yaml`` with ``architecture: vlm``) and the composed ``tiny``,
one process each (so peak RSS is the family's own): a forced stream (``livecue.bench``: a reply of R tokens every
``--speak-every`` seconds, silence otherwise) of random pixel frames through the family's own vision encoder and
projector and its language model, with each frame's token grid pooled to ``--tokens`` (k×k; the composed tiny has 10:
CLS + 3×3). Reported: frames/s over the window ending at the last mark, silent / speaking frame latency (p50),
vision-encoder time per frame, cached tokens, peak RSS, parameter counts. The tiny configs are not the real models'
sizes: this compares the families' *structure* (tokens per frame, positions, attention pattern, vision path) at equal
budgets, and catches a family whose per-frame cost grows where others' do not.

    python benchmarks/vlm_families.py                       # writes benchmarks/results/vlm_families.md
    python benchmarks/vlm_families.py --frames 100,400 --tokens 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def vlm_presets() -> list[str]:
    """The presets of a VLM base, by name."""
    import yaml

    names = []
    for path in sorted((ROOT / "src" / "livecue" / "presets").glob("tiny_*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("architecture") == "vlm":
            names.append(path.stem)
    return names


def measure(preset: str, frames: list[int], pooled: int, threads: int) -> dict:
    """One family in this process: the forced stream with pixel frames, and the vision encoder alone."""
    import torch

    from livecue.bench import BenchConfig, load_bench_model, run_stream
    from livecue.inference.engine import StreamEngine

    torch.set_num_threads(threads)
    overrides = [f"vlm.frame_pooled={pooled}"] if preset != "tiny" else []
    model, tokenizer = load_bench_model(preset, overrides=overrides)
    engine = StreamEngine(model, tokenizer)
    cfg = BenchConfig(marks=frames, pixels=True, window=min(100, frames[-1] // 2))
    result, _ = run_stream(engine, cfg)
    pixels = torch.randint(0, 256, (32, 3, model.cfg.frame_resolution, model.cfg.frame_resolution),
                           dtype=torch.uint8)
    with torch.inference_mode():
        engine.encode(pixels[:4])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, 32, 4):
            engine.encode(pixels[i:i + 4])
        vision_ms = (time.perf_counter() - t0) / 32 * 1e3
    last = result.marks[-1]

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters()) if module is not None else 0

    return {"preset": preset, "family": model.cfg.vlm.family if model.cfg.is_vlm else "composed",
            "tokens_per_frame": model.frame_num_tokens, "resolution": model.cfg.frame_resolution,
            "positions": "explicit (M-RoPE)" if model.explicit_positions else "1-D (from the cache)",
            "lm_params": count(model.lm), "vision_params": count(model.vision) + count(model.connector),
            "frames": result.frames, "fps": last.fps, "silent_p50_ms": last.silent_p50_ms,
            "reply_p50_ms": last.reply_p50_ms, "cache_tokens": last.cache_tokens, "vision_ms": vision_ms,
            "peak_rss_mb": result.peak_mem_mb, "batched": engine.batched}


def report(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = ["# VLM families as LIVE bases: per-frame cost and memory at equal token budgets", "",
             f"Command: `{command}`", "",
             f"- machine: {os.cpu_count()} CPU cores ({platform.machine()}), {args.threads} torch thread(s); "
             f"Python {platform.python_version()}",
             f"- each family's tiny random preset with every frame pooled to {args.tokens}×{args.tokens} = "
             f"{args.tokens ** 2} tokens (`vlm.frame_pooled`), the composed `tiny` (10 tokens) for reference; random "
             f"uint8 frames through the vision encoder; a {15}-token reply every 3 s of stream at 2 fps; statistics "
             f"over the last {min(100, args.marks[-1] // 2)} frames before frame {args.marks[-1]}; one process per "
             "family",
             "- the tiny configs are not the real models' sizes: compare structure (tokens per frame, positions, "
             "attention, vision path), not absolute speed", "",
             "| preset | family | tokens / frame | positions | batched | LM / vision params | frames/s | silent p50 ms "
             "| reply p50 ms | vision ms / frame | cached tokens | peak RSS MB |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['preset']}` | {r['family']} | {r['tokens_per_frame']} | {r['positions']} | "
                     f"{'yes' if r['batched'] else 'one at a time'} | {r['lm_params'] / 1e6:.2f}M / "
                     f"{r['vision_params'] / 1e6:.2f}M | {r['fps']:.1f} | {r['silent_p50_ms']:.1f} | "
                     f"{r['reply_p50_ms']:.1f} | {r['vision_ms']:.1f} | {r['cache_tokens']:,} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", default="100,400", help="marks, comma-separated (default: %(default)s)")
    p.add_argument("--tokens", type=int, default=2, help="k: frames pooled to k x k tokens (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    p.add_argument("--only", default=None, help="one preset, in this process (prints its JSON)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vlm_families.md"))
    args = p.parse_args()
    args.marks = sorted(int(x) for x in args.frames.split(","))
    if args.only:
        print(json.dumps(measure(args.only, args.marks, args.tokens, args.threads)))
        return 0
    rows, failed = [], []
    for preset in ["tiny", *vlm_presets()]:
        cmd = [sys.executable, __file__, "--only", preset, "--frames", args.frames, "--tokens", str(args.tokens),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if out.returncode:
            print(f"{preset}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            failed.append(preset)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{preset}: {rows[-1]['fps']:.1f} frames/s", flush=True)
    command = "python benchmarks/vlm_families.py" + "".join(
        f" {flag} {value}" for flag, value, default in (("--frames", args.frames, "100,400"),
                                                       ("--tokens", args.tokens, 2),
                                                       ("--threads", args.threads, 1)) if value != default)
    Path(args.out).write_text(report(rows, args, command))
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Eager vs KV pool vs compiled vs quantized on the CPU: one forced stream and a batch of concurrent streams per row.

Every row is one ``livecue bench`` process (so peak RSS is the row's own) with the row's flags: a stream of random
frame features with a reply of ``--reply-tokens`` every 3 s (silence otherwise), frames/s and silent / speaking frame
latency p50 / p99 over the window ending at the last mark, then ``--streams N`` concurrent streams stepped as one
continuous batch (every round one forward; with the pool, one attention call per layer for all of them). Compiled
rows compile each bucketed shape the first time it is met (bench's warm-up frames cover the single-stream shapes;
the first rounds of each multi-stream size compile inside the measurement, which shows in their p99).

    python benchmarks/fast_path.py --model tiny --frames 200,600 --streams 4 --threads 2
    python benchmarks/fast_path.py --model default --frames 100,200 --streams 4 --threads 2 --quantize-row
    # writes benchmarks/results/fast_path_cpu_<model>.md and .json
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
ROWS = {  # row name -> livecue bench flags
    "eager (default)": [],
    "kv pool, loop attention": ["--kv-pool"],
    "kv pool, one padded SDPA call": ["--kv-pool", "--attention", "padded"],
    "compiled (flex over the pool)": ["--compile"],
}


def run_row(name: str, flags: list[str], args: argparse.Namespace, out_dir: Path) -> dict:
    path = out_dir / f"{args.model}_{len(list(out_dir.glob('*.json')))}.json"
    streams = ["--streams", str(args.streams), "--streams-frames", str(args.streams_frames)] if args.streams else []
    cmd = [sys.executable, "-c", "import sys; from livecue.cli import main; sys.exit(main())", "bench",
           "--model", args.model, "--frames", args.frames, *streams, "--overhead-frames", "0",
           "--threads", str(args.threads), "--json", str(path), *flags]
    began = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LIVECUE_PROGRESS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"{name}: livecue bench failed:\n{proc.stderr[-2000:]}")
    result = json.loads(path.read_text())
    stream = result["streams"][0]
    last = stream["marks"][-1]
    multi = next((r for r in result.get("multi_stream", []) if r["mode"] == "continuous"), {})
    return {"row": name, "flags": " ".join(flags), "wall_s": round(time.time() - began, 1),
            "fps": last["fps"], "silent_p50": last["silent_p50_ms"], "silent_p99": last["silent_p99_ms"],
            "reply_p50": last["reply_p50_ms"], "reply_p99": last["reply_p99_ms"], "peak_mb": stream["peak_mem_mb"],
            "multi_fps": multi.get("fps"), "multi_p50": multi.get("frame_p50_ms"),
            "multi_p99": multi.get("frame_p99_ms"), "multi_peak_mb": multi.get("peak_mem_mb"),
            "frames": args.frames, "streams": args.streams, "streams_frames": args.streams_frames,
            "threads": args.threads, "loadavg": result["environment"].get("loadavg")}


def fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--frames", default="200,600")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--streams-frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quantize-row", action="store_true", help="add an int8 row (torchao)")
    p.add_argument("--only", default=None, help="semicolon-separated row names to run (default: all)")
    args = p.parse_args()
    rows = dict(ROWS)
    if args.quantize_row:
        rows["int8 weights (eager)"] = ["--quantize", "int8"]
        rows["int8 weights, compiled"] = ["--quantize", "int8", "--compile"]
    if args.only:
        rows = {k: v for k, v in rows.items() if k in args.only.split(";")}
    out_dir = ROOT / "benchmarks" / "results" / "fast_path_cpu"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = ROOT / "benchmarks" / "results" / f"fast_path_cpu_{args.model}.md"
    # rows run before (another --only) are kept, each with the settings it ran with
    results = [r for r in (json.loads(target.with_suffix(".json").read_text()) if target.with_suffix(".json").exists()
                           else []) if r["row"] not in rows]
    for name, flags in rows.items():
        print(f"{name} ...", flush=True)
        results.append(run_row(name, flags, args, out_dir))
        print(json.dumps(results[-1]), flush=True)
    import torch

    lines = [f"# Fast path on the CPU: `{args.model}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared: other jobs ran "
             f"at the same time, compare rows, not absolute numbers), torch {torch.__version__}, "
             f"`--threads {args.threads}`, float32.", "",
             "Each row: `python benchmarks/fast_path.py --model MODEL --frames F --streams S --streams-frames N "
             "--threads T [--quantize-row] [--only 'ROW;...']` with the row's settings (columns F, S × N, T).", "",
             "One stream (frames F: the window ending at the last mark; a 15-token reply every 3 s) and S concurrent "
             "streams × N frames in one continuous batch (S = 0: not run).", "",
             "| row | flags | F | S × N | T | frames/s | silent p50 / p99 ms | speaking p50 / p99 ms | peak RSS MiB | "
             "S streams: frames/s (all) | frame p50 / p99 ms | wall s (incl. compile) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = list(ROWS) + ["int8 weights (eager)", "int8 weights, compiled"]
    for r in sorted(results, key=lambda r: order.index(r["row"]) if r["row"] in order else len(order)):
        streams = f"{r.get('streams', 4)} × {r.get('streams_frames', 60)}" if r.get("streams", 4) else "—"
        lines.append(f"| {r['row']} | `{r['flags'] or '—'}` | {r.get('frames', '200,600')} | {streams} | "
                     f"{r.get('threads', 1)} | "
                     f"{fmt(r['fps'])} | {fmt(r['silent_p50'])} / "
                     f"{fmt(r['silent_p99'])} | {fmt(r['reply_p50'])} / {fmt(r['reply_p99'])} | {fmt(r['peak_mb'], 0)} "
                     f"| {fmt(r['multi_fps'])} | {fmt(r['multi_p50'])} / {fmt(r['multi_p99'])} | {r['wall_s']} |")
    target.write_text("\n".join(lines) + "\n")
    (target.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()

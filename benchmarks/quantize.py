"""Quantization on CPU: speed, memory and decision quality of none / int8 / int4, with θ re-calibrated.

For each scheme, in its own process (so its memory is its own): the model loads and is quantized
(:func:`livecue.model.quantize.quantize_model`), then

- speed: one forced-schedule stream (:func:`livecue.bench.run_stream`: random frame features, a 15-token reply
  every 3 s) of ``--frames`` frames: frames/s, p50 / p99 latency of silent frames, p50 of reply frames;
- memory: the process RSS after loading + quantizing + streaming (psutil), and the LM's weight bytes;
- quality: p(silence) at every stream position, teacher-forced, of the full-precision and the quantized model on
  the calibration records (θ re-chosen there: :func:`livecue.eval.calibrate.match_speak_rate`) and on held-out
  records (:func:`livecue.eval.calibrate.compare_decisions`: decision agreement with full precision and speak F1,
  at the full-precision θ and at the re-calibrated θ).

``--lm-head`` also quantizes lm_head (the row ``int8+lm_head``), to measure what it does to the decisions.

Usage (benchmarks/results/quantize_cpu.md has the commands that made the recorded numbers):

    python benchmarks/quantize.py --model default --calibration CAL.jsonl --held-out TEST.jsonl \\
        --calibration-cache CAL_CACHE --held-out-cache TEST_CACHE --frames 200 --threads 1
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import Any

ROWS = ("none", "int8", "int4", "int8+lm_head")


def measure(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """One row, in this process."""
    import psutil
    import torch

    from livecue.bench import BenchConfig, run_stream
    from livecue.eval.calibrate import compare_decisions, match_speak_rate
    from livecue.eval.narration import make_dataset, score_records
    from livecue.inference.engine import StreamEngine
    from livecue.model.load import load_model
    from livecue.model.quantize import quantize_model, quantized_layers

    torch.set_num_threads(args.threads)
    scheme, _, extra = row.partition("+")
    started = time.perf_counter()
    model, tok = load_model(args.model, device="cpu", quantize="none")
    if scheme != "none":
        quantize_model(model, scheme, lm_head=extra == "lm_head")
    load_s = time.perf_counter() - started
    weight_mb = sum(_nbytes(t) for t in list(model.lm.parameters()) + list(model.lm.buffers())) / 2**20
    window = max(1, args.frames // 2)
    stream, _ = run_stream(StreamEngine(model, tok), BenchConfig(marks=[args.frames], window=window, speak_every=3.0,
                                                                 reply_tokens=15, seed=0))
    mark = stream.marks[-1]
    rss_mb = psutil.Process().memory_info().rss / 2**20
    out: dict[str, Any] = {"row": row, "model": args.model, "load_and_quantize_s": round(load_s, 2),
                           "quantized_layers": len(quantized_layers(model.lm)), "lm_weights_mb": round(weight_mb, 1),
                           "rss_mb": round(rss_mb, 1), "fps": round(stream.fps, 2),
                           "silent_p50_ms": mark.silent_p50_ms, "silent_p99_ms": mark.silent_p99_ms,
                           "reply_p50_ms": mark.reply_p50_ms, "frames": stream.frames}
    theta = model.cfg.stream.threshold
    scores: dict[str, list] = {}
    for part, data, cache in (("cal", args.calibration, args.calibration_cache),
                              ("held", args.held_out, args.held_out_cache)):
        dataset = make_dataset(model, tok, data, feature_cache=cache)
        scores[part] = score_records(model, tok, dataset, [])
    del model
    gc.collect()
    full, _ = load_model(args.model, device="cpu", quantize="none")
    reference = {}
    for part, data, cache in (("cal", args.calibration, args.calibration_cache),
                              ("held", args.held_out, args.held_out_cache)):
        reference[part] = score_records(full, tok, make_dataset(full, tok, data, feature_cache=cache), [])
    match = match_speak_rate(reference["cal"], scores["cal"], theta)
    held = compare_decisions(reference["held"], scores["held"], theta, match.threshold)
    out.update({"theta": theta, "theta_recalibrated": match.threshold, "calibration": match.to_dict(),
                "held_out": held.to_dict()})
    return out


def _nbytes(t: Any) -> int:
    """Bytes of a tensor, a torchao quantized tensor's inner tensors counted."""
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None and type(t).__module__.startswith("torchao"):
        names, _ = inner()
        return sum(_nbytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--calibration", required=True, help="records JSONL θ is re-calibrated on")
    p.add_argument("--held-out", required=True, help="records JSONL the decisions are compared on")
    p.add_argument("--calibration-cache", default=None, help="feature cache of the calibration videos")
    p.add_argument("--held-out-cache", default=None, help="feature cache of the held-out videos")
    p.add_argument("--frames", type=int, default=200, help="frames of the speed stream")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: measure this row, print JSON
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return 0
    rows = []
    for row in args.rows.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", row]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{row}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        c, h = r["calibration"], r["held_out"]
        print(f"{row:<13} {r['fps']:7.2f} fps  p50 {r['silent_p50_ms']:.1f} ms  p99 {r['silent_p99_ms']:.1f} ms  "
              f"RSS {r['rss_mb']:.0f} MB  LM {r['lm_weights_mb']:.0f} MB  θ {r['theta']:.3f}->"
              f"{r['theta_recalibrated']:.3f}  cal rate {c['reference_rate']:.3f}/{c['rate_before']:.3f}/"
              f"{c['rate_after']:.3f}  held agree {h['agreement_before']:.3f}->{h['agreement_after']:.3f}  "
              f"held F1 {h['f1_reference']:.3f}/{h['f1_before']:.3f}/{h['f1_after']:.3f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

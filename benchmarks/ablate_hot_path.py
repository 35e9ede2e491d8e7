"""Ablation of the streaming hot-path changes on the tiny preset (results/cpu_tiny.md, "What was removed").

Each call runs one variant in a fresh process and prints one JSON line; alternate variants across calls so that
they see the same machine load:

    python benchmarks/ablate_hot_path.py stream VARIANT FRAMES MEMORY     # e.g. stream all 2000 unbounded
    python benchmarks/ablate_hot_path.py overhead VARIANT                 # engine/pure ratio, 1000 frames x 3

VARIANT switches changes off by monkeypatching the old behaviour back in: ``none`` (all off), ``attention_only``,
``cache_only``, ``no_ids`` (attention + cache, per-forward id tensors), ``all`` (current code). For the code before
the changes, run ``all`` from a checkout of that commit.
"""

from __future__ import annotations

import json
import os
import sys

import torch


def patch(variant: str) -> None:
    """Put back the old behaviour of the changes that ``variant`` switches off."""
    import livecue.inference.engine as engine_mod
    from livecue.model import lm as lm_api

    if variant in ("none", "cache_only"):
        engine_mod.use_stream_attention = lambda lm: False
    if variant in ("none", "attention_only"):
        from transformers import DynamicCache

        lm_api.new_cache = lambda lm: DynamicCache(config=lm.config)
    if variant in ("none", "no_ids"):
        engine_mod.StreamEngine.ids_tensor = lambda self, ids: torch.tensor([ids], device=self.model.device)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    mode, variant = argv[0], argv[1]
    if variant not in ("none", "attention_only", "cache_only", "no_ids", "all"):
        raise SystemExit(f"unknown variant {variant!r}")
    patch(variant)
    from livecue.bench import (
        BenchConfig,
        load_bench_model,
        measure_overhead,
        run_stream,
    )
    from livecue.inference.engine import StreamEngine

    engine = StreamEngine(*load_bench_model("tiny"))
    load = round(os.getloadavg()[0], 2)
    if mode == "overhead":
        o = measure_overhead(engine, BenchConfig(), 1000, 3)
        out = {"ratio": o.ratio, "ratio_min": o.ratio_min, "ratio_cpu": o.ratio_cpu, "engine_s": o.engine_s,
               "pure_s": o.pure_s}
    else:
        frames, memory = int(argv[2]), argv[3]
        r, _ = run_stream(engine, BenchConfig(marks=[frames], memory=memory, window=200))
        m = r.marks[-1]
        out = {"frames": frames, "memory": memory, "seconds": r.seconds, "cpu_s": r.cpu_seconds,
               "silent_p50_ms": m.silent_p50_ms, "reply_p50_ms": m.reply_p50_ms}
    print(json.dumps({"mode": mode, "variant": variant, "load": load, **out}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

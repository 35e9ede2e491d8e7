"""``livecue eval --task ovo|streamingbench|proactive --data PATH --out DIR [--judge SPEC]``: the online-video
benchmarks (OVO-Bench, StreamingBench, ProactiveVideoQA-style) run through the stream engine, resumably, and sharded
across processes with ``accelerate launch --num_processes N -m livecue.cli eval --task ...`` (each process runs its
share of the items on its own device; the main process merges the records and prints the table).

:mod:`livecue.commands.eval` hands these tasks here after parsing. The annotation file (or directory) is read and the
judge built before the model loads, so a bad ``--data`` or ``--judge`` fails at once with one line. Per-item results
go to ``OUT/items.jsonl`` as they finish (a rerun continues where a killed one stopped), the summary to
``OUT/results.json`` and ``OUT/results.md`` (:mod:`livecue.eval.online.run`); the table is printed, progress goes to
stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..inference.options import StreamOptions
from ..progress import Progress
from ._common import check_device, distributed, has_accelerate, load_from_args

ONLINE_TASKS = ("ovo", "streamingbench", "proactive")
_NOT_ONLINE = ("calibrate", "save_threshold", "feature_cache", "categories", "grid", "max_frames", "compile", "kv_pool")


def run_online(args: Any, overrides: list[str]) -> int:
    """Run ``args.task`` (one of :data:`ONLINE_TASKS`) on ``args.data`` with the model the arguments name."""
    from ..eval.online.formats import load_items
    from ..eval.online.judge import judge_from_spec
    from ..eval.online.run import Shard, format_markdown, run_items

    used = [f"--{name.replace('_', '-')}" for name in _NOT_ONLINE if getattr(args, name, None)]
    if used:
        raise ValueError(f"{', '.join(used)} do(es) not apply to the online benchmark {args.task}")
    items = load_items(args.task, args.data)
    out = Path(args.out)
    judge = judge_from_spec(args.judge, cache=out / "judge_cache.jsonl") if args.judge else None
    auto = args.device == "auto" and has_accelerate()  # launched: each process on its own device
    rank, world, device, barrier, is_main = distributed(None if auto else check_device(args.device))
    args.device = str(device)
    shard = Shard(rank, world, barrier if world > 1 else None)
    model, tok = load_from_args(args, overrides)
    options = StreamOptions.from_args(args)  # --threshold, --memory
    tag = f"[{rank}] " if world > 1 else ""
    with Progress(desc=f"{tag}eval {args.task}", unit="item", enabled=None if is_main else False) as bar:
        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.set_total(total)
            bar.update(done - bar.n)

        result = run_items(model, tok, items, out_dir=out, judge=judge, progress=progress,
                           max_items=args.max_samples, options=options, shard=shard)
    if not result["main"]:
        return 0
    print(format_markdown(result["summary"], result["errors"]))
    print(f"{result['scored']}/{result['items']} items scored ({result['resumed']} from an earlier run"
          f"{f' on this process of {world}' if world > 1 else ''}, {len(result['errors'])} errors); wrote "
          f"{result['files']['results.json']} and {result['files']['results.md']}")
    if result["plots"]:
        print(f"timing plots: {len(result['plots'])} in {Path(result['plots'][0]).parent}")
    elif "plots_skipped" in result:
        print(f"livecue eval: no timing plots: {result['plots_skipped']}", file=sys.stderr)
    return 0

"""``livecue eval --task ovo|streamingbench|proactive --data PATH --out DIR [--judge SPEC]``: the online-video
benchmarks (OVO-Bench, StreamingBench, ProactiveVideoQA-style) run through the stream engine, resumably.

:mod:`livecue.commands.eval` hands these tasks here after parsing. The annotation file (or directory) is read and the
judge built before the model loads, so a bad ``--data`` or ``--judge`` fails at once with one line. Per-item results
go to ``OUT/items.jsonl`` as they finish (a rerun continues where a killed one stopped), the summary to
``OUT/results.json`` and ``OUT/results.md`` (:mod:`livecue.eval.online.run`); the table is printed, progress goes to
stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..inference.options import StreamOptions
from ..progress import Progress
from ._common import load_from_args

ONLINE_TASKS = ("ovo", "streamingbench", "proactive")
_NOT_ONLINE = ("calibrate", "save_threshold", "feature_cache", "categories", "grid", "max_frames", "compile", "kv_pool")


def run_online(args: Any, overrides: list[str]) -> int:
    """Run ``args.task`` (one of :data:`ONLINE_TASKS`) on ``args.data`` with the model the arguments name."""
    from ..eval.online.formats import load_items
    from ..eval.online.judge import judge_from_spec
    from ..eval.online.run import format_markdown, run_items

    used = [f"--{name.replace('_', '-')}" for name in _NOT_ONLINE if getattr(args, name, None)]
    if used:
        raise ValueError(f"{', '.join(used)} do(es) not apply to the online benchmark {args.task}")
    items = load_items(args.task, args.data)
    out = Path(args.out)
    judge = judge_from_spec(args.judge, cache=out / "judge_cache.jsonl") if args.judge else None
    model, tok = load_from_args(args, overrides)
    options = StreamOptions.from_args(args)  # --threshold, --memory
    with Progress(desc=f"eval {args.task}", unit="item") as bar:
        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.set_total(total)
            bar.update(done - bar.n)

        result = run_items(model, tok, items, out_dir=out, judge=judge, progress=progress,
                           max_items=args.max_samples, options=options)
    print(format_markdown(result["summary"], result["errors"]))
    print(f"{result['scored']}/{result['items']} items scored ({result['resumed']} from an earlier run, "
          f"{len(result['errors'])} errors); wrote {result['files']['results.json']} and "
          f"{result['files']['results.md']}")
    return 0

"""``livecue eval --model M --data D --task T``: the paper's metrics, free-running evaluation, θ calibration.

Prints a table, writes ``OUT/eval-<task>.json`` (means, per-sample results, notes, calibration) and PNG plots:
``narration`` → ``OUT/narration-timing.png``; ``free`` → ``OUT/free-timeline.png``; ``lta`` → ``OUT/lta-ed.png``;
``--calibrate`` → ``OUT/calibration.png``. ``--task ovo|streamingbench|proactive``: online-video benchmarks, the
model deciding when to answer (:mod:`livecue.commands.eval_online`: ``OUT/items.jsonl``, resumable per item,
``OUT/results.json`` / ``results.md``). Progress (per record, stream or sample; the θ sweep per run) goes to
stderr (:mod:`livecue.progress`), results to stdout.

The θ recommendation states what it rests on (streams, decisions, reference replies) and how stable it is (a
bootstrap over streams; :mod:`livecue.eval.calibrate`). ``--save-threshold`` writes θ into the checkpoint's config
and records the run (metrics, the command, the recommendation's basis) in the checkpoint's model card facts
(``livecue_card.json``, :func:`livecue.model.card_files.record_evaluation`), which refreshes its ``README.md``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..inference.options import OPTIONS, FastPath, StreamOptions, check_option
from ..progress import Progress
from ._common import add_model_argument, load_from_args, nonnegative_int, parser, positive_int, split_overrides
from .eval_online import ONLINE_TASKS

TASKS = ("narration", "free", "coin-step", "coin-next", "coin-task", "coin-procedure", "coin-taskprocedure", "lta")


def build_parser():
    p = parser("eval", "Evaluate a LIVE model on streaming-dialogue records: teacher-forced narration metrics "
                       "(SPEC §7), free-running streaming, COIN, Ego4D LTA; calibrate the speak threshold θ.")
    add_model_argument(p)
    p.add_argument("--data", required=True, help="records JSONL (videos resolved relative to it)")
    p.add_argument("--task", choices=TASKS + ONLINE_TASKS, default="narration", help="default: %(default)s; "
                   "ovo, streamingbench, proactive: online benchmarks (--data: their annotation file or directory)")
    p.add_argument("--judge", default=None, help="online benchmarks' open answers: openai:MODEL[@URL] or local:MODEL")
    StreamOptions.add_arguments(p, ("threshold",))
    p.add_argument("--batch-size", type=positive_int(1024), default=1,
                   help="records per teacher-forced forward (narration), in [1, 1024]")
    p.add_argument("--max-samples", type=positive_int(), default=None, help="evaluate only the first N records (>= 1)")
    p.add_argument("--out", default="eval_results", help="output directory (default: %(default)s)")
    p.add_argument("--feature-cache", default=None, help="read frame features from a 'livecue encode' cache")
    p.add_argument("--tolerance", type=nonnegative_int(10_000), default=1,
                   help="free-running speak-timing tolerance in frames (±), in [0, 10000]")
    p.add_argument("--no-similarity", action="store_true", help="skip the all-MiniLM-L6-v2 similarity (free)")
    StreamOptions.add_arguments(p, ("memory",))  # free-running: what bounded memory costs in quality
    FastPath.add_arguments(p)  # free-running: the engine's fast path
    p.add_argument("--max-frames", type=nonnegative_int(), default=None,
                   help="free: stream at most this many frames per record (default: the model's "
                        "stream.max_num_frames, the training cut); 0 streams whole records")
    p.add_argument("--calibrate", action="store_true", help="sweep θ (narration/free) and recommend one")
    p.add_argument("--grid", default=None, help="θ values for --calibrate, comma-separated (default 0.05..0.95)")
    p.add_argument("--free-samples", type=nonnegative_int(), default=8,
                   help="records for the free-running part of --calibrate (one run per θ each; 0 skips it; >= 0)")
    p.add_argument("--save-threshold", action="store_true",
                   help="write the recommended θ into the checkpoint's livecue_config.json and record the run in its "
                        "model card (needs --calibrate)")
    p.add_argument("--max-new-tokens", type=positive_int(8192), default=512,
                   help="generation cap for COIN/LTA answers, in [1, 8192]")
    p.add_argument("--beams", type=positive_int(64), default=5, help="LTA: K beams (returned sequences), in [1, 64]")
    p.add_argument("--z", type=positive_int(1000), default=20, help="LTA: horizon Z, in [1, 1000]")
    p.add_argument("--categories", default=None, help="COIN category list (JSON list or one per line)")
    return p


def main(argv: list[str]) -> int:
    command = shlex.join(["livecue", "eval", *argv])
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    if args.task in ONLINE_TASKS:
        from .eval_online import run_online

        return run_online(args, overrides)
    _check_args(args)

    model, tok = load_from_args(args, overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"task": args.task, "model": str(args.adapter or args.model), "data": str(args.data),
                              "command": command, "notes": []}
    plots: list[tuple[str, Any]] = []
    if args.task in ("narration", "free"):
        metrics = _stream_task(args, model, tok, report, plots)
    else:
        metrics = _benchmark_task(args, model, tok, report, plots)
    report["metrics"] = metrics
    if args.save_threshold:
        _save_threshold(args.model, report)
    written = []
    for name, draw in plots:
        try:
            written.append(str(draw(out / name)))
        except ImportError as e:
            report["notes"].append(f"plot {name} skipped: {e}")
    report["plots"] = written
    path = out / f"eval-{args.task}.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False, default=_jsonable))
    print(format_table(f"livecue eval: {args.task} ({len(report.get('samples', []))} samples)", metrics))
    if "calibration" in report:
        print(format_calibration(report["calibration"]))
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"wrote {path}" + (f" and {len(written)} plot(s)" if written else ""))
    return 0


def _check_args(args: Any) -> None:
    if args.judge:
        raise ValueError(f"--judge scores open answers of {', '.join(ONLINE_TASKS)}, not of {args.task}")
    if args.calibrate and args.task not in ("narration", "free"):
        raise ValueError(f"--calibrate sweeps the speak threshold: it applies to narration and free, not {args.task}")
    if args.grid is not None:
        _grid(args.grid)
    if args.save_threshold and not args.calibrate:
        raise ValueError("--save-threshold writes the recommended θ: add --calibrate")
    if (args.memory not in (None, "unbounded") or args.max_frames is not None) and args.task != "free":
        raise ValueError(f"--memory and --max-frames apply to the free-running task, not {args.task}")
    if not Path(args.data).is_file():
        raise FileNotFoundError(f"records file not found: {args.data!r}")
    if args.feature_cache:
        from ..data.features import FeatureCache

        FeatureCache(args.feature_cache)  # its index is read and checked before the model loads
    if args.categories and not Path(args.categories).is_file():
        raise FileNotFoundError(f"category list not found: {args.categories!r}")
    if args.save_threshold:
        if args.adapter:
            raise ValueError("--save-threshold writes into a livecue checkpoint: it cannot update an --adapter")
        from ..eval.calibrate import check_checkpoint

        check_checkpoint(args.model)  # before the model loads and the sweep runs


def _grid(text: str | None) -> tuple[float, ...]:
    from ..eval.calibrate import DEFAULT_GRID

    if not text:
        return DEFAULT_GRID
    try:
        grid = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--grid must be comma-separated numbers, got {text!r}") from None
    try:
        grid = tuple(check_option("threshold", g) for g in grid)  # θ's one checker
        if not grid:
            raise ValueError("no θ value")
    except ValueError:
        raise ValueError(f"--grid must be comma-separated θ values in {OPTIONS['threshold'].check.range}, "
                         f"got {text!r}") from None
    if len(grid) > 1000:
        raise ValueError(f"--grid takes at most 1000 θ values, got {len(grid)}")
    return grid


@contextmanager
def _progress(desc: str, unit: str) -> Iterator[Callable[..., None]]:
    """A :class:`~livecue.progress.Progress` on stderr, driven by the evaluators' ``progress(done, total, **postfix)``
    callback."""
    with Progress(desc=desc, unit=unit) as bar:
        def callback(done: int, total: int, **postfix: Any) -> None:
            if bar.total != total:
                bar.set_total(total)
            bar.update(done - bar.n, **postfix)

        yield callback


def _stream_task(args: Any, model: Any, tok: Any, report: dict[str, Any], plots: list) -> dict[str, Any]:
    from ..eval import calibrate as cal_mod
    from ..eval import plots as plot_mod
    from ..eval.narration import make_dataset, narration_metrics, score_records

    theta = model.cfg.stream.threshold if args.threshold is None else args.threshold
    report["threshold"] = theta
    grid = _grid(args.grid) if args.calibrate else ()
    scores = None
    if args.task == "narration" or args.calibrate:
        dataset = make_dataset(model, tok, args.data, max_samples=args.max_samples, feature_cache=args.feature_cache)
        with _progress("eval narration" if args.task == "narration" else "score θ grid", "record") as progress:
            scores = score_records(model, tok, dataset, [theta, *grid], batch_size=args.batch_size,
                                   progress=progress)
    if args.task == "narration":
        result = narration_metrics(scores, theta)
        report["samples"] = result.samples
        metrics = dict(result.means)
        diffs = [d for s in result.samples for d in s["diffs"]]
        fps = float(dataset.records[0]["fps"])
        plots.append(("narration-timing.png", lambda p: plot_mod.plot_frame_diffs(diffs, fps, p)))
    else:
        from ..eval.free import evaluate_free

        options = StreamOptions.from_args(args)
        with _progress("eval free", "stream") as progress:
            free = evaluate_free(model, tok, args.data, threshold=theta, tolerance=args.tolerance,
                                 max_samples=args.max_samples, feature_cache=args.feature_cache,
                                 similarity=not args.no_similarity, progress=progress,
                                 memory=options.memory_policy(), max_frames=args.max_frames,
                                 fast=FastPath.from_args(args))
        report["memory"] = options.memory or "unbounded"
        report["samples"] = free.samples
        report["notes"] += free.notes
        metrics = dict(free.means, tolerance_frames=args.tolerance)
        plots.append(("free-timeline.png", lambda p: plot_mod.plot_timelines(free.samples, p)))
    if args.calibrate:
        sweep = _progress("θ sweep", "run") if args.free_samples else nullcontext()  # θ values × free streams
        with sweep as progress:
            cal = cal_mod.calibrate(model, tok, args.data, grid=grid, max_samples=args.max_samples,
                                    free_samples=args.free_samples, tolerance=args.tolerance,
                                    feature_cache=args.feature_cache, scores=scores, progress=progress)
        report["calibration"] = {"rows": cal.rows, "recommended": cal.recommended, "current": cal.current,
                                 "rule": cal.rule, **(cal.confidence.to_dict() if cal.confidence else {})}
        if cal.confidence is not None:
            report["calibration"]["summary"] = cal.confidence.summary()
        metrics["recommended_threshold"] = cal.recommended
        plots.append(("calibration.png",
                      lambda p: plot_mod.plot_calibration(cal.rows, cal.recommended, p, current=cal.current)))
    return metrics


def _save_threshold(checkpoint: str, report: dict[str, Any]) -> None:
    """Write the recommended θ into the checkpoint and record this run (title, command, metrics, the θ's basis) in
    its model card facts (:func:`livecue.model.card_files.record_evaluation`), which refreshes its card."""
    from ..eval.calibrate import save_threshold
    from ..model.card import Evaluation
    from ..model.card_files import record_evaluation

    cal = report["calibration"]
    cal["saved_to"] = str(save_threshold(checkpoint, cal["recommended"]))
    metrics = {k: v for k, v in report["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    notes = [f"θ = {cal['recommended']:.2f} saved (was {cal['current']:.3g}); {cal.get('summary', '')}".rstrip("; "),
             *([cal["note"]] if cal.get("note") else []), *report["notes"]]
    evaluation = Evaluation(title=f"{report['task']} on {report['data']}", command=report["command"],
                            metrics=metrics, notes=notes)
    cal["recorded_in"] = str(record_evaluation(checkpoint, evaluation))


def _benchmark_task(args: Any, model: Any, tok: Any, report: dict[str, Any], plots: list) -> dict[str, Any]:
    from ..eval import plots as plot_mod
    from ..eval.benchmarks import evaluate_coin, evaluate_lta, read_list

    if args.task == "lta":
        with _progress("eval lta", "sample") as progress:
            res = evaluate_lta(model, tok, args.data, beams=args.beams, z=args.z, max_new_tokens=args.max_new_tokens,
                               max_samples=args.max_samples, feature_cache=args.feature_cache, progress=progress)
        report["curves"] = res.curves
        plots.append(("lta-ed.png", lambda p: plot_mod.plot_ed_curves(res.curves, p)))
    else:
        cats = read_list(args.categories) if args.categories else None
        with _progress(f"eval {args.task}", "sample") as progress:
            res = evaluate_coin(model, tok, args.data, args.task, categories=cats,
                                max_new_tokens=args.max_new_tokens, max_samples=args.max_samples,
                                feature_cache=args.feature_cache, progress=progress)
    report["samples"] = res.samples
    report["notes"] += res.notes
    return dict(res.means)


def format_table(title: str, metrics: dict[str, Any]) -> str:
    """A two-column text table of metric -> value."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()]
    width = max([len(k) for k, _ in rows] + [6])
    vwidth = max([len(v) for _, v in rows] + [5])
    line = "-" * (width + vwidth + 3)
    body = "\n".join(f"{k:<{width}}   {v:>{vwidth}}" for k, v in rows)
    return f"{title}\n{line}\n{'metric':<{width}}   {'value':>{vwidth}}\n{line}\n{body}\n{line}"


def format_calibration(cal: dict[str, Any]) -> str:
    """The recommendation as printed: θ, the current θ and the rule; what it rests on; the confidence note."""
    lines = [f"recommended θ = {cal['recommended']:.2f} (current {cal['current']:.3g}; rule: {cal['rule']})"]
    if cal.get("summary"):
        lines.append(f"  {cal['summary']}")
    if cal.get("note"):
        lines.append(f"  note: {cal['note']}")
    if cal.get("saved_to"):
        lines.append(f"saved θ to {cal['saved_to']} (the run is recorded in {cal['recorded_in']})")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)

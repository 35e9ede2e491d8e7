"""``livecue bench``: streaming speed and memory versus stream length, with a forced speak schedule (issue 10).

``--capacity`` instead finds the most concurrent real-time streams one engine sustains at a p99 frame-latency target
(:func:`livecue.bench.find_capacity`, docs/capacity.md).

Results (markdown tables, the summary lines) go to stdout and ``--json``; progress (frames streamed per memory policy,
the overhead repeats, the ``--streams`` runs, the capacity levels) goes to stderr through :mod:`livecue.progress`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from ..inference.options import OPTIONS, FastPath
from ..progress import Progress
from ._common import (
    FPS,
    MAX_SECONDS,
    QUANTIZE_CHOICES,
    SEED,
    announce_random,
    check_device,
    nonnegative_float,
    nonnegative_int,
    parser,
    positive_float,
    positive_int,
    split_overrides,
)

log = logging.getLogger(__name__)
MAX_FRAMES = 100_000_000  # a frame mark (about 1.6 years of stream at 2 fps)
MAX_STREAMS = 4096
P99 = positive_float(MAX_SECONDS)
CAPACITY_SECONDS = positive_float(MAX_SECONDS)
SERVER_MAX_BATCH = 16  # the server scheduler's per-round cap (livecue.serve.app.create_app's max_batch)
CAPACITY_OPTIONS = {"p99": 0.5, "capacity_fps": None, "capacity_max": 256, "capacity_seconds": 20.0,
                    "capacity_max_batch": SERVER_MAX_BATCH}  # their defaults, applied with --capacity


def _int_list(limit: int):
    """An argparse ``type=`` for comma-separated integers in [1, limit] (at least one)."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(x.strip().replace("_", "")) for x in text.split(",") if x.strip()]
        except ValueError:
            values = []
        if not values or not all(1 <= v <= limit for v in values):
            raise argparse.ArgumentTypeError(f"must be comma-separated integers in [1, {limit}], got {text!r}")
        return values

    parse.__name__ = "list"
    return parse


def _memory_list(text: str) -> list[str]:
    """``--memory``: one memory policy or several comma-separated, each checked by the ``--memory`` option's one
    checker (the same message as every other command's ``--memory``)."""
    specs = [OPTIONS["memory"].check(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"must name at least one memory policy, got {text!r}")
    return specs


_memory_list.__name__ = "memory"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def markdown_table(result) -> str:
    """A markdown table of a :class:`~livecue.bench.StreamResult`'s windows (one row per mark, reached or not)."""
    mem = "RSS" if result.memory_kind == "rss" else "allocated"
    header = (f"| frame | stream time | frames/s | silent p50 / p99 ms | reply p50 / p99 ms (n) | cached tokens "
              f"| evicted | {mem} MiB | peak {mem} MiB |")
    rows = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in result.marks:
        rows.append(f"| {m.frame:,} | {_clock(m.frame, result.stream_fps)} | {m.fps:.1f} | {_ms(m.silent_p50_ms)} / "
                    f"{_ms(m.silent_p99_ms)} | {_ms(m.reply_p50_ms)} / {_ms(m.reply_p99_ms)} ({m.replies}) "
                    f"| {m.cache_tokens:,} | {m.evicted_tokens:,} | {m.mem_mb:,.0f} | {m.peak_mem_mb:,.0f} |")
    for mark in result.missing_marks:
        rows.append(f"| {mark:,} | {_clock(mark, result.stream_fps)} | not reached | | | | | | |")
    return "\n".join(rows)


def _clock(frame: int, fps: float) -> str:
    seconds = round(frame / fps)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _join(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def build_parser() -> argparse.ArgumentParser:
    p = parser("bench", "Stream random frames through the engine with a forced speak schedule (a reply of exactly "
                        "--reply-tokens tokens every --speak-every seconds) and report frames/s, per-frame and reply "
                        "latency p50/p99, cached tokens and peak memory in windows ending at each --frames mark, "
                        "plus the engine's end-to-end time over pure model time.")
    p.add_argument("--model", default="tiny", help="preset, config file (e.g. configs/bench/"
                                                   "llama3_8b_siglip_random.yaml) or checkpoint; default: tiny")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="override the dtype")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                   help="weight-only quantization of the LM (torchao: pip install 'livecue[quant]'): int8, int4, "
                        "fp8 (a float8 GPU only), none (docs/quantization.md)")
    FastPath.add_arguments(p)
    p.add_argument("--frames", type=_int_list(MAX_FRAMES), default=[100, 1000],
                   help=f"marks, e.g. 100,1000,3600,14400 (each in [1, {MAX_FRAMES}])")
    p.add_argument("--speak-every", type=nonnegative_float(86400.0), default=3.0,
                   help="seconds between forced replies, in [0, 86400] (0: never)")
    p.add_argument("--reply-tokens", type=positive_int(4096), default=15,
                   help="exact tokens per forced reply, in [1, 4096]")
    p.add_argument(OPTIONS["memory"].flag, type=_memory_list, default=["unbounded"], metavar="SPEC[,SPEC...]",
                   help=f"{OPTIONS['memory'].help.split(' (default')[0]}; several comma-separated are measured one "
                        "after the other (default: unbounded)")
    p.add_argument("--pixels", action="store_true", help="feed random pixels through the vision tower")
    p.add_argument("--window", type=positive_int(MAX_FRAMES), default=120,
                   help="frames per statistics window, >= 1 (default: 120)")
    p.add_argument("--threads", type=positive_int(1024), default=None,
                   help="torch CPU threads, in [1, 1024] (default: torch's choice)")
    p.add_argument("--time-budget", type=nonnegative_float(1e7), default=None,
                   help="stop a stream after this many seconds, in [0, 1e+07]")
    p.add_argument("--overhead-frames", type=nonnegative_int(MAX_FRAMES), default=1000,
                   help="frames of the engine-vs-pure-forward comparison (0: skip)")
    p.add_argument("--overhead-repeats", type=positive_int(100), default=3,
                   help="interleaved repeats of that comparison, in [1, 100]")
    p.add_argument("--streams", type=_int_list(MAX_STREAMS), default=[],
                   help="also run N concurrent streams for each N listed (e.g. 1,4,16,32), stepped together (one "
                        "forward per round) and one at a time, for --streams-frames ticks")
    p.add_argument("--streams-frames", type=positive_int(MAX_FRAMES), default=120,
                   help="ticks of each --streams run, >= 1 (default: 120)")
    c = p.add_argument_group("capacity planning (docs/capacity.md)")
    c.add_argument("--capacity", action="store_true",
                   help="instead of the stream marks and the overhead comparison, find the most concurrent "
                        "real-time streams one engine sustains with p99 frame latency <= --p99 (levels of 1, 2, "
                        "4, ... streams, then bisection)")
    c.add_argument("--p99", type=P99, default=None, metavar="SECONDS",
                   help=f"frame-latency target in seconds, from a frame's arrival to its events, in {P99.range} "
                        "(default: 0.5)")
    c.add_argument("--capacity-fps", type=FPS, default=None, metavar="FPS",
                   help=f"frames per second of each stream, in {FPS.range} (default: the model's stream fps)")
    c.add_argument("--capacity-max", type=positive_int(MAX_STREAMS), default=None, metavar="N",
                   help=f"most streams tried, in [1, {MAX_STREAMS}] (default: 256)")
    c.add_argument("--capacity-seconds", type=CAPACITY_SECONDS, default=None, metavar="SECONDS",
                   help=f"seconds of stream per level, in {CAPACITY_SECONDS.range} (default: 20; real time: "
                        "each level lasts about that long)")
    c.add_argument("--capacity-max-batch", type=positive_int(MAX_STREAMS), default=None, metavar="N",
                   help=f"streams in flight per engine round at most, in [1, {MAX_STREAMS}] (default: "
                        f"{SERVER_MAX_BATCH}, as livecue serve)")
    p.add_argument("--seed", type=SEED, default=0, help=f"seed of the random frames, in {SEED.range}")
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also log each mark's window latency and cached tokens as it is reached")
    return p


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    p = build_parser()
    args = p.parse_args(argv)
    given = [f"--{k.replace('_', '-')}" for k in CAPACITY_OPTIONS if getattr(args, k) is not None]
    if given and not args.capacity:
        p.error(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --capacity")
    for key, default in CAPACITY_OPTIONS.items():
        setattr(args, key, default if getattr(args, key) is None else getattr(args, key))
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json must be a file, got the directory {args.json!r}")
    args.device = check_device(args.device or "cpu")  # a device this machine lacks: one line, before the model
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():  # log lines (-v, the time budget) go above a terminal's progress bar
        return _run(args, argv, overrides)


def _run(args: argparse.Namespace, argv: list[str], overrides: list[str]) -> int:
    """The benchmark itself: results to stdout (and ``--json``), progress to stderr."""
    import torch

    from ..bench import (
        WARMUP,
        BenchConfig,
        environment,
        load_bench_model,
        measure_overhead,
        run_stream,
        run_streams,
    )
    from ..inference.engine import StreamEngine

    memories = args.memory
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.time()
    with announce_random("livecue bench", args.model):
        model, tokenizer = load_bench_model(args.model, args.device, args.dtype, overrides, quantize=args.quantize)
    print(f"model built in {time.time() - began:.1f} s")
    fast = FastPath.from_args(args)
    if fast.pooled:  # a slot for every stream the run holds at once (the single stream + the largest --streams)
        fast = dataclasses.replace(fast, pool_slots=max(fast.pool_slots, max(args.streams, default=0) + 1))
    engine = StreamEngine(model, tokenizer, fast=fast)
    env = environment(model, model.device)
    env["fast_path"] = dataclasses.asdict(fast)
    env["command"] = "livecue bench " + " ".join(argv + [f"--{o}" for o in overrides])
    print(f"{env['model']} ({env['lm_params'] / 1e6:,.1f}M LM + {env['vision_params'] / 1e6:,.1f}M vision params, "
          f"{env['dtype']}) on {env['device']}, {env['threads']} threads, load average {env['loadavg']}")
    out: dict = {"environment": env, "streams": [], "overhead": None}
    if args.capacity:
        out["capacity"] = _capacity(engine, args)
    for memory in [] if args.capacity else memories:
        cfg = BenchConfig(marks=args.frames, speak_every=args.speak_every, reply_tokens=args.reply_tokens,
                          memory=memory, pixels=args.pixels, window=args.window, seed=args.seed,
                          time_budget=args.time_budget)
        load = os.getloadavg()
        with Progress(cfg.marks[-1], desc=f"bench stream (memory {memory})", unit="frame") as bar:
            result, _ = run_stream(engine, cfg, progress=bar)
        print(f"\n### memory {memory}: {result.frames:,} frames in {result.seconds:.1f} s = {result.fps:.1f} "
              f"frames/s, {result.replies} replies of {result.reply_tokens} tokens, peak {result.memory_kind} "
              f"{result.peak_mem_mb:,.0f} MiB (load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after)\n")
        print(markdown_table(result))
        out["streams"].append({**result.to_dict(), "loadavg_before": list(load), "loadavg_after":
                               list(os.getloadavg())})
    if args.overhead_frames > 0 and not args.capacity:
        cfg = BenchConfig(marks=[args.overhead_frames], speak_every=args.speak_every,
                          reply_tokens=args.reply_tokens, memory=memories[0], seed=args.seed)
        load = os.getloadavg()
        with Progress(args.overhead_frames * args.overhead_repeats, desc="bench overhead", unit="frame") as bar:
            over = measure_overhead(engine, cfg, args.overhead_frames, args.overhead_repeats, progress=bar)
        print(f"\n### engine overhead ({over.frames:,} frames, {over.forwards:,} forwards, memory {cfg.memory}, "
              f"{args.overhead_repeats} repeats): end-to-end / pure model time = {over.ratio:.3f} (median wall), "
              f"{over.ratio_min:.3f} (min wall), {over.ratio_cpu:.3f} (median CPU time); engine wall s "
              f"{_join(over.engine_s)}, pure wall s {_join(over.pure_s)}; load average {load[0]:.2f})")
        out["overhead"] = {**over.to_dict(), "memory": cfg.memory, "loadavg_before": list(load),
                           "loadavg_after": list(os.getloadavg())}
    if args.streams:
        cfg = BenchConfig(marks=[args.streams_frames], speak_every=args.speak_every, reply_tokens=args.reply_tokens,
                          memory=memories[0], pixels=args.pixels, seed=args.seed)
        rows = []
        out["multi_stream"] = []
        modes = ("continuous", "batched", "sequential")
        total = len(modes) * sum(args.streams) * (args.streams_frames + WARMUP)  # frames over every run
        with Progress(total, desc="bench streams", unit="frame") as bar:
            for n in args.streams:
                res = {}
                for mode in modes:
                    bar.update(0, streams=n, mode=mode)
                    load = os.getloadavg()
                    res[mode] = run_streams(engine, cfg, n, args.streams_frames, mode=mode, progress=bar)
                    out["multi_stream"].append({**res[mode].to_dict(), "loadavg_before": list(load)})
                c, b, q = (res[m] for m in modes)
                rows.append(f"| {n} | {c.fps:.1f} | {b.fps:.1f} | {q.fps:.1f} | {c.fps / q.fps:.2f}x | "
                            f"{c.realtime_streams:.1f} | {c.frame_p50_ms:.1f} / {c.frame_p99_ms:.1f} | "
                            f"{b.frame_p50_ms:.1f} / {b.frame_p99_ms:.1f} | {q.frame_p50_ms:.1f} / "
                            f"{q.frame_p99_ms:.1f} | {c.peak_mem_mb:,.0f} |")
                log.info("streams %d done", n)
        print(f"\n### {len(args.streams)} concurrency levels, {args.streams_frames} frames per stream, a "
              f"{args.reply_tokens}-token reply every {args.speak_every:g} s per stream (staggered), memory "
              f"{cfg.memory}\n")
        print("| streams | continuous frames/s (all streams) | lockstep frames/s | one-at-a-time frames/s | speed-up "
              f"(continuous) | {model.cfg.stream.fps:g}-fps streams sustained (continuous) | frame latency p50 / p99 "
              f"ms: continuous | lockstep | one at a time | peak {'RSS' if c.memory_kind == 'rss' else 'allocated'} "
              "MiB |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print("\n".join(rows))
    env["loadavg_end"] = list(os.getloadavg())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nresults written to {args.json}")
    return 0


def _capacity(engine, args: argparse.Namespace) -> dict:
    """``--capacity``: the search (:func:`livecue.bench.find_capacity`), its table on stdout; its JSON."""
    from ..bench import BenchConfig, find_capacity

    cfg = BenchConfig(marks=[1], speak_every=args.speak_every, reply_tokens=args.reply_tokens, memory=args.memory[0],
                      pixels=args.pixels, seed=args.seed)
    fps = args.capacity_fps or engine.model.cfg.stream.fps
    load = os.getloadavg()
    with Progress(None, desc=f"bench capacity (p99 <= {args.p99:g} s)", unit="frame") as bar:
        result = find_capacity(engine, cfg, args.p99, fps=fps, seconds=args.capacity_seconds,
                               max_streams=args.capacity_max, max_batch=args.capacity_max_batch, progress=bar)
    print(capacity_table(result, args))
    return {**result.to_dict(), "memory": cfg.memory, "pixels": cfg.pixels, "speak_every": cfg.speak_every,
            "reply_tokens": cfg.reply_tokens, "loadavg_before": list(load), "loadavg_after": list(os.getloadavg())}


def capacity_table(result, args: argparse.Namespace) -> str:
    """The heading line and a markdown table of a :class:`~livecue.bench.CapacityResult`, levels in the order tried."""
    more = "+" if result.capped else ""
    replies = (f"a {args.reply_tokens}-token reply every {args.speak_every:g} s per stream" if args.speak_every > 0
               else "no replies (silent frames only)")
    lines = [f"\n### capacity: {result.capacity}{more} concurrent {result.stream_fps:g}-fps streams on one engine "
             f"with p99 frame latency <= {result.target_p99_ms:.0f} ms ({result.seconds:g} s of stream per level, "
             f"{replies}, memory {args.memory[0]}, at most {result.max_batch} streams in flight); {result.reason}\n",
             "| streams | frames | offered / achieved frames/s | frame latency p50 / p99 / max ms | backlog growth ms "
             "| replies | CPU s / wall s | peak MiB | sustained |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|:---|"]
    for lv in result.levels:
        at_least = ">= " if lv.aborted else ""
        lines.append(f"| {lv.streams} | {lv.frames:,} | {lv.offered_fps:.1f} / {lv.achieved_fps:.1f} | {at_least}"
                     f"{_ms(lv.p50_ms)} / {at_least}{_ms(lv.p99_ms)} / {at_least}{_ms(lv.max_ms)} | "
                     f"{_ms(lv.backlog_growth_ms)} | {lv.replies} | {lv.cpu_seconds:.1f} / {lv.seconds:.1f} | "
                     f"{lv.peak_mem_mb:,.0f} | "
                     f"{'yes' if lv.passed else 'no'}: {lv.reason} |")
    return "\n".join(lines)

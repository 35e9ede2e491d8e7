"""``livecue world``: generate the built-in streaming world (rendered videos + streaming-dialogue records)."""

from __future__ import annotations

import time

from ._common import FPS, SEED, int_range, nonnegative_float, parser, positive_float, positive_int

MAX_RESOLUTION = 4096
MAX_STREAM_BYTES = 4 * 2**30  # one stream's frames are rendered in memory before they are written


def main(argv: list[str]) -> int:
    """Write ``--n`` streams of ``--split`` to ``--out`` and print a one-line summary.

    Raises:
        ValueError: a bad option value (one line naming it).
    """
    p = parser(
        "world", epilog=None,
        description="Generate the built-in streaming world: procedurally rendered videos of shapes that appear, "
                    "move, change colour, grow, shrink, collide and disappear, with narration at event frames and "
                    "user questions with correct answers. Writes OUT/videos/<id>.<format> and OUT/<split>.jsonl.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=positive_int(1_000_000), required=True, help="number of streams, in [1, 1000000]")
    p.add_argument("--seed", type=SEED, required=True, help=f"base seed in {SEED.range} (splits never share streams)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="default: %(default)s")
    p.add_argument("--resolution", type=int_range(16, MAX_RESOLUTION), default=224,
                   help=f"frame size in pixels (even), in [16, {MAX_RESOLUTION}]; default: %(default)s")
    p.add_argument("--fps", type=FPS, default=2.0, help=f"frames per second, in {FPS.range}; default: %(default)s")
    p.add_argument("--duration", type=positive_float(86400.0), default=30.0,
                   help="seconds per stream, in (0, 86400]; default: %(default)s")
    p.add_argument("--format", choices=["mp4", "npy"], default="mp4",
                   help="mp4 video (libx264, crf 18) or npy arrays of exact pixels; default: %(default)s")
    p.add_argument("--events-per-second", type=nonnegative_float(100.0), default=0.25,
                   help="mean event rate, in [0, 100]; default: %(default)s")
    p.add_argument("--questions", type=nonnegative_float(1000.0), default=2.0,
                   help="mean user questions per stream, in [0, 1000]; default: %(default)s")
    p.add_argument("--max-objects", type=positive_int(10), default=3,
                   help="most objects on screen, in [1, 10]; default: %(default)s")
    p.add_argument("--noise", type=nonnegative_float(128.0), default=0.0,
                   help="pixel noise std (0-255 scale), in [0, 128]; default: %(default)s")
    p.add_argument("--distractors", action="store_true",
                   help="drifting striped background and camera shake (motion that is never narrated)")
    p.add_argument("--resume", action="store_true", help="keep videos already written by an earlier run")
    p.add_argument("--benchmark", choices=["ovo", "streamingbench", "proactive"], default=None,
                   help="write the streams as an online-video benchmark in its public format instead (test streams; "
                        "livecue eval --task BENCHMARK --data the printed path; docs/evaluation.md)")
    args = p.parse_args(argv)

    from ..data.world import WorldConfig, generate_world

    try:
        cfg = WorldConfig(resolution=args.resolution, fps=args.fps, duration=args.duration,
                          event_rate=args.events_per_second, question_rate=args.questions,
                          max_objects=args.max_objects, max_initial_objects=min(2, args.max_objects),
                          noise=args.noise, texture=0.35 if args.distractors else 0.0,
                          drift=1.5 if args.distractors else 0.0,
                          jitter=max(1, args.resolution // 112) if args.distractors else 0)
    except ValueError as e:  # name the command-line option rather than the dataclass field
        raise ValueError(str(e).replace("WorldConfig.event_rate", "--events-per-second")
                         .replace("WorldConfig.question_rate", "--questions")
                         .replace("WorldConfig.max_objects", "--max-objects")
                         .replace("WorldConfig.", "--")) from None
    size = cfg.num_frames * cfg.resolution**2 * 3
    if size > MAX_STREAM_BYTES:
        raise ValueError(f"one stream would hold {cfg.num_frames:,} frames of {cfg.resolution}x{cfg.resolution} px "
                         f"({size / 2**30:.1f} GiB in memory, at most {MAX_STREAM_BYTES / 2**30:g}): lower --duration, "
                         "--fps or --resolution")
    start = time.perf_counter()
    if args.benchmark:
        from ..eval.online.world import world_to_benchmark

        if args.resume:
            raise ValueError("--resume applies to plain world streams, not --benchmark")
        if args.format != "mp4":
            raise ValueError("--benchmark writes video files that livecue eval streams like any video: use "
                             "--format mp4 (the default)")
        anno = world_to_benchmark(args.out, args.benchmark, args.n, args.seed, cfg=cfg, video_format=args.format)
        print(f"wrote {args.n} world streams as {args.benchmark} data: {anno} "
              f"(livecue eval --task {args.benchmark} --data {anno}) in {time.perf_counter() - start:.1f}s")
        return 0
    records = generate_world(args.out, args.n, args.seed, split=args.split, cfg=cfg, video_format=args.format,
                             resume=args.resume)
    events = sum(len(r["meta"]["events"]) for r in records)
    questions = sum(len(r["meta"]["questions"]) for r in records)
    print(f"wrote {len(records)} {args.split} streams ({len(records) * cfg.num_frames} frames at "
          f"{cfg.resolution}px, {events} events, {questions} questions) to {args.out}: "
          f"videos/*.{args.format} + {args.split}.jsonl in {time.perf_counter() - start:.1f}s")
    return 0

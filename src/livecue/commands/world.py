"""``livecue world``: generate the built-in streaming world (rendered videos + streaming-dialogue records)."""

from __future__ import annotations

import argparse
import time


def main(argv: list[str]) -> int:
    """Write ``--n`` streams of ``--split`` to ``--out`` and print a one-line summary.

    Raises:
        ValueError: a bad option value (one line naming it).
    """
    p = argparse.ArgumentParser(
        prog="livecue world",
        description="Generate the built-in streaming world: procedurally rendered videos of shapes that appear, "
                    "move, change colour, grow, shrink, collide and disappear, with narration at event frames and "
                    "user questions with correct answers. Writes OUT/videos/<id>.<format> and OUT/<split>.jsonl.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n", type=int, required=True, help="number of streams")
    p.add_argument("--seed", type=int, required=True, help="base seed (splits never share streams)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="default: %(default)s")
    p.add_argument("--resolution", type=int, default=224, help="frame size in pixels (even); default: %(default)s")
    p.add_argument("--fps", type=float, default=2.0, help="frames per second; default: %(default)s")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per stream; default: %(default)s")
    p.add_argument("--format", choices=["mp4", "npy"], default="mp4",
                   help="mp4 video (libx264, crf 18) or npy arrays of exact pixels; default: %(default)s")
    p.add_argument("--events-per-second", type=float, default=0.25, help="mean event rate; default: %(default)s")
    p.add_argument("--questions", type=float, default=2.0, help="mean user questions per stream; default: %(default)s")
    p.add_argument("--max-objects", type=int, default=3, help="most objects on screen; default: %(default)s")
    p.add_argument("--noise", type=float, default=0.0, help="pixel noise std (0-255 scale); default: %(default)s")
    p.add_argument("--distractors", action="store_true",
                   help="drifting striped background and camera shake (motion that is never narrated)")
    p.add_argument("--resume", action="store_true", help="keep videos already written by an earlier run")
    args = p.parse_args(argv)

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")

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
    start = time.perf_counter()
    records = generate_world(args.out, args.n, args.seed, split=args.split, cfg=cfg, video_format=args.format,
                             resume=args.resume)
    events = sum(len(r["meta"]["events"]) for r in records)
    questions = sum(len(r["meta"]["questions"]) for r in records)
    print(f"wrote {len(records)} {args.split} streams ({len(records) * cfg.num_frames} frames at "
          f"{cfg.resolution}px, {events} events, {questions} questions) to {args.out}: "
          f"videos/*.{args.format} + {args.split}.jsonl in {time.perf_counter() - start:.1f}s")
    return 0

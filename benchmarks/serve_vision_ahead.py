"""The server scheduler with the vision stage ahead of the LM (``vision_ahead=True``) versus inline (``False``).

In process, no network: a :class:`~livecue.serve.scheduler.Scheduler` on one model (its worker thread, and the vision
thread when on), ``--sessions`` sessions of ``--frames`` random uint8 frames each (``--size`` pixels: the vision
tower resizes them, as it does a client's decoded JPEGs). Two phases per mode, the modes alternating ``--repeats``
times (the machine's load drifts):

- **saturated**: every frame queued before the worker starts (queue as long as the stream, nothing dropped), each
  session closed gracefully; frames/s = frames watched / seconds from start to the last ``closed``.
- **paced**: each session pushes a frame every 1/``--fps`` seconds of wall clock (all sessions at once); per-frame
  latency = frame pushed -> its first event (silence, or the first token of its reply), as in ``serve_soak.py``.

Events are checked equal between the modes (texts, decisions, token ids, frame order; ``p_silence`` to 1e-4: frames
join the batch a round later with the overlap on, so other sessions share their rounds and move its last digits).

    python benchmarks/serve_vision_ahead.py --model tiny --sessions 4 --frames 40 --threads 2
    python benchmarks/serve_vision_ahead.py --model default --sessions 4 --frames 20 --fps 1 --threads 2
    python benchmarks/serve_vision_ahead.py ... --out benchmarks/results/serve_vision_ahead.md   # append a section
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def make_frames(n: int, size: tuple[int, int], seed: int) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def difference(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> str | None:
    """The first difference between two runs' events (``p_silence`` compared to 1e-4: sessions batched side by side
    in other rounds move it in its last float digits), or None."""
    for name in want:
        if len(got[name]) != len(want[name]):
            return f"{name}: {len(got[name])} events, not {len(want[name])}"
        for a, b in zip(got[name], want[name]):
            pa, pb = a.get("p_silence"), b.get("p_silence")
            if ({k: v for k, v in a.items() if k != "p_silence"} != {k: v for k, v in b.items() if k != "p_silence"}
                    or (pa is None) != (pb is None) or (pa is not None and abs(pa - pb) > 1e-4)):
                return f"{name}: {a} != {b}"
    return None


def run(engine, ahead: bool, args: argparse.Namespace, videos: list[list], paced: bool) -> dict:
    """One phase in one mode: its frames/s, first-event latencies and every session's events (less wall-clock
    fields)."""
    from livecue.inference.options import StreamOptions
    from livecue.serve.protocol import Limits, Open
    from livecue.serve.scheduler import Scheduler

    sched = Scheduler(engine, limits=Limits(queue_size=max(8, args.frames)), max_sessions=args.sessions,
                      max_batch=args.sessions, vision_ahead=ahead)
    lock = threading.Lock()
    pushed: dict[tuple[str, float], float] = {}
    first: dict[tuple[str, float], float] = {}
    events: dict[str, list[dict]] = {}

    def emit_for(name: str):
        def emit(ev: dict) -> None:
            now = time.perf_counter()
            with lock:
                events[name].append({k: v for k, v in ev.items() if k != "latency"})  # less the wall-clock field
                if ev["type"] in ("silence", "reply_delta", "reply") and ev.get("t") is not None:
                    first.setdefault((name, ev["t"]), now)
        return emit

    options = StreamOptions() if args.threshold is None else StreamOptions(threshold=args.threshold)
    sessions = []
    for i in range(args.sessions):
        events[f"s{i}"] = []
        sessions.append((f"s{i}", sched.open(Open(options, silence=True), emit_for(f"s{i}"))))
    interval = 1.0 / (args.fps if paced else engine.model.cfg.stream.fps)
    begin = time.perf_counter()
    if not paced:
        for name, s in sessions:
            for j, frame in enumerate(videos[int(name[1:])]):
                sched.push_frame(s, j * interval, frame)
            sched.close(s)
        begin = time.perf_counter()
        sched.start()
    else:
        sched.start()
        begin = time.perf_counter()
        for j in range(args.frames):
            delay = begin + j / args.fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            for name, s in sessions:
                with lock:
                    pushed[(name, j * interval)] = time.perf_counter()
                sched.push_frame(s, j * interval, videos[int(name[1:])][j])
        for _, s in sessions:
            sched.close(s)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        with lock:
            if all(ev and ev[-1]["type"] == "closed" for ev in events.values()):
                break
        time.sleep(0.005)
    end = time.perf_counter()
    sched.stop()
    closed = [ev[-1] for ev in events.values() if ev and ev[-1]["type"] == "closed"]
    if len(closed) != args.sessions:
        raise SystemExit(f"{'ahead' if ahead else 'inline'}: not every session closed within {args.timeout:g} s")
    watched = sum(c["frames"] for c in closed)
    latencies = [(first[k] - t0) * 1000 for k, t0 in pushed.items() if k in first]
    return {"fps": watched / (end - begin), "watched": watched, "dropped": sum(c["dropped"] for c in closed),
            "errors": sum(c["errors"] for c in closed), "replies": sum(c["replies"] for c in closed),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "events": events,
            "jobs": sched._vision.jobs if sched._vision is not None else 0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="preset, checkpoint or 'default' (default: tiny)")
    p.add_argument("--sessions", type=int, default=4)
    p.add_argument("--frames", type=int, default=40, help="frames per session")
    p.add_argument("--size", default="360x640", help="frame size HxW in pixels (default 360x640)")
    p.add_argument("--fps", type=float, default=2.0, help="paced phase: frames per second per session")
    p.add_argument("--threshold", type=float, default=None, help="θ of every session (default: the model's)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=2, help="each mode this many times, alternating")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a phase may take")
    p.add_argument("--out", type=Path, default=None, help="append the markdown section to this file")
    args = p.parse_args(argv)
    try:
        h, w = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, e.g. 360x640, got {args.size!r}")
    if min(args.sessions, args.frames, args.threads, args.repeats) < 1 or args.fps <= 0:
        p.error("--sessions, --frames, --threads, --repeats must be >= 1 and --fps > 0")

    import torch

    from livecue.inference.engine import StreamEngine
    from livecue.model.load import load_model

    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, device="cpu")
    engine = StreamEngine(model, tokenizer)
    videos = [make_frames(args.frames, (h, w), seed) for seed in range(args.sessions)]
    load = os.getloadavg()
    run(engine, True, argparse.Namespace(**{**vars(args), "frames": 2}), [v[:2] for v in videos], paced=False)  # warm
    rows: list[tuple[str, str, dict]] = []
    reference: dict[str, dict] = {}
    for r in range(args.repeats):
        for ahead in (False, True):
            for paced in (False, True):
                res = run(engine, ahead, args, videos, paced)
                phase = "paced" if paced else "saturated"
                if phase in reference and (diff := difference(res["events"], reference[phase])):
                    raise SystemExit(f"events differ between the modes ({phase}, repeat {r + 1}): {diff}")
                reference.setdefault(phase, res["events"])
                rows.append(("ahead" if ahead else "inline", phase, res))
                print(f"repeat {r + 1} {rows[-1][0]:6s} {phase:9s} {res['fps']:7.2f} frames/s  p50 "
                      f"{res['p50']:7.1f} ms  p99 {res['p99']:7.1f} ms  watched {res['watched']} dropped "
                      f"{res['dropped']} replies {res['replies']}", file=sys.stderr, flush=True)
    section = report(args, model, rows, load)
    print(section)
    if args.out is not None:
        with args.out.open("a") as f:
            f.write(section + "\n")
    return 0


def report(args: argparse.Namespace, model, rows: list[tuple[str, str, dict]], load: tuple[float, ...]) -> str:
    import torch

    cmd = "python benchmarks/serve_vision_ahead.py " + " ".join(sys.argv[1:])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    lines = [f"## `--model {args.model}`: {args.sessions} sessions × {args.frames} frames ({args.size} px)", "",
             f"Command: `{cmd}`", "",
             f"- machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__}, "
             f"{args.threads} intra-op thread(s); Python {platform.python_version()}",
             f"- model: {args.model} ({params:.1f} M parameters, {model.cfg.frame_resolution} px vision input, "
             f"{model.cfg.frame_num_tokens} tokens a frame); θ "
             f"{'the model’s' if args.threshold is None else args.threshold}; paced phase at {args.fps:g} fps per "
             f"session; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after the run (2 cores shared "
             f"with other jobs: compare rows of one run)", "",
             "| repeat | vision | saturated frames/s | paced p50 ms | paced p99 ms | watched / dropped / replies "
             "(saturated; paced) |",
             "|---|---|---|---|---|---|"]
    by = {(i // 4, mode, phase): res for i, (mode, phase, res) in enumerate(rows)}
    for r in range(args.repeats):
        for mode in ("inline", "ahead"):
            sat, pac = by[(r, mode, "saturated")], by[(r, mode, "paced")]
            lines.append(f"| {r + 1} | {mode} | {sat['fps']:.2f} | {pac['p50']:.1f} | {pac['p99']:.1f} | "
                         f"{sat['watched']} / {sat['dropped']} / {sat['replies']}; "
                         f"{pac['watched']} / {pac['dropped']} / {pac['replies']} |")
    if args.repeats > 1:
        for mode in ("inline", "ahead"):
            sat, p50, p99 = ([by[(r, mode, phase)][key] for r in range(args.repeats)]
                             for phase, key in (("saturated", "fps"), ("paced", "p50"), ("paced", "p99")))
            lines.append(f"| median | {mode} | {statistics.median(sat):.2f} | {statistics.median(p50):.1f} | "
                         f"{statistics.median(p99):.1f} | |")
    lines.append("")
    lines.append("Every session's events (texts, decisions, token ids, frame order) were the same in both modes "
                 "(p_silence to 1e-4).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

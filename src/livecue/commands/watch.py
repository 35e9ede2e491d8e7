"""``livecue watch SOURCE``: stream a video file, image directory, webcam or network stream through a model.

Prints each reply and answer with its stream time as it happens, a live progress line on a terminal, and a summary
at the end; ``--jsonl`` writes every event (one JSON object per line).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from ._common import add_model_argument, load_from_args, parser, split_overrides


def build_parser() -> argparse.ArgumentParser:
    p = parser("watch", "Watch a video stream and narrate it: the model decides by itself when to speak.")
    p.add_argument("source", help="a video file, a directory of images, a webcam (/dev/video0, webcam:0), a "
                                  "stream URL (rtsp://, http(s)://, .m3u8) or a sample video (sample:bikes)")
    add_model_argument(p)
    p.add_argument("--fps", type=float, default=None, help="frames per second fed to the model (default: the "
                                                           "model's stream fps)")
    p.add_argument("--threshold", type=float, default=None,
                   help="θ: stay silent iff p(silence) >= θ; higher = more talkative (default: the model's)")
    p.add_argument("--system", default=None, help="system prompt (default: the model's)")
    p.add_argument("--query", action="append", default=[], metavar="TEXT", help="ask TEXT (repeatable)")
    p.add_argument("--at", action="append", type=float, default=[], metavar="SECONDS",
                   help="stream time of the matching --query (default 0)")
    p.add_argument("--realtime", action="store_true", help="run on the wall clock, dropping frames when behind")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--max-reply-tokens", type=int, default=None, help="cap on reply length")
    p.add_argument("--temperature", type=float, default=0.0, help="reply sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="penalise repeated reply tokens")
    p.add_argument("--batch-size", type=int, default=8, help="frames encoded per vision batch")
    p.add_argument("--max-lag", type=float, default=1.0, help="real time: drop frames this far behind (seconds)")
    p.add_argument("--jsonl", default=None, metavar="FILE", help="write every event as JSON lines to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--server", default=None, metavar="URL", help="send the frames to a remote `livecue serve` "
                   "(http://HOST:PORT) instead of loading a model here; model and sampling options are the server's")
    p.add_argument("--token", default=None, help="the server's token (default: $LIVECUE_TOKEN)")
    return p


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    if len(args.at) > len(args.query):
        raise ValueError(f"{len(args.at)} --at values for {len(args.query)} --query values")
    if args.max_frames is not None and args.max_frames <= 0:
        raise ValueError(f"--max-frames must be positive, got {args.max_frames}")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
    jsonl = _open_jsonl(args.jsonl)
    if args.server:
        from .watch_remote import watch_remote

        return watch_remote(args, jsonl)

    from ..data.samples import resolve as resolve_sample
    from ..inference.decide import SamplingConfig
    from ..inference.engine import StreamEngine
    from ..inference.pipeline import Pipeline
    from ..inference.sources import open_source

    sampling = SamplingConfig(args.temperature, args.top_p, args.repetition_penalty)
    model, tokenizer = load_from_args(args, overrides)
    fps = args.fps or model.cfg.stream.fps
    source = open_source(resolve_sample(args.source), fps, max_frames=args.max_frames)
    engine = StreamEngine(model, tokenizer, sampling=sampling)
    session = engine.reset(args.system, threshold=args.threshold, max_reply_tokens=args.max_reply_tokens)
    for i, text in enumerate(args.query):
        session.add_query(text, at=args.at[i] if i < len(args.at) else 0.0)
    pipeline = Pipeline(session, source, realtime=args.realtime, batch_size=args.batch_size, max_lag=args.max_lag)
    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    print(f"watching {getattr(source, 'name', args.source)} at {fps:g} fps with {model.cfg.name} "
          f"(θ = {session.threshold:g}){' in real time' if args.realtime else ''}", flush=True)
    interrupted = False
    failure: str | None = None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop())
    try:
        for event in pipeline.run():
            if jsonl is not None:
                jsonl.write(event.to_json() + "\n")
            line = _format(event)
            if line:
                progress.clear()
                print(line, flush=True)
            progress.show(pipeline.stats)
    except KeyboardInterrupt:
        interrupted = True
        pipeline.stop()
    except (ValueError, OSError) as e:  # the source failed mid-stream: record it, then summarise
        failure = f"{e}"
        if jsonl is not None:
            from ..inference.events import Error

            jsonl.write(Error(t=pipeline.stats.last_t, message=failure).to_json() + "\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.clear()
        if jsonl is not None:
            jsonl.close()
    s = pipeline.stats
    print(f"{'interrupted: ' if interrupted else ''}{s.frames} frames ({s.last_t:.1f} s of stream) in "
          f"{s.wall:.1f} s: {s.fps:.1f} FPS, {s.replies} replies, {s.answers} answers, {s.dropped} dropped"
          + (f"; events in {args.jsonl}" if args.jsonl else ""), flush=True)
    if failure is not None:
        print(f"livecue watch: error: {failure}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def _open_jsonl(path: str | None) -> TextIO | None:
    if path is None:
        return None
    file = Path(path)
    if file.parent and not file.parent.exists():
        raise FileNotFoundError(f"--jsonl directory does not exist: {str(file.parent)!r}")
    return file.open("w", encoding="utf-8")


def _format(event) -> str | None:
    kind = event.type
    if kind == "reply":
        return f"[{event.t:8.1f}s] {event.text}"
    if kind == "answer":
        return f"[{event.t:8.1f}s] Q: {event.query}\n{'':11} A: {event.text}"
    if kind == "dropped":
        return f"[{event.t:8.1f}s] ({event.count} frames dropped: {event.reason})"
    if kind == "error":
        return f"[{event.t:8.1f}s] error: {event.message}"
    return None


class _Progress:
    """A one-line progress display on stderr (terminals only), refreshed at most 5 times a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._shown = False

    def show(self, stats) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.2:
            return
        self._last = now
        sys.stderr.write(f"\r  frames {stats.frames}  t {stats.last_t:.1f}s  {stats.fps:.1f} FPS  "
                         f"dropped {stats.dropped}  replies {stats.replies}\x1b[K")
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))


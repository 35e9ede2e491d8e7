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

from ._common import (
    FPS,
    STREAM_TIME,
    UNIT_INTERVAL,
    add_model_argument,
    finite_float,
    load_from_args,
    nonnegative_float,
    parser,
    positive_float,
    positive_int,
    split_overrides,
    text,
)

MAX_REPLY_TOKENS = 4096  # --max-reply-tokens cap (a reply always ends at eos or this many tokens)


def build_parser() -> argparse.ArgumentParser:
    from ..serve.protocol import Limits  # pure (no torch): the server's text caps apply here too

    p = parser("watch", "Watch a video stream and narrate it: the model decides by itself when to speak.")
    p.add_argument("source", help="a video file, a directory of images, a webcam (/dev/video0, webcam:0), a "
                                  "stream URL (rtsp://, http(s)://, .m3u8) or a sample video (sample:bikes)")
    add_model_argument(p)
    p.add_argument("--fps", type=FPS, default=None, help=f"frames per second fed to the model, in {FPS.range} "
                                                         "(default: the model's stream fps)")
    p.add_argument("--threshold", type=UNIT_INTERVAL, default=None,
                   help="θ in [0, 1]: stay silent iff p(silence) >= θ; higher = more talkative (default: the model's)")
    p.add_argument("--system", type=text(Limits.max_system_chars, "system prompt"), default=None,
                   help=f"system prompt, at most {Limits.max_system_chars:,} characters (default: the model's)")
    p.add_argument("--query", action="append", type=text(Limits.max_text_chars, "query"), default=[],
                   metavar="TEXT", help=f"ask TEXT (repeatable; at most {Limits.max_text_chars:,} characters)")
    p.add_argument("--at", action="append", type=STREAM_TIME, default=[], metavar="SECONDS",
                   help=f"stream time of the matching --query, in {STREAM_TIME.range} (default 0)")
    p.add_argument("--realtime", action="store_true", help="run on the wall clock, dropping frames when behind")
    p.add_argument("--max-frames", type=positive_int(), default=None, help="stop after this many frames (>= 1)")
    p.add_argument("--max-reply-tokens", type=positive_int(MAX_REPLY_TOKENS), default=None,
                   help=f"cap on reply length, in [1, {MAX_REPLY_TOKENS}] (default: the model's)")
    p.add_argument("--temperature", type=nonnegative_float(100.0), default=0.0,
                   help="reply sampling temperature in [0, 100] (0 = greedy)")
    p.add_argument("--top-p", type=finite_float(0.0, 1.0, lo_open=True), default=1.0,
                   help="nucleus sampling mass in (0, 1]")
    p.add_argument("--repetition-penalty", type=positive_float(100.0), default=1.0,
                   help="penalise repeated reply tokens, in (0, 100] (1 = off)")
    p.add_argument("--batch-size", type=positive_int(1024), default=8,
                   help="frames encoded per vision batch, in [1, 1024]")
    p.add_argument("--max-lag", type=positive_float(3600.0), default=1.0,
                   help="real time: drop frames this far behind, in seconds, in (0, 3600]")
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
    jsonl = _open_jsonl(args.jsonl)
    if args.server:
        from .watch_remote import watch_remote

        return watch_remote(args, jsonl)

    from ..data.samples import resolve as resolve_sample
    from ..inference.decide import SamplingConfig
    from ..inference.engine import StreamEngine
    from ..inference.pipeline import Pipeline
    from ..inference.sources import open_source

    try:
        sampling = SamplingConfig(args.temperature, args.top_p, args.repetition_penalty)
        model, tokenizer = load_from_args(args, overrides)
        fps = model.cfg.stream.fps if args.fps is None else args.fps
        source = open_source(resolve_sample(args.source), fps, max_frames=args.max_frames)
    except BaseException:
        if jsonl is not None:
            jsonl.close()
        raise
    engine = StreamEngine(model, tokenizer, sampling=sampling)
    session = engine.reset(args.system, threshold=args.threshold, max_reply_tokens=args.max_reply_tokens)
    for i, query in enumerate(args.query):
        session.add_query(query, at=args.at[i] if i < len(args.at) else 0.0)
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
        failure = " ".join(str(e).split()) or type(e).__name__
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
    try:
        return file.open("w", encoding="utf-8")
    except OSError as e:
        raise OSError(f"--jsonl: cannot write {path!r}: {e.strerror or e}") from None


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


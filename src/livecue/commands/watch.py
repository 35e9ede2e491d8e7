"""``livecue watch SOURCE``: stream a video file, image directory, webcam or network stream through a model.

Prints each reply and answer with its stream time as it happens, a live progress line on a terminal, and a summary
at the end; ``--jsonl`` writes every event (one JSON object per line). The default model on anything but a rendered
world video says once, on stderr, that it knows only the built-in world (:mod:`.world_notice`).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TextIO

from ..inference.events import Error
from ..inference.options import MAX_QUERY_CHARS, FastPath, StreamOptions
from ._common import (
    STREAM_TIME,
    add_model_argument,
    announce_random,
    check_model_args,
    load_from_args,
    parser,
    positive_float,
    positive_int,
    split_overrides,
    text,
)
from .display import Progress, format_event, format_summary
from .watch_remote import watch_remote
from .world_notice import notify_world_only


def build_parser() -> argparse.ArgumentParser:
    p = parser("watch", "Watch a video stream and narrate it: the model decides by itself when to speak.")
    p.add_argument("source", help="a video file, a directory of images, a webcam (/dev/video0, webcam:0), a "
                                  "stream URL (rtsp://, http(s)://, .m3u8) or a sample video (sample:bikes)")
    add_model_argument(p)
    StreamOptions.add_arguments(p)
    FastPath.add_arguments(p)
    p.add_argument("--query", action="append", type=text(MAX_QUERY_CHARS, "query"), default=[],
                   metavar="TEXT", help=f"ask TEXT (repeatable; at most {MAX_QUERY_CHARS:,} characters)")
    p.add_argument("--at", action="append", type=STREAM_TIME, default=[], metavar="SECONDS",
                   help=f"stream time of the matching --query, in {STREAM_TIME.range} (default 0)")
    p.add_argument("--realtime", action="store_true", help="run on the wall clock, dropping frames when behind")
    p.add_argument("--max-frames", type=positive_int(), default=None, help="stop after this many frames (>= 1)")
    p.add_argument("--batch-size", type=positive_int(1024), default=8,
                   help="frames encoded per vision batch, in [1, 1024]")
    p.add_argument("--max-lag", type=positive_float(3600.0), default=1.0,
                   help="real time: drop frames this far behind, in seconds, in (0, 3600]")
    p.add_argument("--jsonl", default=None, metavar="FILE", help="write every event as JSON lines to FILE")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--server", default=None, metavar="URL", help="send the frames to a remote `livecue serve` "
                   "(http://HOST:PORT) instead of loading a model here; the stream options go to the server in "
                   "'open' (--memory is the server's own)")
    p.add_argument("--token", default=None, help="the server's token (default: $LIVECUE_TOKEN)")
    return p


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    options = StreamOptions.from_args(args)
    fast = FastPath.from_args(args)
    if len(args.at) > len(args.query):
        raise ValueError(f"{len(args.at)} --at values for {len(args.query)} --query values")
    if args.server and options.memory is not None:
        raise ValueError("--memory is the server's with --server: the server bounds each session itself "
                         "(livecue serve --memory)")
    source_spec = check_source(args.source)  # cheap checks first: a typo never costs a model load
    if not args.server:
        check_model_args(args)
    jsonl = open_jsonl(args.jsonl)
    if args.server:
        return watch_remote(args, options, jsonl)

    from ..inference.engine import StreamEngine
    from ..inference.pipeline import Pipeline
    from ..inference.sources import open_source

    try:
        with announce_random(args.command, args.adapter or args.model):  # said once the source opened
            model, tokenizer = load_from_args(args, overrides, announce=False)
            fps = options.fps or model.cfg.stream.fps
            source = open_source(source_spec, fps, max_frames=args.max_frames)
    except BaseException:
        if jsonl is not None:
            jsonl.close()
        raise
    notify_world_only(args.command, model.cfg.name, source_spec)  # the default model on other video: once, stderr
    session = StreamEngine(model, tokenizer, options, fast=fast).session()  # unset: the model's stream.*
    for i, query in enumerate(args.query):
        session.add_query(query, at=args.at[i] if i < len(args.at) else 0.0)
    pipeline = Pipeline(session, source, realtime=args.realtime, batch_size=args.batch_size, max_lag=args.max_lag)
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
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
            line = format_event(event)
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
            jsonl.write(Error(t=pipeline.stats.last_t, message=failure).to_json() + "\n")
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.clear()
        if jsonl is not None:
            jsonl.close()
    print(format_summary(pipeline.stats, interrupted=interrupted, jsonl=args.jsonl), flush=True)
    if failure is not None:
        print(f"livecue watch: error: {failure}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0


def check_source(spec: str) -> str:
    """The source to open (``sample:NAME`` resolved to its file), refused in one line now if it names a file or
    folder that does not exist, before the model loads. Cameras, URLs and camera indices pass as they are (opening
    them says what is wrong). The messages are :func:`~livecue.inference.sources.open_source`'s."""
    from ..data.samples import resolve as resolve_sample
    from ..data.video import is_url

    text = resolve_sample(spec)
    path = text[len("file://"):] if text.lower().startswith("file://") else text
    if path == "webcam" or path.startswith(("webcam:", "/dev/video")) or is_url(path) or path.isdigit() or \
            Path(path).expanduser().exists():
        return text
    if Path(path).suffix:
        raise FileNotFoundError(f"video file not found: {path!r}")
    raise FileNotFoundError(f"not found (no such file or directory, and not a URL or camera): {path!r}")


def open_jsonl(path: str | None) -> TextIO | None:
    """``--jsonl``: the file every event is written to (its directory must exist), or None."""
    if path is None:
        return None
    file = Path(path)
    if file.parent and not file.parent.exists():
        raise FileNotFoundError(f"--jsonl directory does not exist: {str(file.parent)!r}")
    try:
        return file.open("w", encoding="utf-8")
    except OSError as e:
        raise OSError(f"--jsonl: cannot write {path!r}: {e.strerror or e}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))


"""``livecue demo``: the default model narrating a held-out world stream in real time, offline, on a CPU.

With no arguments it renders a stream of the built-in world (test split, never seen in training), plays it through
the packaged default model on the wall clock, prints each narration as it happens next to what really happened,
and asks one scripted question. ``--source`` takes any file, URL or webcam instead (the default model, which knows
only the built-in world, then says so once on stderr unless the source is a rendered world video:
:mod:`.world_notice`); ``--save out.mp4`` writes the video with the replies burned in as captions (with progress on
stderr), and the same captions as ``out.srt`` and ``out.vtt`` subtitles beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..inference.options import MAX_QUERY_CHARS, StreamOptions
from ._common import SEED, STREAM_TIME, parser, positive_float, positive_int, split_overrides, text
from .display import format_event, format_reference, format_summary
from .world_notice import notify_world_only

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"  # as load.DEFAULT_MODEL_DIR
DEMO_SEED = 7  # a test-split stream: disjoint from every training stream by construction
MAX_DURATION = 600.0  # seconds of world stream (rendered into memory up front)


def build_parser() -> argparse.ArgumentParser:
    p = parser("demo", "Watch a stream with livecue's default model and narrate it live (offline, CPU).")
    p.add_argument("--model", default=None, help="model to use (default: the packaged default model)")
    p.add_argument("--source", default=None, help="a video file, image folder, webcam or stream URL "
                                                  "(default: a held-out stream of the built-in world)")
    p.add_argument("--seed", type=SEED, default=DEMO_SEED,
                   help=f"which held-out world stream, in {SEED.range} (default: %(default)s)")
    p.add_argument("--duration", type=positive_float(MAX_DURATION), default=30.0,
                   help=f"seconds of world stream, in (0, {MAX_DURATION:g}] (default: %(default)s)")
    p.add_argument("--question", type=text(MAX_QUERY_CHARS, "question"), default=None,
                   help=f"the question to ask, at most {MAX_QUERY_CHARS:,} characters (default: one from the stream)")
    p.add_argument("--at", type=STREAM_TIME, default=None, help=f"when to ask it (seconds, in {STREAM_TIME.range})")
    StreamOptions.add_arguments(p)
    p.add_argument("--fast", action="store_true", help="process as fast as possible instead of in real time")
    p.add_argument("--save", default=None, metavar="OUT.mp4",
                   help="write the video with captions burned in, and OUT.srt / OUT.vtt subtitles beside it")
    p.add_argument("--max-frames", type=positive_int(), default=None, help="stop after this many frames (>= 1)")
    return p


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    options = StreamOptions.from_args(args)
    if args.save and Path(args.save).parent and not Path(args.save).resolve().parent.exists():
        raise FileNotFoundError(f"--save directory does not exist: {str(Path(args.save).parent)!r}")
    if args.save:
        from ..data.captions import check_output

        try:
            check_output(args.save)
        except ValueError as e:
            raise ValueError(f"--save {e}") from None

    from ..inference.engine import StreamEngine
    from ..inference.pipeline import Pipeline
    from ..inference.sources import ArraySource, open_source
    from ..model.load import load_model

    model_dir = args.model or DEFAULT_MODEL_DIR
    if args.model is None and not (DEFAULT_MODEL_DIR / "livecue_config.json").exists():
        raise FileNotFoundError(f"the default model is missing from {DEFAULT_MODEL_DIR}; reinstall livecue")
    print(f"loading {'the default model' if args.model is None else args.model} ...", flush=True)
    model, tokenizer = load_model(model_dir, overrides=overrides or None)
    fps = options.fps or model.cfg.stream.fps
    reference: list[tuple[float, str]] = []
    question = (args.question, args.at if args.at is not None else 5.0) if args.question else None
    captured: list[tuple[float, object]] = []
    if args.source is None:
        from ..data.world import WorldConfig, generate_stream, stream_seed

        try:
            cfg = WorldConfig(resolution=model.cfg.frame_resolution, fps=fps, duration=args.duration)
        except ValueError as e:  # name the option, not the dataclass field
            raise ValueError(str(e).replace("WorldConfig.duration", "--duration")) from None
        frames, record = generate_stream(cfg, stream_seed(0, "test", args.seed))
        reference = [(e["time"], e["text"]) for e in record["meta"]["events"]]
        if question is None and record["meta"]["questions"]:
            q = record["meta"]["questions"][0]
            question = (q["question"], q["time"])
            reference.append((q["time"], f"(answer to {q['question']!r}: {q['answer']})"))
        source = ArraySource(frames, fps, max_frames=args.max_frames, name=f"world stream {args.seed}")
        print(f"streaming a held-out world stream ({len(frames)} frames, {args.duration:g} s); "
              f"reference events are shown as [ref]", flush=True)
    else:
        from ..data.samples import resolve

        spec = resolve(args.source)
        source = open_source(spec, fps, max_frames=args.max_frames)
        notify_world_only("livecue demo", model.cfg.name, spec)  # the default model on other video: once, stderr
    if args.save:
        source = _Recorder(source, captured)
    from ..data.subtitles import caption_text
    from ..data.world import INSTRUCTION

    session = StreamEngine(model, tokenizer, options).session()  # unset: the model's stream.*
    session.add_query(INSTRUCTION, at=0.0, answer=False)  # the narration request, as in the training records
    if question:
        session.add_query(question[0], at=question[1])
    pipeline = Pipeline(session, source, realtime=not args.fast)
    pending_ref = sorted(reference)
    captions: list[tuple[float, str]] = []
    try:
        for event in pipeline.run():
            while pending_ref and pending_ref[0][0] <= event.t + 1e-6:
                print(format_reference(*pending_ref.pop(0)), flush=True)
            line = format_event(event)
            if line:
                print(line, flush=True)
            if event.type in ("reply", "answer"):
                captions.append((event.t, caption_text(event.type, event.text, getattr(event, "query", None))))
    except KeyboardInterrupt:
        pipeline.stop()
        print("interrupted", file=sys.stderr)
    print(format_summary(pipeline.stats, replies="narrations"))
    if args.save:
        _save(Path(args.save), captured, captions, fps)
    return 0


def _save(path: Path, frames: list[tuple[float, object]], captions: list[tuple[float, str]], fps: float) -> None:
    """Write the captioned video (progress on stderr) and its ``.srt``/``.vtt`` subtitles with the same cues."""
    from ..data.captions import HOLD_SECONDS, write_captioned
    from ..data.subtitles import cues_from_captions, write_sidecars
    from ..progress import track

    write_captioned(path, track(frames, desc="save", unit="frame"), captions, fps)
    srt, vtt = write_sidecars(path, cues_from_captions(captions, hold=HOLD_SECONDS))
    print(f"wrote {path} (subtitles: {srt.name}, {vtt.name})")


class _Recorder:
    """Pass frames through while keeping a copy for ``--save``."""

    def __init__(self, source, sink: list) -> None:
        self.source, self.sink = source, sink
        self.live = getattr(source, "live", False)
        self.name = getattr(source, "name", "source")

    def __iter__(self):
        for t, frame in self.source:
            self.sink.append((t, frame))
            yield t, frame

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if close:
            close()

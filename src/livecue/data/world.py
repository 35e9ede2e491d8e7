"""The built-in streaming world: a procedural video-with-dialogue dataset that runs the whole LIVE pipeline offline.

A scene of a few coloured shapes on a grid changes at random *event frames* (appear, disappear, move, change colour,
grow, shrink, collide). Each event is visible in the frame where it is narrated ("The blue circle moves left."),
every other frame is silent, and users ask questions at random non-event frames ("What colour is the star?") that
are answered from the scene at that moment. :func:`generate_stream` returns the frames and a streaming-dialogue
record (:mod:`livecue.data.records`); :func:`generate_world` writes a split of them to disk. Pixels are drawn in
:mod:`livecue.data.world_render`; the scene logic lives in :mod:`livecue.data.world_scene`.

Everything is deterministic by seed (``np.random.default_rng``, never the global RNG). The scene and the story use
one child generator and the pixels (noise, camera shake) another, so the rendering knobs never change the story.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .records import validate_record, write_records
from .world_render import COLOURS, SHAPES, Sprite, render, save_mp4, save_npy, video_codec
from .world_scene import EVENT_TYPES, QUESTION_TYPES, Story, WorldObject, ask, simulate

log = logging.getLogger(__name__)

__all__ = ["WorldConfig", "WorldObject", "Story", "ask", "simulate_stream", "generate_stream", "generate_world",
           "stream_seed", "render_state", "INSTRUCTION", "SPLIT_IDS", "EVENT_TYPES", "QUESTION_TYPES", "SHAPES",
           "COLOURS"]

INSTRUCTION = "Narrate what happens in the video, concisely, in real time."
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DEFAULT_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white")


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


@dataclass
class WorldConfig:
    """How the streaming world looks and how hard it is. Validated on construction (``ValueError`` naming the field).

    Difficulty knobs: more ``max_objects`` / shapes / colours (more to tell apart), a higher ``event_rate`` and lower
    ``min_event_gap`` (denser narration), longer ``move_frames`` (motion that continues silently after its
    narration), ``texture`` + ``drift`` + ``jitter`` (distractor motion that must *not* be narrated), ``noise``
    (pixel noise), a lower ``resolution`` (smaller objects), a larger ``grid`` (finer positions).

    Attributes:
        resolution: frame width = height in pixels (even, >= 16; 224 for real encoders, 32-64 for tests).
        fps: the stream frame rate (frames per second).
        duration: seconds per stream; a stream has ``round(duration * fps)`` frames.
        grid: objects sit on a ``grid x grid`` lattice of cells (the "where" answer uses 3 x 3 regions of it).
        max_objects: most objects on screen at once.
        min_initial_objects, max_initial_objects: range of the number of objects in frame 0.
        event_rate: mean events per second (0: a static scene). Event starts are spaced by a uniform draw in
            ``[0.5, 1.5] x fps / event_rate`` frames, and never closer than ``min_event_gap`` frames after the
            previous event's last changing frame.
        min_event_gap: least frames between the end of one event and the start of the next (>= 2 leaves a silent
            frame between them).
        move_frames: a move or collision spans 1 .. ``move_frames`` frames (its narration comes at the first
            moved frame for a move, at the contact frame for a collision).
        event_types: which events may happen (subset of :data:`EVENT_TYPES`).
        shapes, colours: the vocabulary of objects (subsets of :data:`SHAPES` and :data:`COLOURS`); a
            colour + shape pair is never on screen twice.
        question_rate: mean user questions per stream (``floor`` of it, plus one with the fractional probability).
        background: background RGB.
        texture: relative amplitude (0-1) of diagonal background stripes (0: flat background).
        drift: pixels per frame the stripes drift (distractor motion; needs ``texture`` > 0 to be visible).
        jitter: camera shake: the whole scene shifts by up to this many pixels each frame.
        noise: standard deviation of Gaussian pixel noise (0-255 scale).
    """

    resolution: int = 224
    fps: float = 2.0
    duration: float = 30.0
    grid: int = 6
    max_objects: int = 3
    min_initial_objects: int = 1
    max_initial_objects: int = 2
    event_rate: float = 0.25
    min_event_gap: int = 2
    move_frames: int = 3
    event_types: tuple[str, ...] = EVENT_TYPES
    shapes: tuple[str, ...] = ("square", "circle", "triangle", "star", "diamond")
    colours: tuple[str, ...] = DEFAULT_COLOURS
    question_rate: float = 2.0
    background: tuple[int, int, int] = (28, 28, 36)
    texture: float = 0.0
    drift: float = 0.0
    jitter: int = 0
    noise: float = 0.0

    def __post_init__(self) -> None:
        for name in ("event_types", "shapes", "colours", "background"):
            value = getattr(self, name)
            _check(isinstance(value, (list, tuple)), f"WorldConfig.{name} must be a list, got {value!r}")
            setattr(self, name, tuple(value))
        for name in ("resolution", "grid", "max_objects", "min_initial_objects", "max_initial_objects",
                     "min_event_gap", "move_frames", "jitter"):
            value = getattr(self, name)
            _check(isinstance(value, int) and not isinstance(value, bool),
                   f"WorldConfig.{name} must be an integer, got {value!r}")
        for name in ("fps", "duration", "event_rate", "question_rate", "texture", "drift", "noise"):
            value = getattr(self, name)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                   f"WorldConfig.{name} must be a finite number, got {value!r}")
        _check(self.resolution >= 16 and self.resolution % 2 == 0,
               f"WorldConfig.resolution must be an even integer >= 16, got {self.resolution}")
        _check(self.fps > 0, f"WorldConfig.fps must be positive, got {self.fps}")
        _check(self.duration > 0 and self.num_frames >= 2,
               f"WorldConfig.duration must give at least 2 frames at {self.fps:g} fps, got {self.duration}")
        _check(3 <= self.grid <= self.resolution // 4,
               f"WorldConfig.grid must be in [3, resolution / 4 = {self.resolution // 4}], got {self.grid}")
        _check(1 <= self.max_objects <= min(10, self.grid * self.grid // 2),
               f"WorldConfig.max_objects must be in [1, {min(10, self.grid * self.grid // 2)}], got {self.max_objects}")
        _check(1 <= self.min_initial_objects <= self.max_initial_objects <= self.max_objects,
               "WorldConfig needs 1 <= min_initial_objects <= max_initial_objects <= max_objects, got "
               f"{self.min_initial_objects}, {self.max_initial_objects}, {self.max_objects}")
        _check(self.event_rate >= 0, f"WorldConfig.event_rate must be >= 0, got {self.event_rate}")
        _check(self.min_event_gap >= 1, f"WorldConfig.min_event_gap must be >= 1 frame, got {self.min_event_gap}")
        _check(self.move_frames >= 1, f"WorldConfig.move_frames must be >= 1, got {self.move_frames}")
        bad = [e for e in self.event_types if e not in EVENT_TYPES]
        _check(not bad and len(self.event_types) > 0,
               f"WorldConfig.event_types must be a non-empty subset of {EVENT_TYPES}, got {list(self.event_types)}")
        bad = [s for s in self.shapes if s not in SHAPES]
        _check(not bad and len(self.shapes) > 0 and len(set(self.shapes)) == len(self.shapes),
               f"WorldConfig.shapes must be distinct names from {SHAPES}, got {list(self.shapes)}")
        bad = [c for c in self.colours if c not in COLOURS]
        _check(not bad and len(self.colours) > 0 and len(set(self.colours)) == len(self.colours),
               f"WorldConfig.colours must be distinct names from {tuple(COLOURS)}, got {list(self.colours)}")
        _check(len(self.shapes) * len(self.colours) >= self.max_objects,
               f"WorldConfig: {len(self.shapes)} shapes x {len(self.colours)} colours cannot name "
               f"max_objects = {self.max_objects} objects uniquely")
        _check(self.question_rate >= 0, f"WorldConfig.question_rate must be >= 0, got {self.question_rate}")
        _check(len(self.background) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in self.background),
               f"WorldConfig.background must be 3 integers in [0, 255], got {list(self.background)}")
        _check(0 <= self.texture <= 1, f"WorldConfig.texture must be in [0, 1], got {self.texture}")
        _check(self.drift >= 0, f"WorldConfig.drift must be >= 0, got {self.drift}")
        _check(0 <= self.jitter <= self.resolution // 16,
               f"WorldConfig.jitter must be in [0, resolution / 16 = {self.resolution // 16}], got {self.jitter}")
        _check(0 <= self.noise <= 128, f"WorldConfig.noise must be in [0, 128], got {self.noise}")

    @property
    def num_frames(self) -> int:
        """Frames per stream."""
        return int(round(self.duration * self.fps))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown WorldConfig field(s) {unknown}")
        return cls(**data)


def stream_seed(seed: int, split: str, index: int) -> int:
    """The seed of stream ``index`` of ``split``: an injective map of ``(seed, split, index)``, so splits never share.

    Raises:
        ValueError: unknown split, negative seed, or an index outside ``[0, 2**32)``.
    """
    _check(split in SPLIT_IDS, f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
    _check(isinstance(seed, int) and seed >= 0, f"seed must be an integer >= 0, got {seed!r}")
    _check(isinstance(index, int) and 0 <= index < 2**32, f"stream index must be in [0, 2**32), got {index!r}")
    return (seed * 4 + SPLIT_IDS[split]) * 2**32 + index


def render_state(objects: Sequence[WorldObject], cfg: WorldConfig, *, frame: int = 0,
                 offset: tuple[float, float] = (0.0, 0.0), rng: np.random.Generator | None = None) -> np.ndarray:
    """Render one scene state to an ``(H, W, 3)`` uint8 frame (``frame`` drives the drifting texture)."""
    cell = cfg.resolution / cfg.grid
    sprites = [Sprite(o.shape, COLOURS[o.colour], o.x * cell + offset[0], o.y * cell + offset[1], o.side * cell / 2)
               for o in objects]
    shift = cfg.drift * frame + offset[0] + offset[1]  # the stripes drift and shake with the camera
    return render(sprites, cfg.resolution, cfg.background, texture=cfg.texture, shift=shift, noise=cfg.noise, rng=rng)


def _generators(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    story_ss, pixel_ss = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(story_ss), np.random.default_rng(pixel_ss)


def simulate_stream(cfg: WorldConfig, seed: int) -> Story:
    """The story of stream ``seed`` without pixels: the objects at every frame, the events and the questions."""
    return simulate(cfg, _generators(seed)[0])


def generate_stream(cfg: WorldConfig, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Simulate, render and narrate one stream.

    Returns:
        ``(frames, record)``: ``(N, H, W, 3)`` uint8 frames at ``cfg.fps`` and a validated streaming-dialogue record
        (id ``world-<seed>``, ``video`` None) whose ``meta`` holds ``source="world"``, the seed, the config, the
        initial objects, the events and the questions.
    """
    story_rng, pixels = _generators(seed)
    story = simulate(cfg, story_rng)
    frames = np.empty((cfg.num_frames, cfg.resolution, cfg.resolution, 3), np.uint8)
    for k, state in enumerate(story.states):
        offset = tuple(float(v) for v in pixels.integers(-cfg.jitter, cfg.jitter + 1, 2)) if cfg.jitter else (0., 0.)
        frames[k] = render_state(state, cfg, frame=k, offset=offset, rng=pixels)
    record = {"id": f"world-{seed}", "video": None, "fps": cfg.fps, "start": 0.0,
              "duration": cfg.num_frames / cfg.fps, "messages": _messages(cfg, story),
              "meta": {"source": "world", "seed": seed, "num_frames": cfg.num_frames, "config": cfg.to_dict(),
                       "initial_objects": [o.to_dict() for o in story.states[0]],
                       "events": story.events, "questions": story.questions}}
    return frames, validate_record(record)


def _messages(cfg: WorldConfig, story: Story) -> list[dict[str, Any]]:
    """Frame 0 (unlearned) + instruction, then learned streams up to each narration / question frame."""
    fps = cfg.fps
    msgs: list[dict[str, Any]] = [{"role": "stream", "time": 0.0, "num_frames": 1, "learn": False},
                                  {"role": "user", "time": 0.0, "content": INSTRUCTION}]
    points = [(e["frame"], 0, e) for e in story.events] + [(q["frame"], 1, q) for q in story.questions]
    cursor = 1
    for frame, is_question, item in sorted(points, key=lambda p: (p[0], p[1])):
        n = frame - cursor + 1
        # Before a question the last frame is not learned: ']\n' there would teach "speak" at a silent frame.
        msgs.append({"role": "stream", "time": cursor / fps, "num_frames": n, "learn": n - 1 if is_question else True})
        if is_question:
            msgs.append({"role": "user", "time": item["time"], "content": item["question"]})
            msgs.append({"role": "assistant", "time": item["time"], "content": item["answer"], "learn": True})
        else:
            msgs.append({"role": "assistant", "time": item["time"], "content": item["text"], "learn": True})
        cursor = frame + 1
    if cursor < cfg.num_frames:
        msgs.append({"role": "stream", "time": cursor / fps, "num_frames": cfg.num_frames - cursor, "learn": True})
    return msgs


def generate_world(out_dir: str | Path, n: int, seed: int, split: str = "train", cfg: WorldConfig | None = None,
                   video_format: str = "mp4", *, resume: bool = False) -> list[dict[str, Any]]:
    """Write ``n`` streams of ``split`` to ``out_dir``: ``videos/<id>.<mp4|npy>`` and ``<split>.jsonl``.

    Stream ``i`` uses :func:`stream_seed` ``(seed, split, i)``, so train/val/test never share a stream; its id is
    ``world-<split>-<seed>-<i:05d>``. Each video is written to a temporary name and renamed; with ``resume`` an
    existing video is kept (streams are deterministic, so it is the same file). The JSONL is written last,
    atomically.

    Returns:
        The records (``video`` relative to ``out_dir``).

    Raises:
        ValueError: bad ``n``, ``seed``, ``split`` or ``video_format``.
    """
    cfg = cfg or WorldConfig()
    _check(isinstance(n, int) and n >= 1, f"n must be an integer >= 1, got {n!r}")
    _check(video_format in ("mp4", "npy"), f"video_format must be 'mp4' or 'npy', got {video_format!r}")
    stream_seed(seed, split, 0)  # validates seed and split
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    codec = video_codec() if video_format == "mp4" else None
    records = []
    for i in range(n):
        s = stream_seed(seed, split, i)
        frames, record = generate_stream(cfg, s)
        rid = f"world-{split}-{seed}-{i:05d}"
        rel = f"videos/{rid}.{video_format}"
        path = out / rel
        if not (resume and path.is_file()):
            if video_format == "mp4":
                save_mp4(path, frames, cfg.fps, codec=codec)
            else:
                save_npy(path, frames)
        record.update(id=rid, video=rel)
        record["meta"].update(split=split, index=i, world_seed=seed)
        records.append(record)
        log.info("world %s %d/%d: %s (%d events, %d questions)", split, i + 1, n, rel,
                 len(record["meta"]["events"]), len(record["meta"]["questions"]))
    write_records(out / f"{split}.jsonl", records)
    return records

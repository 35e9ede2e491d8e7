"""Scene logic of the built-in streaming world: objects, events with their narrations, questions with their answers.

Coordinates are in grid cells: an object's centre ``(x, y)`` lies in ``[0, grid]`` (x to the right, y down) and its
bounding box has side :attr:`WorldObject.side` cells. Objects start on cell centres; a collision leaves the two
objects touching (their boxes share an edge). Otherwise boxes never overlap, and a colour + shape pair is never on
screen twice, so "the red square" always names one object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

EVENT_TYPES = ("appear", "disappear", "move", "change_colour", "grow", "shrink", "collide")
QUESTION_TYPES = ("colour", "count", "what_happened", "where")
SIZES = {"small": 0.6, "large": 0.9}  # bounding-box side in cells
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
REGIONS = (("In the top left.", "At the top.", "In the top right."),
           ("On the left.", "In the centre.", "On the right."),
           ("In the bottom left.", "At the bottom.", "In the bottom right."))
NUMBERS = ("None.", "One.", "Two.", "Three.", "Four.", "Five.", "Six.", "Seven.", "Eight.", "Nine.", "Ten.")
MARGIN = 0.1    # least gap (cells) between an object's new place and its neighbours
MIN_APPROACH = 0.4  # least gap (cells) two objects close in a collision


@dataclass(frozen=True)
class WorldObject:
    """One object: shape, colour, size (``small`` / ``large``) and centre ``(x, y)`` in grid cells."""

    shape: str
    colour: str
    size: str
    x: float
    y: float

    @property
    def name(self) -> str:
        """The unique reference: ``"<colour> <shape>"``."""
        return f"{self.colour} {self.shape}"

    @property
    def side(self) -> float:
        """Side of the bounding box in cells."""
        return SIZES[self.size]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class SceneSettings(Protocol):
    """What the scene reads of a :class:`~livecue.data.world.WorldConfig` (which validates it): the scene does not
    import its config, whose rendering knobs it never sees."""

    grid: int
    fps: float
    max_objects: int
    min_initial_objects: int
    max_initial_objects: int
    event_rate: float
    min_event_gap: int
    move_frames: int
    event_types: tuple[str, ...]
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    question_rate: float

    @property
    def num_frames(self) -> int: ...


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(word: str) -> str:
    return "An" if word[:1] in "aeiou" else "A"


def region(obj: WorldObject, grid: int) -> tuple[int, int]:
    """``(row, col)`` of the 3 x 3 region holding the object's centre."""
    return min(2, int(obj.y * 3 / grid)), min(2, int(obj.x * 3 / grid))


def ask(kind: str, objects: Sequence[WorldObject], grid: int, *, target: WorldObject | None = None,
        last_narration: str | None = None) -> tuple[str, str]:
    """A question of ``kind`` about the scene ``objects`` and its correct answer.

    Args:
        kind: ``colour`` ("What colour is the <shape>?", needs a ``target`` whose shape is unique on screen),
            ``count`` ("How many objects are there?"), ``what_happened`` ("What just happened?": the last
            narration, or "Nothing yet.") or ``where`` ("Where is the <colour> <shape>?": its 3 x 3 region).
        objects: the scene at the time of the question.
        grid: the grid size (for ``where``).
        target: the object asked about (``colour`` and ``where``).
        last_narration: the latest narration before the question.

    Returns:
        ``(question, answer)``.

    Raises:
        ValueError: unknown kind, missing target, target not in the scene, or an ambiguous shape.
    """
    if kind == "count":
        count = len(objects)
        return "How many objects are there?", NUMBERS[count] if count < len(NUMBERS) else f"{count}."
    if kind == "what_happened":
        return "What just happened?", last_narration or "Nothing yet."
    if kind not in ("colour", "where"):
        raise ValueError(f"unknown question kind {kind!r}; known: {QUESTION_TYPES}")
    if target is None or target not in objects:
        raise ValueError(f"a {kind!r} question needs a target object in the scene, got {target!r}")
    if kind == "colour":
        if sum(o.shape == target.shape for o in objects) != 1:
            raise ValueError(f"'the {target.shape}' is ambiguous: more than one {target.shape} on screen")
        return f"What colour is the {target.shape}?", f"{_capital(target.colour)}."
    row, col = region(target, grid)
    return f"Where is the {target.name}?", REGIONS[row][col]


def narrate(kind: str, before: Sequence[WorldObject], after: Sequence[WorldObject], detail: str | None = None) -> str:
    """The templated narration of an event (``before``: the objects involved, ``after``: the same objects after)."""
    if kind == "appear":
        return f"{_article(after[0].colour)} {after[0].name} appears."
    if kind == "disappear":
        return f"The {before[0].name} disappears."
    if kind == "move":
        return f"The {before[0].name} moves {detail}."
    if kind == "change_colour":
        return f"The {before[0].name} turns {after[0].colour}."
    if kind in ("grow", "shrink"):
        return f"The {before[0].name} {kind}s."
    if kind == "collide":
        return f"The {before[0].name} and the {before[1].name} collide."
    raise ValueError(f"unknown event kind {kind!r}")


# ---- geometry ------------------------------------------------------------------------------------------------------
def _inside(o: WorldObject, grid: int) -> bool:
    h = o.side / 2
    return h <= o.x <= grid - h and h <= o.y <= grid - h


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float], margin: float) -> bool:
    """Do boxes ``(x0, y0, x1, y1)`` come closer than ``margin`` (touching is not overlapping when margin is 0)?"""
    return (a[0] < b[2] + margin - 1e-9 and b[0] < a[2] + margin - 1e-9
            and a[1] < b[3] + margin - 1e-9 and b[1] < a[3] + margin - 1e-9)


def _box(o: WorldObject) -> tuple[float, float, float, float]:
    h = o.side / 2
    return o.x - h, o.y - h, o.x + h, o.y + h


def _swept(a: WorldObject, b: WorldObject) -> tuple[float, float, float, float]:
    p, q = _box(a), _box(b)
    return min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]), max(p[3], q[3])


def _clear(path: Sequence[tuple[WorldObject, WorldObject]], others: Sequence[WorldObject], grid: int) -> bool:
    """Each ``(start, end)`` stays inside, its sweep overlaps no other object and its end keeps the margin."""
    return all(_inside(e, grid) and not any(_overlap(_swept(s, e), _box(o), 0.0) or _overlap(_box(e), _box(o), MARGIN)
                                            for o in others) for s, e in path)


# ---- simulation ----------------------------------------------------------------------------------------------------
@dataclass
class Story:
    """A simulated stream: the objects at every frame, the events and the questions (JSON-ready dicts)."""

    states: list[tuple[WorldObject, ...]]
    events: list[dict[str, Any]]
    questions: list[dict[str, Any]]


def _interp(a: WorldObject, b: WorldObject, f: float) -> WorldObject:
    return dataclasses.replace(a, x=a.x + (b.x - a.x) * f, y=a.y + (b.y - a.y) * f)


def _candidates(kind: str, objs: tuple[WorldObject, ...], cfg: SceneSettings) -> list[tuple[Any, ...]]:
    """All feasible instances of an event kind in the scene ``objs``: ``(involved, results, detail)`` triples."""
    g, out = cfg.grid, []
    names = {o.name for o in objs}
    if kind == "appear" and len(objs) < cfg.max_objects:
        for shape in cfg.shapes:
            for colour in cfg.colours:
                if f"{colour} {shape}" in names:
                    continue
                for size in SIZES:
                    for cx in range(g):
                        for cy in range(g):
                            new = WorldObject(shape, colour, size, cx + 0.5, cy + 0.5)
                            if _inside(new, g) and not any(_overlap(_box(new), _box(o), 2 * MARGIN) for o in objs):
                                out.append(((), (new,), None))
    elif kind == "disappear" and len(objs) > 1:
        out = [((o,), (), None) for o in objs]
    elif kind == "move":
        for o in objs:
            others = [p for p in objs if p is not o]
            for direction, (ux, uy) in DIRECTIONS.items():
                for dist in (1, 2):
                    end = dataclasses.replace(o, x=o.x + ux * dist, y=o.y + uy * dist)
                    if _clear([(o, end)], others, g):
                        out.append(((o,), (end,), direction))
    elif kind == "change_colour":
        out = [((o,), (dataclasses.replace(o, colour=c),), c) for o in objs for c in cfg.colours
               if f"{c} {o.shape}" not in names]
    elif kind in ("grow", "shrink"):
        size = "large" if kind == "grow" else "small"
        for o in objs:
            end = dataclasses.replace(o, size=size)
            if o.size != size and _clear([(o, end)], [p for p in objs if p is not o], g):
                out.append(((o,), (end,), None))
    elif kind == "collide":  # both move along the line between their centres until their boxes touch
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                dx, dy = b.x - a.x, b.y - a.y
                reach, span = (a.side + b.side) / 2, max(abs(dx), abs(dy))
                if span - reach < MIN_APPROACH:
                    continue
                f = (1 - reach / span) / 2
                e1 = dataclasses.replace(a, x=a.x + f * dx, y=a.y + f * dy)
                e2 = dataclasses.replace(b, x=b.x - f * dx, y=b.y - f * dy)
                others = [p for p in objs if p is not a and p is not b]
                if _clear([(a, e1), (b, e2)], others, g):
                    out.append(((a, b), (e1, e2), None))
    return out


def _event(kind: str, objs: tuple[WorldObject, ...], cfg: SceneSettings, rng: np.random.Generator,
           start: int, room: int) -> tuple[list[tuple[WorldObject, ...]], dict[str, Any]] | None:
    """Pick an instance of ``kind``; return its per-frame states (at most ``room`` frames) and its description."""
    options = _candidates(kind, objs, cfg)
    if not options:
        return None
    involved, results, detail = options[int(rng.integers(len(options)))]
    steps = int(rng.integers(1, min(cfg.move_frames, room) + 1)) if kind in ("move", "collide") else 1
    after = {a.name: b for a, b in zip(involved, results)}
    gone = {a.name for a in involved} if kind == "disappear" else set()
    states = []
    for j in range(1, steps + 1):
        state = []
        for o in objs:
            if o.name in gone:
                continue
            if o.name not in after:
                state.append(o)
            elif kind in ("move", "collide") and j < steps:
                state.append(_interp(o, after[o.name], j / steps))
            else:  # instant events, and the last step of a motion (exactly on the target)
                state.append(after[o.name])
        states.append(tuple(state) + (results if kind == "appear" else ()))
    frame = start + steps - 1 if kind == "collide" else start
    text = narrate(kind, involved, results, detail)
    event = {"type": kind, "frame": frame, "time": frame / cfg.fps, "start_frame": start,
             "end_frame": start + steps - 1, "objects": [o.name for o in involved or results], "text": text}
    if kind == "move":
        event["direction"] = detail
    if kind == "change_colour":
        event["colour"] = detail
    return states, event


def _initial(cfg: SceneSettings, rng: np.random.Generator) -> tuple[WorldObject, ...]:
    count = int(rng.integers(cfg.min_initial_objects, cfg.max_initial_objects + 1))
    names = [(s, c) for s in cfg.shapes for c in cfg.colours]
    picks = rng.choice(len(names), size=count, replace=False)
    cells = rng.choice(cfg.grid * cfg.grid, size=count, replace=False)
    return tuple(WorldObject(names[p][0], names[p][1], str(rng.choice(list(SIZES))), c % cfg.grid + 0.5,
                             c // cfg.grid + 0.5) for p, c in zip(picks.tolist(), cells.tolist()))


def simulate(cfg: SceneSettings, rng: np.random.Generator) -> Story:
    """Run the scene for ``cfg.num_frames`` frames: events at random frames, then questions at silent frames."""
    n = cfg.num_frames
    objs = _initial(cfg, rng)
    states: list[tuple[WorldObject, ...]] = [objs]
    events: list[dict[str, Any]] = []
    mean_gap = cfg.fps / cfg.event_rate if cfg.event_rate > 0 else math.inf

    def gap() -> int:
        return max(cfg.min_event_gap, int(round(rng.uniform(0.5, 1.5) * mean_gap)))

    next_start = gap() if cfg.event_rate > 0 else n
    while len(states) < n:
        k = len(states)
        result = None
        if k >= next_start:
            kinds = list(cfg.event_types)
            rng.shuffle(kinds)
            for kind in kinds:
                result = _event(kind, objs, cfg, rng, k, n - k)
                if result is not None:
                    break
        if result is None:
            states.append(objs)
            continue
        steps, event = result
        states.extend(steps)
        objs = steps[-1]
        events.append(event)
        next_start = max(k + gap(), event["end_frame"] + cfg.min_event_gap)
    return Story(states, events, _questions(cfg, rng, states, events))


def _questions(cfg: SceneSettings, rng: np.random.Generator, states: list[tuple[WorldObject, ...]],
               events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    busy = {f for e in events for f in range(e["start_frame"], e["end_frame"] + 1)}
    free = [k for k in range(1, len(states)) if k not in busy]
    count = int(math.floor(cfg.question_rate)) + int(rng.random() < cfg.question_rate % 1)
    count = min(count, len(free))
    frames = sorted(rng.choice(free, size=count, replace=False).tolist()) if count else []
    out = []
    for k in frames:
        objs = states[k]
        last = [e["text"] for e in events if e["frame"] < k]
        unique = [o for o in objs if sum(p.shape == o.shape for p in objs) == 1]
        kinds = [q for q in QUESTION_TYPES if q != "colour" or unique]
        kind = kinds[int(rng.integers(len(kinds)))]
        pool = unique if kind == "colour" else list(objs)
        target = pool[int(rng.integers(len(pool)))] if kind in ("colour", "where") else None
        question, answer = ask(kind, objs, cfg.grid, target=target, last_narration=last[-1] if last else None)
        t = max(k / cfg.fps, round((k + float(rng.uniform(0.0, 0.8))) / cfg.fps, 3))
        out.append({"type": kind, "frame": k, "time": t, "question": question, "answer": answer,
                    "objects": [target.name] if target else []})
    return out

"""Multiple-choice questions about one world stream whose answers are read off its ground truth (for :mod:`.world`).

Each generator takes a :class:`Truth` (the simulated story of one stream: the objects at every frame and the events)
and a generator ``rng``, lists every case of the stream where its question has one certain answer, picks one at
random and returns a :class:`Question` (``None`` when the stream has no such case). What every question keeps:

* a question about *now* is asked where the scene has not changed for 1 s (``Truth.sec`` frames) before it, so a model
  sampling at 1 fps or more has seen it; an event asked about was visible for 1 s before and after it;
* exactly one option is true, by construction: distractors name objects that are not where (or not on screen when)
  the question says, actions the object did not do, events that did not come then or never happened (narrations of
  an object never on screen in the stream), colours it did not turn, regions it is not in;
* with ``Truth.whole`` (StreamingBench, whose time stamps are whole seconds) questions are asked at whole seconds
  only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from livecue.data.world import WorldConfig, WorldObject
from livecue.data.world_render import COLOURS, SHAPES
from livecue.data.world_scene import REGIONS, region

__all__ = ["ACTIONS", "NEVER", "NO_CHANGE", "Question", "Truth", "action", "hms", "heading", "just_happened",
           "never_seen", "next_after", "object_at", "on_screen", "premise", "scene_list", "sequel", "summary"]

ACTIONS = ("It moved left.", "It moved right.", "It moved up.", "It moved down.", "It grew.", "It shrank.")
NEVER = "It never appeared in the video."
NO_CHANGE = "It did not change colour."
_ACTS = ("move", "grow", "shrink")


def hms(t: float) -> str:
    """``"HH:MM:SS"`` of ``t`` seconds (whole seconds, as StreamingBench writes its time stamps)."""
    s = int(t)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _article(name: str) -> str:
    return "An" if name[:1] in "aeiou" else "A"


def _shuffled(rng: np.random.Generator, items: Sequence[Any]) -> list[Any]:
    return [items[i] for i in rng.permutation(len(items))]


def _pick(rng: np.random.Generator, cases: Sequence[Any]) -> Any:
    return cases[int(rng.integers(len(cases)))] if cases else None


def _act(event: dict[str, Any]) -> str:
    """What the object of a move / grow / shrink event did, as an option of :data:`ACTIONS`."""
    return f"It moved {event['direction']}." if event["type"] == "move" else {"grow": "It grew.",
                                                                             "shrink": "It shrank."}[event["type"]]


@dataclass(frozen=True)
class Question:
    """A multiple-choice question asked at ``frame`` (at ``frame / fps`` seconds); ``options[gt]`` is the answer."""

    frame: int
    question: str
    options: tuple[str, ...]
    gt: int

    @property
    def answer(self) -> str:
        return self.options[self.gt]


def _question(rng: np.random.Generator, frame: int, text: str, answer: str,
              distractors: Sequence[str], k: int = 3) -> Question | None:
    """``answer`` and the first ``k`` distinct ``distractors`` (other than the answer) in a random order."""
    others = [d for d in dict.fromkeys(distractors) if d != answer][:k]
    if len(others) < k:
        return None
    opts = _shuffled(rng, [*others, answer])
    return Question(frame, text, tuple(opts), opts.index(answer))


@dataclass
class Truth:
    """One stream's ground truth: ``states[k]`` (the objects at frame ``k``) and ``events`` (in time order), as
    :func:`~livecue.data.world.simulate_stream` gives them; ``whole``: ask at whole seconds only."""

    cfg: WorldConfig
    states: list[tuple[WorldObject, ...]]
    events: list[dict[str, Any]]
    whole: bool = False

    @property
    def n(self) -> int:
        return len(self.states)

    @property
    def sec(self) -> int:
        """Frames in (at least) one second."""
        return max(1, math.ceil(self.cfg.fps))

    def time(self, k: int) -> float:
        return k / self.cfg.fps

    def on_grid(self, k: int) -> bool:
        """Whether a question may be asked at frame ``k`` (any frame; with ``whole``, one at a whole second)."""
        t = self.time(k)
        return 0 <= k < self.n and (not self.whole or abs(t - round(t)) < 1e-9)

    def still(self, a: int, b: int) -> bool:
        """Frames ``a`` .. ``b`` all show the same scene."""
        return 0 <= a <= b < self.n and all(self.states[j] == self.states[a] for j in range(a + 1, b + 1))

    def askable(self, k: int) -> bool:
        """A question about *now* may be asked at ``k``: on the grid, the scene unchanged for the second before."""
        return self.on_grid(k) and self.still(k - self.sec, k)

    def first_on_grid(self, k: int) -> int | None:
        while k < self.n and not self.on_grid(k):
            k += 1
        return k if k < self.n else None

    def names(self, k: int) -> list[str]:
        return [o.name for o in self.states[k]]

    @cached_property
    def frames_of(self) -> dict[str, list[int]]:
        """The frames each object name is on screen, in order (the names ever on screen are its keys)."""
        out: dict[str, list[int]] = {}
        for k, state in enumerate(self.states):
            for o in state:
                out.setdefault(o.name, []).append(k)
        return out

    @property
    def ever(self) -> set[str]:
        """Every object name on screen at some frame of the stream."""
        return set(self.frames_of)

    def absent(self, k: int) -> list[str]:
        """The names of the world's vocabulary (``cfg`` colours x shapes) not on screen at frame ``k``."""
        here = set(self.names(k))
        return [f"{c} {s}" for s in self.cfg.shapes for c in self.cfg.colours if f"{c} {s}" not in here]

    def seen(self, event: dict[str, Any]) -> bool:
        """The scene was still for a second before the event (the model saw what it changed)."""
        return self.still(event["start_frame"] - self.sec, event["start_frame"] - 1)

    def after(self, event: dict[str, Any]) -> int | None:
        """The first frame on the grid a second after the event's end where nothing else has changed, or None."""
        k = self.first_on_grid(event["end_frame"] + self.sec)
        return k if k is not None and self.still(event["end_frame"], k) else None

    def fakes(self, rng: np.random.Generator) -> list[str]:
        """Narrations of an object never on screen in this stream (from the ``cfg`` vocabulary when one is left):
        none of them ever happened."""
        pool = sorted({f"{c} {s}" for s in self.cfg.shapes for c in self.cfg.colours} - self.ever) or \
            sorted({f"{c} {s}" for s in SHAPES for c in COLOURS} - self.ever)
        if not pool:
            return []
        name = _pick(rng, pool)
        return [f"{_article(name)} {name} appears.", f"The {name} disappears.", f"The {name} moves left.",
                f"The {name} grows."]


# ---- real-time: the scene now ---------------------------------------------------------------------------------------
def _phrase(row: int, col: int) -> str:
    text = REGIONS[row][col]
    return text[0].lower() + text[1:-1]


def object_at(t: Truth, rng: np.random.Generator) -> Question | None:
    """"Which object is in the top left now?": the one object whose centre is in that region (OVO-Bench OJR)."""
    g = t.cfg.grid
    cases = [(k, o) for k in range(t.n) if t.askable(k) for o in t.states[k]
             if sum(region(p, g) == region(o, g) for p in t.states[k]) == 1]
    if not cases:
        return None
    k, o = _pick(rng, cases)
    others = [f"The {p.name}." for p in _shuffled(rng, [p for p in t.states[k] if p != o])]
    return _question(rng, k, f"Which object is {_phrase(*region(o, g))} now?", f"The {o.name}.",
                     others + [f"The {n}." for n in _shuffled(rng, t.absent(k))])


def on_screen(t: Truth, rng: np.random.Generator) -> Question | None:
    """"Which of these objects is on the screen now?": one on screen, the others not (earlier ones first)."""
    k = _pick(rng, [k for k in range(t.n) if t.askable(k)])
    if k is None:
        return None
    o = _pick(rng, t.states[k])
    before = {n for s in t.states[:k] for n in (p.name for p in s)}
    gone = [n for n in t.absent(k) if n in before]
    rest = [n for n in t.absent(k) if n not in before]
    return _question(rng, k, "Which of these objects is on the screen now?", f"The {o.name}.",
                     [f"The {n}." for n in _shuffled(rng, gone) + _shuffled(rng, rest)])


def scene_list(t: Truth, rng: np.random.Generator) -> Question | None:
    """"What is the complete list of objects on the screen now?": distractors swap one for an absent object, add an
    absent one, or leave one out."""
    k = _pick(rng, [k for k in range(t.n) if t.askable(k)])
    if k is None:
        return None
    names, absent = t.names(k), _shuffled(rng, t.absent(k))
    if len(absent) < 3:
        return None

    def say(ns: list[str]) -> str:
        parts = [f"{_article(n).lower()} {n}" for n in sorted(ns)]
        text = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
        return text[0].upper() + text[1:] + "."

    i = int(rng.integers(len(names)))
    drop = names[:i] + names[i + 1:] if len(names) > 1 else [absent[2]]
    return _question(rng, k, "What is the complete list of objects on the screen now?", say(names),
                     [say(names[:i] + [absent[0]] + names[i + 1:]), say([*names, absent[1]]), say(drop)])


# ---- events: what happened -----------------------------------------------------------------------------------------
def action(t: Truth, rng: np.random.Generator) -> Question | None:
    """"What did the red square just do?" a second after it moved / grew / shrank (OVO-Bench ACR, StreamingBench
    Action Perception)."""
    cases = [(e, k) for e in t.events if e["type"] in _ACTS and t.seen(e) and (k := t.after(e)) is not None]
    if not cases:
        return None
    e, k = _pick(rng, cases)
    return _question(rng, k, f"What did the {e['objects'][0]} just do?", _act(e), _shuffled(rng, ACTIONS))


def heading(t: Truth, rng: np.random.Generator) -> Question | None:
    """"Where will the red square be a moment from now?" while it is moving: the world's moves go on in a straight
    line to their end, so it will be further that way at the next frame (OVO-Bench FPD, StreamingBench Prospective
    Reasoning)."""
    cases = [(e, k) for e in t.events if e["type"] == "move" and t.seen(e)
             for k in range(e["start_frame"], e["end_frame"]) if t.on_grid(k)]
    if not cases:
        return None
    e, k = _pick(rng, cases)
    ways = [f"Further {d}." for d in ("left", "right", "up", "down")]
    return _question(rng, k, f"Where will the {e['objects'][0]} be a moment from now?", f"Further {e['direction']}.",
                     _shuffled(rng, ways))


def just_happened(t: Truth, rng: np.random.Generator) -> Question | None:
    """"What just happened?" a second after an event: its narration; distractors are earlier events of the stream
    and events that never happened (StreamingBench Event Understanding)."""
    cases = [(e, k) for e in t.events if t.seen(e) and (k := t.after(e)) is not None]
    if not cases:
        return None
    e, k = _pick(rng, cases)
    earlier = [x["text"] for x in t.events if x["end_frame"] < e["start_frame"]]
    return _question(rng, k, "What just happened?", e["text"], _shuffled(rng, earlier) + t.fakes(rng))


def next_after(t: Truth, rng: np.random.Generator) -> Question | None:
    """'What happened right after "<event>"?' once the next event has been seen: its narration (OVO-Bench ASI).
    The first event's narration is unique in the stream; distractors are other events seen by then and events that
    never happened."""
    count = Counter(e["text"] for e in t.events)
    cases = [(a, b, k) for a, b in zip(t.events, t.events[1:]) if count[a["text"]] == 1 and b["text"] != a["text"]
             and t.seen(a) and t.seen(b) and (k := t.first_on_grid(b["end_frame"] + t.sec)) is not None]
    if not cases:
        return None
    a, b, k = _pick(rng, cases)
    seen = [e["text"] for e in t.events if e["end_frame"] <= k and e is not b]
    return _question(rng, k, f'What happened right after "{a["text"][:-1]}"?', b["text"],
                     _shuffled(rng, seen) + t.fakes(rng))


def summary(t: Truth, rng: np.random.Generator) -> Question | None:
    """"Which lists everything that has happened so far, in order?" once two or three events have happened (distinct
    narrations): distractors reverse them or put an event that never happened in place of one (StreamingBench Clips
    Summarize)."""
    cases, starts = [], [e["start_frame"] for e in t.events] + [t.n]
    for m in (2, 3):  # the frames after the m-th event started and before the next one
        done = [e["text"] for e in t.events[:m]]
        if len(t.events) >= m and len(set(done)) == m:
            cases += [(k, done) for k in range(starts[m - 1], starts[m]) if t.askable(k)]
    if not cases:
        return None
    k, done = _pick(rng, cases)
    fake = t.fakes(rng)
    if len(fake) < 2:
        return None
    return _question(rng, k, "Which lists everything that has happened so far, in order?", " ".join(done),
                     [" ".join(reversed(done)), " ".join([fake[0], *done[1:]]), " ".join([*done[:-1], fake[1]])])


def _involved(t: Truth, name: str) -> list[dict[str, Any]]:
    """The events that changed the object ``name`` or made it (a colour change into ``name`` included)."""
    return [e for e in t.events if name in e["objects"]
            or (e["type"] == "change_colour" and f"{e['colour']} {e['objects'][0].split(' ', 1)[1]}" == name)]


def never_seen(t: Truth, rng: np.random.Generator) -> Question | None:
    """"What did the green star do in the video?" at the video's end, about an object never on screen ("It never
    appeared in the video.") or, half of the time, one on screen throughout whose only change was one move / growth /
    shrinking (OVO-Bench HLD)."""
    k = t.n - 1
    fake = sorted({f"{c} {s}" for s in t.cfg.shapes for c in t.cfg.colours} - t.ever)
    real = [(name, ev[0]) for name in sorted(t.ever) if len(ev := _involved(t, name)) == 1
            and ev[0]["type"] in _ACTS and t.seen(ev[0]) and ev[0]["end_frame"] + t.sec <= k]
    use_real = bool(real) and (not fake or rng.random() < 0.5)
    if use_real:
        name, e = _pick(rng, real)
        answer, distractors = _act(e), [NEVER, *(a for a in _shuffled(rng, ACTIONS) if a != _act(e))]
    elif fake:
        name, answer, distractors = _pick(rng, fake), NEVER, _shuffled(rng, ACTIONS)
    else:
        return None
    return _question(rng, k, f"What did the {name} do in the video?", answer, distractors)


# ---- contextual ----------------------------------------------------------------------------------------------------
def premise(t: Truth, rng: np.random.Generator) -> Question | None:
    """"What colour did the red star turn into?": half of the time about an object that never changed colour (a
    false premise: "It did not change colour."), else about one that did, once, its name never seen again
    (StreamingBench Misleading Context Understanding)."""
    colours = t.cfg.colours
    true_cases = []
    for e in t.events:
        if e["type"] != "change_colour" or not t.seen(e) or (k := t.after(e)) is None:
            continue
        frames = t.frames_of[e["objects"][0]]  # one object: on screen without a break until it turned
        if frames[-1] == e["frame"] - 1 and len(frames) == e["frame"] - frames[0]:
            true_cases.append((e, k))
    unchanged = {n for n in t.ever if all(x["type"] != "change_colour" for x in _involved(t, n))}
    false_cases = [(k, n) for k in range(t.n) if t.askable(k) for n in t.names(k) if n in unchanged]
    if true_cases and (not false_cases or rng.random() < 0.5):
        e, k = _pick(rng, true_cases)
        name, new = e["objects"][0], e["colour"]
        old = name.split(" ", 1)[0]
        others = [f"{c.capitalize()}." for c in _shuffled(rng, colours) if c not in (new, old)]
        return _question(rng, k, f"What colour did the {name} turn into?", f"{new.capitalize()}.",
                         [NO_CHANGE, *others[:2]])
    if not false_cases:
        return None
    k, name = _pick(rng, false_cases)
    old = name.split(" ", 1)[0]
    return _question(rng, k, f"What colour did the {name} turn into?", NO_CHANGE,
                     [f"{c.capitalize()}." for c in _shuffled(rng, colours) if c != old])


def sequel(t: Truth, rng: np.random.Generator) -> tuple[Question, Question] | None:
    """Two questions about one object (StreamingBench Sequential Question Answering): "What colour is the star?"
    (its shape unique then), and later "Where is that star now?" (the object on screen, unchanged in name, all
    along); the second is asked with the first and its answer in front (``formats``, as StreamingBench's SQA)."""
    firsts = [(k, o) for k in range(t.n) if t.askable(k) for o in t.states[k]
              if sum(p.shape == o.shape for p in t.states[k]) == 1]
    if not firsts:
        return None
    k1, o = _pick(rng, firsts)
    end = k1
    while end + 1 < t.n and o.name in t.names(end + 1):
        end += 1
    seconds = [k for k in range(k1 + t.sec, end + 1) if t.askable(k)]
    if not seconds or len(t.cfg.colours) < 4:
        return None
    k2 = _pick(rng, seconds)
    q1 = _question(rng, k1, f"What colour is the {o.shape}?", f"{o.colour.capitalize()}.",
                   [f"{c.capitalize()}." for c in _shuffled(rng, t.cfg.colours)])
    if q1 is None:
        return None
    now = next(p for p in t.states[k2] if p.name == o.name)
    regions = [r for row in REGIONS for r in row]
    row, col = region(now, t.cfg.grid)
    q2 = _question(rng, k2, f"Where is that {o.shape} now?", REGIONS[row][col], _shuffled(rng, regions))
    return (q1, q2) if q2 is not None else None

"""The items of the online-video benchmarks (OVO-Bench, StreamingBench, ProactiveVideoQA-style) in one form, and what
a model answered: every loader (:mod:`.formats`) produces :class:`OnlineItem`; every scorer (:mod:`.scoring`) takes
an item and its :class:`Response`. Pure Python (no torch).

Protocols (:attr:`OnlineItem.protocol`):

* ``mc``: a question asked at ``ask_time``, answered from the frames up to then (multiple choice: ``options``,
  the correct letter in ``answer``; an open question: ``answer`` is the reference text).
* ``forward``: the question is asked early (``ask_time``) and the model decides when to answer while frames arrive;
  ``windows`` are the ground-truth moments the benchmark scores answers against (``(start, end, expected)``).
* ``proactive``: the model speaks on its own over the video (``ask_time``: when the instruction is given); each of
  ``windows`` is a moment it should speak about and what it should say; scored by timing and content (PAUC).

Any protocol may carry later user ``turns`` (ProactiveVideoQA's TV subtitles): messages given to the model at their
times while it watches, without asking for a reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("mc", "forward", "proactive")
BENCHMARKS = ("ovo", "streamingbench", "proactive")


@dataclass(frozen=True)
class Window:
    """A ground-truth moment: the model should answer (or speak) within ``[start, end]`` seconds; ``expected`` is
    what it should say there (a letter, "Yes"/"No", a count, a text), None when only the timing is scored.
    ``related`` is ProactiveVideoQA's ``related_timespan`` ``(start, end)``: when what the answer is about is on
    screen (the reply span usually runs on past it; PAUC uses its end, :func:`~.scoring.score_proactive`); None when
    the annotation gives none."""

    start: float
    end: float
    expected: str | None = None
    related: tuple[float, float] | None = None


@dataclass(frozen=True)
class OnlineItem:
    """One question of an online-video benchmark.

    Attributes:
        benchmark: ``ovo``, ``streamingbench`` or ``proactive``.
        task: the benchmark's sub-task, ``"<group>/<name>"`` (e.g. ``backward/EPM``, ``realtime/OCR``,
            ``forward/REC``, ``realtime/Object Perception``, ``proactive/Proactive Output``).
        id: unique within the benchmark (stable: results and resume are keyed by it).
        video: the video file (path as given by the annotation, resolved against the data directory by the loader).
        question: the question or instruction text as the benchmark phrases it (options not included).
        ask_time: seconds from the video start at which the question is asked.
        protocol: one of :data:`PROTOCOLS`.
        options: multiple-choice options in order (letters A, B, ... implied); empty for open questions.
        answer: the correct option letter (``mc`` with options) or reference text; None when ``windows`` score it.
        windows: the ground-truth moments of ``forward`` / ``proactive`` items, in time order.
        end_time: when the item's stream stops (seconds; None: the video's end).
        turns: later user messages ``(t, text)`` in time order, given to the model at ``t`` seconds as it watches,
            without asking for a reply (ProactiveVideoQA's ``conversation[1:]``, e.g. ``"Subtitle: ..."``).
        meta: the annotation's other fields, kept for reports.
    """

    benchmark: str
    task: str
    id: str
    video: str
    question: str
    ask_time: float
    protocol: str
    options: tuple[str, ...] = ()
    answer: str | None = None
    windows: tuple[Window, ...] = ()
    end_time: float | None = None
    turns: tuple[tuple[float, str], ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"item {self.id!r}: protocol must be one of {', '.join(PROTOCOLS)}, got "
                             f"{self.protocol!r}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"item {self.id!r}: benchmark must be one of {', '.join(BENCHMARKS)}, got "
                             f"{self.benchmark!r}")
        if not self.ask_time >= 0:
            raise ValueError(f"item {self.id!r}: ask_time must be >= 0 seconds, got {self.ask_time!r}")
        for t, text in self.turns:
            if not (t >= 0 and isinstance(text, str) and text.strip()):
                raise ValueError(f"item {self.id!r}: a later turn needs a time >= 0 and a non-empty text, got "
                                 f"{(t, text)!r}")

    @property
    def letters(self) -> tuple[str, ...]:
        """The option letters, ``("A", "B", ...)``."""
        return tuple(chr(ord("A") + i) for i in range(len(self.options)))


@dataclass(frozen=True)
class Response:
    """What the model said for one item: every ``(t, text)`` it produced after the question, in time order (an
    ``mc`` item has one; a ``forward`` / ``proactive`` item as many as the model chose to give)."""

    item_id: str
    answers: tuple[tuple[float, str], ...] = ()


__all__ = ["BENCHMARKS", "PROTOCOLS", "OnlineItem", "Response", "Window"]

"""StreamSession: one stream, as programs the engine runs (SPEC §6).

A frame's way (:meth:`StreamSession.frame_program`): the session's :class:`~livecue.data.template.StreamCursor` gives
the ids to feed (``pending + frame tokens``: the interval ``,`` after a silent frame, ``<eos>\\n[`` after a reply,
``<bos>SYS\\n\\n[`` at the start); the program yields them as a :class:`Step`, the engine runs the forward and sends
back the last position's logits; :func:`~livecue.inference.decide.decide` reads them: silent iff p(silence) ≥ θ, else
the cursor's ``]\\nAssistant:`` is fed and a reply decoded token by token
(:func:`~livecue.inference.decide.next_token`) until eos or the cap, and the cursor closes the turn with eos. A query
asked at tq is answered before the first frame with t > tq, or right after the frame with t == tq. Last, the memory
policy plans an eviction (:mod:`~livecue.inference.memory`) and the session applies it to its cache.

A program is a generator: it yields each forward it needs and receives its logits, so the engine can run one alone
(``push_frame``) or many side by side, one forward for all per round (:class:`~livecue.inference.engine.Batch`).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..data.labels import Markers
from ..data.template import StreamCursor, Template
from ..model import lm as lm_api
from ..model.live import LiveModel
from .decide import SamplingConfig, decide, next_token
from .events import Answer, Event, Reply, Silence
from .memory import MemoryPolicy
from .options import StreamOptions, check_option

# on_token(kind: "reply" | "answer", t: stream time, ids: the reply's ids so far, query: the question or None)
TokenCallback = Callable[[str, float, list[int], "str | None"], None]


@dataclass
class Step:
    """One forward a session's program asks for: ``ids`` (with ``<v>`` placeholders), the features of its frame
    (``(1, K, D_vision)``) when it feeds one, and the ids' positions when the model needs them explicitly
    (``(3, 1, len(ids))`` for Qwen's M-RoPE; None: counted from the cache)."""

    session: StreamSession
    ids: list[int]
    features: torch.Tensor | None = None
    positions: torch.Tensor | None = None


#: a session's logic: yields each :class:`Step`, receives its last-position logits ``(V,)``, returns its result
Program = Generator[Step, torch.Tensor, Any]


class Engine(Protocol):
    """What a session uses of its engine (:class:`~livecue.inference.engine.StreamEngine`)."""

    model: LiveModel
    template: Template
    markers: Markers

    def encode_text(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def frame_features(self, frame: Any) -> torch.Tensor: ...
    def run(self, programs: list[Program]) -> list[Any]: ...


@dataclass
class _Query:
    t: float
    text: str
    answer: bool = True  # False: an instruction the model reads and then keeps watching (no reply turn)


class StreamSession:
    """The state of one stream. Create with :meth:`StreamEngine.session`, which resolves ``options``.

    Positions: ``next_position`` is the position of the next token fed. For a 1-D RoPE LM it is the cache length;
    with explicit positions (a VLM's M-RoPE, where a frame of K tokens spans fewer positions) each :class:`Step`
    carries its ids' positions (``LiveModel.positions`` from ``next_position``). An eviction re-bases both: the kept
    keys are re-rotated by the position distance of the evicted units, and ``next_position`` drops by it.

    Attributes:
        options: the resolved :class:`~livecue.inference.options.StreamOptions` (every value set: the model's
            ``stream.*`` where nothing else set one). θ may change between frames (:attr:`threshold`).
        cursor: where the stream stands in the template (:class:`~livecue.data.template.StreamCursor`).
        next_position: the position of the next token fed (see above).
        memory: the memory policy (plans evictions; the session applies them).
        history: the ids in the cache when recording (``record=True``), else None.
        on_token: called after every decoded reply/answer token (servers stream them).
        on_step: called with every :class:`Step` just before its forward (benchmarks trace them).
        on_evict: called with ``(start, end, shift)`` after the memory policy's eviction of cache positions
            ``[start, end)`` moved what follows ``shift`` positions back (benchmarks trace them).
    """

    def __init__(self, engine: Engine, options: StreamOptions, memory: MemoryPolicy, *, seed: int = 0,
                 record: bool = False, on_token: TokenCallback | None = None) -> None:
        markers = engine.markers
        self.engine = engine
        self.options = options
        self.sampling: SamplingConfig = options.sampling
        self.memory = memory
        self.cursor = StreamCursor(engine.template, engine.encode_text, options.system_prompt, markers=markers)
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: Any = None
        self.queries: collections.deque[_Query] = collections.deque()
        self.t = float("-inf")       # time of the last frame fed
        self.frames = 0
        self.replies = 0
        self.units: list[tuple[int, int]] = []  # cache spans of each frame step (with its reply); before: the sink
        self.unit_positions: list[tuple[int, int]] = []  # the positions at each unit's start and end
        self.next_position = 0
        self.evicted_tokens = 0
        self.history: list[int] | None = [] if record else None
        self.on_token = on_token
        self.on_step: Callable[[Step], None] | None = None
        self.on_evict: Callable[[int, int, int], None] | None = None
        self._sink: int | None = None           # cache length before the first frame's tokens (the attention sink)
        self._sink_position = 0                 # the position there
        self._forced_speak: bool | None = None  # see force()
        self._forced_reply_tokens: int | None = None

    # ---- options ----------------------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """θ: silent iff p(silence) ≥ θ. Settable between frames (checked like every option)."""
        return self.options.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.options = dataclasses.replace(self.options, threshold=value)

    @property
    def system_prompt(self) -> str:
        return self.options.system_prompt

    @property
    def max_reply_tokens(self) -> int:
        return self.options.max_reply_tokens

    def force(self, speak: bool | None = None, reply_tokens: int | None = None) -> None:
        """Take decisions out of the model's hands, from the next frame on (benchmarks, tests).

        Args:
            speak: True: every frame speaks; False: every frame stays silent; None: θ decides. p(silence) is
                computed and reported either way.
            reply_tokens: every reply and answer is exactly this long: eos cannot end it earlier, and it is closed
                as the reply cap closes one (``truncated``); None: eos or ``max_reply_tokens`` ends it.
        """
        self._forced_speak = speak
        self._forced_reply_tokens = None if reply_tokens is None else check_option("max_reply_tokens", reply_tokens)

    # ---- public -----------------------------------------------------------------------------------------------------
    def add_query(self, text: str, at: float | None = None, *, answer: bool = True) -> None:
        """Queue a user message at stream time ``at`` (default: now, i.e. the last frame's time).

        With ``answer=False`` it is an instruction (e.g. "Narrate what happens..."): the model reads it and keeps
        watching, as in training records where a user turn is followed by frames, not by a reply.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"a query must be a non-empty string, got {text!r}")
        at = max(self.t, 0.0) if at is None else float(at)
        items = sorted([*self.queries, _Query(at, text.strip(), answer)], key=lambda q: q.t)
        self.queries = collections.deque(items)

    def push_frame(self, frame: Any, t: float) -> list[Event]:
        """Feed one frame (pixels or precomputed ``(K, D_vision)`` features) at stream time ``t``.

        Returns the frame's events in order: answers to queries asked before it, then its decision (``Silence`` or
        ``Reply``) or the answers to queries asked at its time.
        """
        t = self.check_time(t)
        return self.engine.run([self.frame_program(self.engine.frame_features(frame), t)])[0]

    def finish(self) -> Iterator[Event]:
        """Answer the queries still waiting (the stream has ended), each as soon as it is decoded."""
        while self.queries:
            query = self.queries.popleft()
            yield from self.engine.run([self._handle(query, max(query.t, self.t))])[0]

    @property
    def context_length(self) -> int:
        """Tokens held in the KV cache."""
        return lm_api.cache_length(self.cache)

    def check_time(self, t: float) -> float:
        """``t`` as a float; ValueError when it is earlier than the last frame's time."""
        t = float(t)
        if t < self.t:
            raise ValueError(f"frame time {t} is earlier than the previous frame's {self.t}: times must not decrease")
        return t

    # ---- programs ---------------------------------------------------------------------------------------------------
    # A program yields each forward it needs as a Step and receives the last position's logits back. The engine runs
    # programs one at a time (push_frame) or many side by side, one forward for all per round (StreamEngine.step).
    def frame_program(self, features: torch.Tensor, t: float) -> Program:
        """The program of one frame (``features``: ``(K, D_vision)``); its return value is the frame's events."""
        start, start_position = self.context_length, self.next_position
        events: list[Event] = []
        while self.queries and self.queries[0].t < t:  # asked between the previous frame and this one
            query = self.queries.popleft()
            events += yield from self._handle(query, max(query.t, self.t))
        ids = self.cursor.frame()
        step = self._step(ids, features[None])
        if self._sink is None:  # everything before the first frame's tokens is the attention sink
            before = len(ids) - len(self.cursor.frame_ids)
            self._sink = self.context_length + before
            self._sink_position = self.next_position - len(ids) + before if step.positions is None else int(
                step.positions[0, 0, before])
        logits = yield step
        self.t = t
        self.frames += 1
        if self.queries and self.queries[0].t <= t:  # asked at this frame's time: answered instead of a decision
            while self.queries and self.queries[0].t <= t:
                events += yield from self._handle(self.queries.popleft(), t)
        else:
            d = decide(logits, self.engine.markers.silence, self.threshold, forced=self._forced_speak)
            if not d.speak:
                events.append(Silence(t=t, p_silence=d.p_silence, frame=self.frames - 1))
            else:
                began = time.perf_counter()
                ids, capped = yield from self._decode(self.cursor.reply(), ("reply", t, None))
                self.replies += 1
                events.append(Reply(t=t, text=self.engine.decode(ids), token_ids=ids,
                                    latency=time.perf_counter() - began, p_silence=d.p_silence,
                                    frame=self.frames - 1, truncated=capped))
        first = not self.units
        self.units.append((self._sink if first else start, self.context_length))
        self.unit_positions.append((self._sink_position if first else start_position, self.next_position))
        self._apply_memory()
        return events

    def finish_program(self) -> Program:
        """:meth:`finish` as a program (its return value is the events), to run in a
        :class:`~livecue.inference.engine.Batch` beside other sessions' frames, where it can be cancelled between
        forwards like any frame."""
        events: list[Event] = []
        while self.queries:
            query = self.queries.popleft()
            events += yield from self._handle(query, max(query.t, self.t))
        return events

    def _handle(self, query: _Query, t: float) -> Program:
        """Answer ``query`` (its events), or queue it as an instruction the next frame feeds (no events)."""
        if not query.answer:
            self.cursor.instruction(query.text)
            return []
        began = time.perf_counter()
        ids, capped = yield from self._decode(self.cursor.query(query.text), ("answer", t, query.text))
        return [Answer(t=t, query=query.text, text=self.engine.decode(ids), token_ids=ids,
                       latency=time.perf_counter() - began, query_t=query.t, truncated=capped)]

    def _decode(self, prompt: list[int], turn: tuple[str, float, str | None]) -> Program:
        """Feed ``prompt``, decode until eos or the cap, close the turn. Returns (reply ids, capped)."""
        cap = self._forced_reply_tokens or self.max_reply_tokens
        eos = self.engine.markers.eos
        # a reply never holds frame tokens (a VLM's image token is in its vocabulary; a random one may pick it)
        ban = self.engine.markers.frame_tokens + ((eos,) if self._forced_reply_tokens else ())
        logits = yield self._step(prompt)
        out: list[int] = []
        while len(out) < cap:
            token = next_token(logits, self.sampling, out, self.generator, ban=ban)
            if token == eos:
                break
            out.append(token)
            if self.on_token is not None:
                self.on_token(turn[0], turn[1], out, turn[2])
            if len(out) < cap:  # a capped reply's last token is fed with eos, by whatever comes next
                logits = yield self._step([token])
        capped = len(out) == cap
        self.cursor.end_turn(out, capped)
        return out, capped

    def _step(self, ids: list[int], features: torch.Tensor | None = None) -> Step:
        """The :class:`Step` that feeds ``ids`` next, with their positions when the model needs them."""
        model = self.engine.model
        if not model.explicit_positions:
            self.next_position += len(ids)
            return Step(self, ids, features)
        positions, after = model.positions(torch.tensor([ids]), self.next_position)
        self.next_position = int(after[0])
        return Step(self, ids, features, positions)

    def _apply_memory(self) -> None:
        """Evict what the memory policy plans (it only sees the unit spans and the cache length): the first
        ``plan.units`` units, re-basing what follows by their position distance."""
        plan = self.memory.plan(self.units, self.context_length)
        if plan is None:
            return
        if (plan.start, plan.end) != (self.units[0][0], self.units[plan.units - 1][1]):
            raise ValueError(f"memory policy {type(self.memory).__name__} planned [{plan.start}, {plan.end}), which "
                             f"is not its first {plan.units} units")
        tokens = shift = plan.end - plan.start
        if self.engine.model.explicit_positions:  # a frame spans fewer positions than tokens
            shift = self.unit_positions[plan.units - 1][1] - self.unit_positions[0][0]
        lm_api.evict_span(self.engine.model.lm, self.cache, plan.start, plan.end, shift=shift)
        self.units = [(a - tokens, b - tokens) for a, b in self.units[plan.units:]]
        self.unit_positions = [(a - shift, b - shift) for a, b in self.unit_positions[plan.units:]]
        self.next_position -= shift
        self.evicted_tokens += tokens
        if self.history is not None:
            del self.history[plan.start:plan.end]
        if self.on_evict is not None:
            self.on_evict(plan.start, plan.end, shift)


__all__ = ["Engine", "Program", "Step", "StreamSession", "TokenCallback"]

"""StreamEngine: the one streaming loop behind every front door (CLI, server, evaluation). SPEC §6.

One engine holds the model and tokenizer; each stream is a :class:`StreamSession` object (its KV cache, pending
tokens, query queue and clock), so many sessions can share one model. The engine keeps a default session so that
the simple contract reads::

    engine = StreamEngine(model, tokenizer)
    engine.reset(system_prompt)
    engine.add_query("What colour is the square?", at=3.0)
    for event in engine.push_frame(frame, t): ...          # Silence | Reply | Answer
    for event in engine.finish(): ...                      # answers queries still waiting at the end

Per frame the session feeds ``pending + frame tokens`` in one cached forward (the pending prefix is the interval
``,`` after a silent frame, ``<eos>\\n[`` after a reply, ``<bos>SYS\\n\\n[`` at the start) and reads the last
position: silent iff p(silence) ≥ θ, else it feeds ``]\\nAssistant:`` and decodes a reply. A query asked at time
tq is answered before the first frame with t > tq is fed, or right after the frame with t == tq, by feeding
``]\\nUser: q\\nAssistant:``. A reply that hits the token cap is closed with eos like any other, so the context
stays well-formed.

Many sessions, one forward: a session's logic is a generator ("program") that yields each forward it needs.
``push_frame`` runs one program alone; ``engine.step([(session, frame, t), ...])`` runs one per session side by
side and :class:`Batch` keeps a continuous batch (programs join at any round, finished frames leave), each round
one ragged LM forward for all (:func:`livecue.model.lm.ragged_forward`). The decisions are the same code either way.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterator

import numpy as np
import torch

from ..data.labels import Markers
from ..data.template import GENERATION_PROMPT, STREAM_GENERATION_PROMPT, STREAM_PROMPT, Template
from ..model import lm as lm_api
from ..model.attention import use_stream_attention
from ..model.live import LiveModel
from .decide import SamplingConfig, decide, next_token
from .events import Answer, Event, Reply, Silence
from .memory import MemoryPolicy, Unbounded

log = logging.getLogger(__name__)
_CACHE_MAX_LEN = 128  # texts / id lists longer than this (user text: system prompts, queries) are never cached


def to_frame_tensor(frame: Any) -> torch.Tensor:
    """A frame as ``(3, H, W)`` uint8: accepts ``(H, W, 3)`` numpy/torch or ``(3, H, W)`` torch."""
    x = torch.from_numpy(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 3:
        raise TypeError(f"a frame must be a uint8 (H, W, 3) or (3, H, W) array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
    if x.shape[0] == 3 and x.shape[-1] != 3:
        return x
    if x.shape[-1] == 3:
        return x.permute(2, 0, 1)
    raise TypeError(f"a frame must have 3 colour channels, got shape {tuple(x.shape)}")


# on_token(kind: "reply" | "answer", t: stream time, ids: the reply's ids so far, query: the question or None)
TokenCallback = Callable[[str, float, list[int], "str | None"], None]


@dataclass
class _Query:
    t: float
    text: str
    answer: bool = True  # False: an instruction the model reads and then keeps watching (no reply turn)


class StreamSession:
    """The state of one stream. Create with :meth:`StreamEngine.session`."""

    def __init__(self, engine: "StreamEngine", system_prompt: str | None = None, threshold: float | None = None,
                 sampling: SamplingConfig | None = None, max_reply_tokens: int | None = None, seed: int = 0,
                 record: bool = False, memory: MemoryPolicy | None = None,
                 on_token: TokenCallback | None = None) -> None:
        cfg = engine.model.cfg.stream
        self.engine = engine
        self.system_prompt = cfg.system_prompt if system_prompt is None else system_prompt
        self.threshold = cfg.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        self.sampling = sampling or engine.sampling
        self.max_reply_tokens = max_reply_tokens or cfg.max_reply_tokens
        self.generator = torch.Generator().manual_seed(seed)
        self.cache: Any = None
        bos = [engine.markers.bos] if engine.template.bos and engine.markers.bos is not None else []
        self._pending_ids: list[int] = bos
        self._pending_text: str = self.system_prompt + "\n"
        self._in_stream = False      # "[" is open: frames may follow with the interval between them
        self._after_frame = False    # the last thing fed was a frame
        self.queries: collections.deque[_Query] = collections.deque()
        self.t = float("-inf")       # time of the last frame fed
        self.frames = 0
        self.replies = 0
        self.history: list[int] | None = [] if record else None  # the ids in the cache, when recording (tests)
        self.memory: MemoryPolicy = memory or engine.memory
        self.units: list[tuple[int, int]] = []  # cache spans of each frame step (with its reply); before: the sink
        self.evicted_tokens = 0
        self._sink: int | None = None
        self.on_token = on_token  # called after every decoded reply/answer token (servers stream them)

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
        t = self._check_time(t)
        return self.engine.run([self.frame_program(self.engine.frame_features(frame), t)])[0]

    def finish(self) -> Iterator[Event]:
        """Answer the queries still waiting (the stream has ended)."""
        while self.queries:
            query = self.queries.popleft()
            yield from self.engine.run([self._handle(query, max(query.t, self.t))])[0]

    def finish_program(self) -> Program:
        """:meth:`finish` as a program (its return value is the events), to run in a :class:`Batch` beside other
        sessions' frames, where it can be cancelled between forwards like any frame."""
        events: list[Event] = []
        while self.queries:
            query = self.queries.popleft()
            events += yield from self._handle(query, max(query.t, self.t))
        return events

    @property
    def context_length(self) -> int:
        """Tokens held in the KV cache."""
        return lm_api.cache_length(self.cache)

    # ---- the step program -------------------------------------------------------------------------------------------
    # A session's logic is a generator ("program") that yields each forward it needs as a :class:`Step` and receives
    # the last position's logits back. The engine runs programs one at a time (``push_frame``) or many side by side,
    # one forward for all of them per round (``StreamEngine.step``): the same code decides in both cases.
    def _check_time(self, t: float) -> float:
        t = float(t)
        if t < self.t:
            raise ValueError(f"frame time {t} is earlier than the previous frame's {self.t}: times must not decrease")
        return t

    def frame_program(self, features: torch.Tensor, t: float) -> Program:
        """The program of one frame (``features``: ``(K, D_vision)``); its return value is the frame's events."""
        start = self.context_length
        events: list[Event] = []
        while self.queries and self.queries[0].t < t:  # asked between the previous frame and this one
            query = self.queries.popleft()
            events += yield from self._handle(query, max(query.t, self.t))
        yield from self._feed_frame(features)
        self.t = t
        self.frames += 1
        if self.queries and self.queries[0].t <= t:
            while self.queries and self.queries[0].t <= t:
                events += yield from self._handle(self.queries.popleft(), t)
        else:
            d = decide(self._last_logits, self.engine.markers.silence, self.threshold)
            if not d.speak:
                events.append(Silence(t=t, p_silence=d.p_silence, frame=self.frames - 1))
            else:
                began = time.perf_counter()
                ids, truncated = yield from self._generate(STREAM_GENERATION_PROMPT, ("reply", t, None))
                self.replies += 1
                events.append(Reply(t=t, text=self.engine.decode(ids), token_ids=ids,
                                    latency=time.perf_counter() - began, p_silence=d.p_silence,
                                    frame=self.frames - 1, truncated=truncated))
        self.units.append((self._sink if not self.units else start, self.context_length))
        self._apply_memory()
        return events

    def _apply_memory(self) -> None:
        """Evict what the memory policy plans (it only sees the unit spans and the cache length)."""
        plan = self.memory.plan(self.units, self.context_length)
        if plan is None:
            return
        lm_api.evict_span(self.engine.model.lm, self.cache, plan.start, plan.end)
        shift = plan.end - plan.start
        self.units = [(a - shift, b - shift) for a, b in self.units[plan.units:]]
        self.evicted_tokens += shift
        if self.history is not None:
            del self.history[plan.start:plan.end]

    def _feed_frame(self, features: torch.Tensor) -> Program:
        if not self._in_stream:
            self._pending_text += STREAM_PROMPT
        elif self._after_frame:
            self._pending_text += self.engine.template.frame_interval
        ids = self._take_pending() + self.engine.frame_ids
        if self._sink is None:  # everything before the first frame's tokens is the attention sink
            self._sink = self.context_length + len(ids) - len(self.engine.frame_ids)
        self._last_logits = yield Step(self, ids, features[None])
        self._in_stream, self._after_frame = True, True

    def _handle(self, query: _Query, t: float) -> Program:
        if query.answer:
            return [(yield from self._answer(query, t))]
        # an instruction: close the stream, add the user turn; the next frame reopens the stream ("\n[")
        self._pending_text += self.engine.template.user_turn(query.text, in_stream=self._in_stream)
        self._in_stream = self._after_frame = False
        return []

    def _answer(self, query: _Query, t: float) -> Program:
        start = time.perf_counter()
        prompt = self.engine.template.query_prompt(query.text, in_stream=self._in_stream)
        ids, truncated = yield from self._generate(prompt, ("answer", t, query.text))
        return Answer(t=t, query=query.text, text=self.engine.decode(ids), token_ids=ids,
                      latency=time.perf_counter() - start, query_t=query.t, truncated=truncated)

    def _generate(self, prompt: str, turn: tuple[str, float, str | None]) -> Program:
        """Feed ``pending + prompt``, decode until eos or the cap; leave eos pending. Returns (reply ids, truncated)."""
        self._pending_text += prompt
        self._last_logits = yield Step(self, self._take_pending())
        eos = self.engine.markers.eos
        out: list[int] = []
        truncated = True
        while len(out) < self.max_reply_tokens:
            token = next_token(self._last_logits, self.sampling, out, self.generator)
            if token == eos:
                truncated = False
                break
            out.append(token)
            if self.on_token is not None:
                self.on_token(turn[0], turn[1], out, turn[2])
            if len(out) < self.max_reply_tokens:
                self._last_logits = yield Step(self, [token])
        # The turn is closed in every case: eos (sampled, or forced at the cap after the last unfed token) is the
        # pending prefix of whatever comes next, so the context reads "... reply<eos>\n[" as in training.
        self._pending_ids = ([out[-1]] if truncated and out else []) + [eos]
        self._pending_text = ""
        self._in_stream = self._after_frame = False
        return out, truncated

    def _take_pending(self) -> list[int]:
        ids = self._pending_ids + self.engine.encode_text(self._pending_text)
        self._pending_ids, self._pending_text = [], ""
        return ids


@dataclass
class Step:
    """One forward a session's program asks for: ``ids`` (with ``<v>`` placeholders) and the features of its frame
    (``(1, K, D_vision)``) when it feeds one."""

    session: StreamSession
    ids: list[int]
    features: torch.Tensor | None = None


Program = Generator[Step, torch.Tensor, Any]


class Batch:
    """Continuous batching of session programs: every :meth:`round` runs one LM forward for all programs in the
    batch and returns those that finished; new programs may join before any round. A session whose frame is done
    (silent frames take one round) takes its next frame while others are still decoding replies, so a frame's
    latency is its own work, not the longest reply of the batch."""

    def __init__(self, engine: "StreamEngine") -> None:
        self.engine = engine
        self._waiting: list[tuple[Any, Program, Step]] = []
        self._done: list[tuple[Any, Any]] = []

    def __len__(self) -> int:
        return len(self._waiting) + len(self._done)

    @property
    def sessions(self) -> list[StreamSession]:
        """Sessions with a program in the batch."""
        return [step.session for _, _, step in self._waiting]

    def add(self, program: Program, key: Any = None) -> None:
        """Start ``program`` (it runs up to its first forward); ``key`` comes back with its result."""
        self._advance(key, program, None)

    def add_frame(self, session: StreamSession, frame: Any, t: float, key: Any = None) -> None:
        """Add the program of one frame of ``session`` (pixels or ``(K, D)`` features) at time ``t``."""
        if any(step.session is session for _, _, step in self._waiting):
            raise ValueError("this session already has a frame in the batch: one frame per session at a time")
        t = session._check_time(t)
        self.add(session.frame_program(self.engine.frame_features(frame), t), key=session if key is None else key)

    def round(self) -> list[tuple[Any, Any]]:
        """One forward for every waiting program; returns ``(key, result)`` of the programs that finished."""
        batch, self._waiting = self._waiting, []
        if batch:
            logits = self.engine._execute([step for _, _, step in batch])
            for (key, program, _), row in zip(batch, logits):
                self._advance(key, program, row)
        done, self._done = self._done, []
        return done

    @property
    def keys(self) -> list[Any]:
        """Keys of the programs still running."""
        return [key for key, _, _ in self._waiting]

    def cancel(self, key: Any) -> bool:
        """Stop the program added with ``key`` before its next forward (e.g. its client has gone): it is closed and
        never reported. Its session's state is left mid-step (drop the session); the other programs and their
        sessions are untouched. Returns whether such a program was in the batch."""
        found = False
        for entry in [e for e in self._waiting if e[0] is key or e[0] == key]:
            self._waiting.remove(entry)
            entry[1].close()
            found = True
        before = len(self._done)
        self._done = [d for d in self._done if not (d[0] is key or d[0] == key)]
        return found or len(self._done) != before

    def _advance(self, key: Any, program: Program, logits: torch.Tensor | None) -> None:
        """Run ``program`` up to its next forward. A program that raises finishes with the exception as its result
        (the others go on)."""
        try:
            step = program.send(logits)
            if any(s.session is step.session for _, _, s in self._waiting):
                raise ValueError("two programs of the same session in one batch")
        except StopIteration as finished:
            self._done.append((key, finished.value))
            return
        except Exception as e:  # noqa: BLE001 - reported as this program's result
            program.close()
            self._done.append((key, e))
            return
        self._waiting.append((key, program, step))


class StreamEngine:
    """Shared model + tokenizer + template; sessions hold per-stream state.

    Args:
        model: a :class:`~livecue.model.live.LiveModel`.
        tokenizer: its tokenizer (with ``<v>``).
        sampling: default reply decoding (greedy).
        memory: default memory policy of new sessions (:class:`~livecue.inference.memory.Unbounded`).
    """

    def __init__(self, model: LiveModel, tokenizer: Any, sampling: SamplingConfig | None = None,
                 memory: MemoryPolicy | None = None) -> None:
        self.model = model
        # exact; frame steps on a long cache without copying grouped KV heads; ragged multi-session forwards
        self.batched = use_stream_attention(model.lm) and lm_api.supports_ragged(model.lm)
        self.memory: MemoryPolicy = memory or Unbounded()
        self.tokenizer = tokenizer
        cfg = model.cfg
        self.template = Template.from_config(cfg, tokenizer)
        self.markers = Markers.from_tokenizer(tokenizer, cfg.stream.v_placeholder, cfg.stream.frame_interval)
        if self.markers.v != model.v_token_id:
            raise ValueError(f"tokenizer <v> id {self.markers.v} differs from the model's {model.v_token_id}")
        self.frame_ids = [self.markers.v] * cfg.frame_num_tokens
        self.sampling = sampling or SamplingConfig()
        self._text_ids: dict[str, list[int]] = {}
        self._id_tensors: dict[tuple[int, ...], torch.Tensor] = {}
        self._default: StreamSession | None = None

    # ---- sessions -------------------------------------------------------------------------------------------------
    def session(self, system_prompt: str | None = None, **kwargs: Any) -> StreamSession:
        """A new independent stream sharing this engine's model."""
        return StreamSession(self, system_prompt, **kwargs)

    def reset(self, system_prompt: str | None = None, **kwargs: Any) -> StreamSession:
        """Start the default session afresh."""
        self._default = self.session(system_prompt, **kwargs)
        return self._default

    @property
    def default(self) -> StreamSession:
        if self._default is None:
            self.reset()
        return self._default

    def add_query(self, text: str, at: float | None = None, *, answer: bool = True) -> None:
        self.default.add_query(text, at, answer=answer)

    def push_frame(self, frame: Any, t: float) -> list[Event]:
        return self.default.push_frame(frame, t)

    def finish(self) -> Iterator[Event]:
        return self.default.finish()

    # ---- many sessions at once --------------------------------------------------------------------------------------
    def step(self, items: list[tuple[StreamSession, Any, float]]) -> list[list[Event]]:
        """Advance several sessions by one frame each, together: ``items`` is ``[(session, frame, t), ...]`` (any
        subset of this engine's sessions: sessions join and leave between calls). Pixel frames are encoded in one
        vision batch (per frame size); then every round runs one LM forward for all sessions that need one (frame
        tokens, prompts, reply tokens side by side, each attending to its own cache), until every session is done
        with its frame. Returns each session's events, as its ``push_frame`` would (tested: same events, same
        caches up to float rounding).
        """
        sessions = [item[0] for item in items]
        if len({id(s) for s in sessions}) != len(sessions):
            raise ValueError("step() got the same session twice: one frame per session per step")
        for session in sessions:
            if session.engine is not self:
                raise ValueError("step() got a session of another engine")
        times = [session._check_time(t) for session, _, t in items]
        features = self.frame_features_batch([frame for _, frame, _ in items])
        return self.run([s.frame_program(f, t) for s, f, t in zip(sessions, features, times)])

    def run(self, programs: list[Program]) -> list[Any]:
        """Run session programs to completion side by side (one forward per round for all programs that need one);
        returns their results. Programs must belong to distinct sessions."""
        batch = self.batch()
        for i, program in enumerate(programs):
            batch.add(program, key=i)
        results: list[Any] = [None] * len(programs)
        while batch:
            for i, result in batch.round():
                results[i] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    def batch(self) -> "Batch":
        """An empty continuous batch (:class:`Batch`): add programs at any round, collect each when it is done."""
        return Batch(self)

    @torch.inference_mode()
    def _execute(self, steps: list[Step]) -> list[torch.Tensor]:
        """Run the forwards of ``steps`` (distinct sessions): one ragged forward when the LM supports it, else one
        forward each. Returns each step's last-position logits ``(V,)``."""
        for step in steps:
            if step.session.history is not None:
                step.session.history.extend(step.ids)
        if len(steps) == 1 or not self.batched:
            out = []
            for step in steps:
                res = self.model(self.ids_tensor(step.ids), frame_features=step.features, cache=step.session.cache,
                                 use_cache=True, logits_to_keep=1)
                step.session.cache = res.cache
                out.append(res.logits[0, -1])
            return out
        features = [step.features for step in steps if step.features is not None]
        ids = self.ids_tensor([i for step in steps for i in step.ids])
        logits, caches = self.model.forward_streams(ids, torch.cat(features) if features else None,
                                                    [step.session.cache for step in steps],
                                                    [len(step.ids) for step in steps])
        for step, cache in zip(steps, caches):
            step.session.cache = cache
        return list(logits)

    # ---- shared helpers -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, frames: Any) -> torch.Tensor:
        """Vision features for a batch of frames (what a worker thread runs ahead of the LLM).

        Shape: list of frames or (F, 3, H, W) uint8 -> (F, K, D_vision).
        """
        if isinstance(frames, (list, tuple)):
            frames = torch.stack([to_frame_tensor(f) for f in frames])
        return self.model.encode_frames(frames)

    def frame_features_batch(self, frames: list[Any], return_errors: bool = False) -> list[Any]:
        """``(K, D_vision)`` features of each frame (pixels or features already); pixel frames of the same size are
        encoded in one vision batch. With ``return_errors`` a frame (or size group) that fails gets its exception
        in its place instead of raising (servers report it to that stream only)."""
        out: list[Any] = [None] * len(frames)
        groups: dict[tuple[int, ...], list[int]] = {}
        pixels: dict[int, torch.Tensor] = {}
        for i, frame in enumerate(frames):
            try:
                if isinstance(frame, torch.Tensor) and frame.is_floating_point():
                    out[i] = self.frame_features(frame)
                else:
                    pixels[i] = to_frame_tensor(frame)
                    groups.setdefault(tuple(pixels[i].shape), []).append(i)
            except Exception as e:
                if not return_errors:
                    raise
                out[i] = e
        for idx in groups.values():
            try:
                for i, features in zip(idx, self.encode(torch.stack([pixels[i] for i in idx]))):
                    out[i] = features
            except Exception as e:
                if not return_errors:
                    raise
                log.exception("vision encode failed")
                for i in idx:
                    out[i] = e
        return out

    def frame_features(self, frame: Any) -> torch.Tensor:
        """``(K, D_vision)`` features of one frame given as pixels or as features already."""
        if isinstance(frame, torch.Tensor) and frame.is_floating_point():
            if frame.ndim != 2 or frame.shape[0] != self.model.frame_num_tokens:
                raise ValueError(f"frame features must have shape ({self.model.frame_num_tokens}, D), "
                                 f"got {tuple(frame.shape)}")
            return frame
        return self.encode(to_frame_tensor(frame)[None])[0]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of template text; special-token strings inside user text are NOT parsed as special tokens."""
        if not text:
            return []
        ids = self._text_ids.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids
            if len(self._text_ids) < 4096 and len(text) <= _CACHE_MAX_LEN:  # template pieces, not user text
                self._text_ids[text] = ids
        return list(ids)

    def ids_tensor(self, ids: list[int]) -> torch.Tensor:
        """``(1, T)`` CPU tensor of ``ids`` (the model moves it to its device), reused for repeated id lists (each
        silent frame's, each reply token's): building a tensor costs more than looking one up. Never modified."""
        key = tuple(ids)
        tensor = self._id_tensors.get(key)
        if tensor is None:
            tensor = torch.tensor([ids])
            if len(self._id_tensors) < 8192 and len(ids) <= _CACHE_MAX_LEN:
                self._id_tensors[key] = tensor
        return tensor

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


__all__ = ["StreamEngine", "StreamSession", "SamplingConfig", "GENERATION_PROMPT", "to_frame_tensor"]

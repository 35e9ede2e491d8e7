"""StreamEngine: the one streaming loop behind every front door (CLI, server, evaluation). SPEC §6.

One engine holds the model and tokenizer; each stream is a :class:`StreamSession` (its KV cache, its place in the
template, its query queue and clock), so many sessions share one model. The engine keeps a default session so that
the simple contract reads::

    engine = StreamEngine(model, tokenizer)                 # or StreamEngine(model, tokenizer, StreamOptions(...))
    engine.reset(system_prompt)
    engine.add_query("What colour is the square?", at=3.0)
    for event in engine.push_frame(frame, t): ...          # Silence | Reply | Answer
    for event in engine.finish(): ...                      # answers queries still waiting at the end

A frame's way: ``push_frame`` -> the session's frame program
(:meth:`~livecue.inference.session.StreamSession.frame_program`: its template cursor gives the ids, it yields them as
a :class:`Step`) -> :meth:`StreamEngine.run` -> :meth:`Batch.round` -> ``_execute`` (one cached forward) -> the last
logits go back to the program, which decides (and yields the reply's forwards the same way).

Many sessions, one forward: ``push_frame`` runs one program alone; ``engine.step([(session, frame, t), ...])`` runs
one per session side by side and :class:`Batch` keeps a continuous batch (programs join at any round, finished frames
leave), each round one ragged LM forward for all (:func:`livecue.model.lm.ragged_forward`). The decisions are the
same code either way.

Positions: a 1-D RoPE LM counts them from each stream's cache. A model whose positions are not one per token (a VLM
base with Qwen's M-RoPE, where a frame of K tokens spans fewer positions) gets each :class:`Step`'s own, which the
session computes from its ``next_position`` (re-based by evictions); forwards pass them on, alone or ragged.

Fast path (``fast=FastPath(...)``, docs/fast_path.md): the sessions' caches are slots of one preallocated KV pool
and every forward, of one session or many, is a round over it (:class:`livecue.model.kvpool.PooledLM`: one write
and one attention call per layer; with ``compile``, ``torch.compile`` over bucketed static shapes). Same programs,
same decisions; only ``_execute`` changes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..data.labels import Markers
from ..data.template import GENERATION_PROMPT, Template
from ..model import lm as lm_api
from ..model.attention import use_stream_attention
from ..model.devices import compile_mode
from ..model.kvpool import KVPool, PooledLM
from ..model.live import LiveModel
from .events import Event
from .memory import MemoryPolicy, SinkWindow, Unbounded, memory_spec
from .options import FastPath, SamplingConfig, StreamOptions
from .session import Program, Step, StreamSession, TokenCallback

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


class Batch:
    """Continuous batching of session programs: every :meth:`round` runs one LM forward for all programs in the
    batch and returns those that finished; new programs may join before any round. A session whose frame is done
    (silent frames take one round) takes its next frame while others are still decoding replies, so a frame's
    latency is its own work, not the longest reply of the batch."""

    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine
        self._waiting: list[tuple[Any, Program, Step]] = []
        self._done: list[tuple[Any, Any]] = []

    def __len__(self) -> int:
        return len(self._waiting) + len(self._done)

    @property
    def sessions(self) -> list[StreamSession]:
        """Sessions with a program in the batch."""
        return [step.session for _, _, step in self._waiting]

    @property
    def keys(self) -> list[Any]:
        """Keys of the programs still running."""
        return [key for key, _, _ in self._waiting]

    def add(self, program: Program, key: Any = None) -> None:
        """Start ``program`` (it runs up to its first forward); ``key`` comes back with its result."""
        self._advance(key, program, None)

    def add_frame(self, session: StreamSession, frame: Any, t: float, key: Any = None) -> None:
        """Add the program of one frame of ``session`` (pixels or ``(K, D)`` features) at time ``t``."""
        if any(step.session is session for _, _, step in self._waiting):
            raise ValueError("this session already has a frame in the batch: one frame per session at a time")
        t = session.check_time(t)
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
        options: the defaults of every session of this engine (unset: the model's ``stream.*``, greedy replies,
            unbounded memory).
        sampling: reply decoding (replaces the sampling ``options`` set).
        memory: memory policy of new sessions (replaces ``options.memory``; any
            :class:`~livecue.inference.memory.MemoryPolicy`).
        fast: how forwards run (:class:`~livecue.inference.options.FastPath`: ``torch.compile``, the KV pool,
            the batched attention); default: eager, each session its own growing cache.
    """

    def __init__(self, model: LiveModel, tokenizer: Any, options: StreamOptions | None = None, *,
                 sampling: SamplingConfig | None = None, memory: MemoryPolicy | None = None,
                 fast: FastPath | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.options = _override(options or StreamOptions(), sampling=sampling, memory=memory)
        self.memory: MemoryPolicy = memory if memory is not None else self.options.memory_policy(Unbounded())
        self.sampling = self.options.sampling
        # exact; frame steps on a long cache without copying grouped KV heads; ragged multi-session forwards
        self.batched = use_stream_attention(model.lm) and lm_api.supports_ragged(model.lm)
        self.sliding_window = lm_api.sliding_window(model.lm)  # bounded memory keeps at least that many tokens
        self.fast = fast or FastPath()
        self.pooled = self._pooled_lm() if self.fast.pooled else None  # every forward a round over the KV pool
        cfg = model.cfg
        self.template = Template.from_config(cfg, tokenizer)
        self.markers = Markers.from_template(tokenizer, self.template)
        if self.markers.v != model.v_token_id:
            raise ValueError(f"tokenizer <v> id {self.markers.v} differs from the model's {model.v_token_id}")
        self._text_ids: dict[str, list[int]] = {}
        self._id_tensors: dict[tuple[int, ...], torch.Tensor] = {}
        self._default: StreamSession | None = None

    def _pooled_lm(self) -> PooledLM:
        """The KV pool and the (compiled) pooled step of :attr:`fast`; ValueError naming what this model lacks."""
        what = "--compile" if self.fast.compile else "the KV pool"
        if not self.batched:
            raise ValueError(f"{what}: {type(self.model.lm).__name__} has sliding-window or bidirectional attention "
                             "layers, or an attention other than sdpa; the KV pool holds full causal attention only")
        capacity = self.fast.pool_capacity or (self.memory.max_tokens + 512 if isinstance(self.memory, SinkWindow)
                                               else 2048)
        mode = compile_mode(self.model.device) if self.fast.compile else None
        return PooledLM(self.model.lm, KVPool(capacity, self.fast.pool_slots), self.fast.pool_attention, mode)

    # ---- sessions -------------------------------------------------------------------------------------------------
    def session(self, system_prompt: str | None = None, *, options: StreamOptions | None = None,
                threshold: float | None = None, max_reply_tokens: int | None = None,
                sampling: SamplingConfig | None = None, memory: MemoryPolicy | None = None,
                on_token: TokenCallback | None = None, record: bool = False, seed: int = 0) -> StreamSession:
        """A new independent stream sharing this engine's model.

        Each option comes from the first that sets it: the keywords here, ``options``, the engine's options, the
        model's ``stream.*`` (sampling: greedy; memory: the engine's policy). Every value is checked by
        :class:`~livecue.inference.options.StreamOptions` (ValueError naming the option).

        Args:
            on_token: called after every decoded reply/answer token (kind, t, ids so far, query).
            record: keep the ids fed in ``session.history`` (tests).
            seed: seed of reply sampling.
        """
        cfg = self.model.cfg.stream
        model_values = StreamOptions(threshold=cfg.threshold, fps=cfg.fps, system_prompt=cfg.system_prompt,
                                     max_reply_tokens=cfg.max_reply_tokens)
        explicit = StreamOptions(system_prompt=system_prompt, threshold=threshold, max_reply_tokens=max_reply_tokens)
        resolved = model_values.merged(self.options).merged(options).merged(explicit)
        if memory is None:
            memory = options.memory_policy(self.memory) if options is not None else self.memory
        resolved = _override(resolved, sampling=sampling or resolved.sampling, memory=memory)
        window = self.sliding_window
        if window and isinstance(memory, SinkWindow) and memory.max_tokens - memory.chunk < window:
            raise ValueError(f"memory {memory_spec(memory)} keeps at most {memory.max_tokens - memory.chunk} tokens "
                             f"after an eviction, fewer than this model's sliding window ({window}): use "
                             f"max_tokens - chunk >= {window} plus the system prompt and a frame")
        return StreamSession(self, resolved, memory, seed=seed, record=record, on_token=on_token)

    def reset(self, system_prompt: str | None = None, **kwargs: Any) -> StreamSession:
        """Start the default session afresh (keywords as :meth:`session`)."""
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
        times = [session.check_time(t) for session, _, t in items]
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

    def batch(self) -> Batch:
        """An empty continuous batch (:class:`Batch`): add programs at any round, collect each when it is done."""
        return Batch(self)

    @torch.inference_mode()
    def _execute(self, steps: list[Step]) -> list[torch.Tensor]:
        """Run the forwards of ``steps`` (distinct sessions): one ragged forward when the LM supports it, else one
        forward each. Returns each step's last-position logits ``(V,)``."""
        for step in steps:
            if step.session.history is not None:
                step.session.history.extend(step.ids)
            if step.session.on_step is not None:
                step.session.on_step(step)
        if self.pooled is None and (len(steps) == 1 or not self.batched):
            out = []
            for step in steps:
                at = {} if step.positions is None else {"position_ids": step.positions}
                res = self.model(self.ids_tensor(step.ids), frame_features=step.features, cache=step.session.cache,
                                 use_cache=True, logits_to_keep=1, **at)
                step.session.cache = res.cache
                out.append(res.logits[0, -1])
            return out
        features = [step.features for step in steps if step.features is not None]
        ids = self.ids_tensor([i for step in steps for i in step.ids])
        at = {} if steps[0].positions is None else {"positions": [step.positions for step in steps]}
        logits, caches = self.model.forward_streams(ids, torch.cat(features) if features else None,
                                                    [step.session.cache for step in steps],
                                                    [len(step.ids) for step in steps], pooled=self.pooled, **at)
        for step, cache in zip(steps, caches):
            step.session.cache = cache
        return list(logits)

    # ---- frames and text ------------------------------------------------------------------------------------------
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


def _override(options: StreamOptions, *, sampling: SamplingConfig | None,
              memory: MemoryPolicy | None) -> StreamOptions:
    """``options`` with the sampling and memory given as objects in their place (a policy other than the built-in
    ones has no spelling: its ``memory`` is left unset)."""
    if sampling is not None:
        options = dataclasses.replace(options, **dataclasses.asdict(sampling))
    if memory is not None:
        options = dataclasses.replace(options, memory=memory_spec(memory) if isinstance(
            memory, (Unbounded, SinkWindow)) else None)
    return options


__all__ = ["Batch", "Program", "Step", "StreamEngine", "StreamSession", "SamplingConfig", "GENERATION_PROMPT",
           "to_frame_tensor"]

"""One model, many streams: the scheduler that steps every session on a single model worker thread.

Each connected client owns a :class:`ServeSession`: an engine session (KV cache, queries, clock), a bounded queue
of decoded frames and an inbox of controls (queries, θ updates). One worker thread owns the model and runs rounds:

1. apply every session's controls (in arrival order);
2. take **one** frame from each session that has frames waiting and none in flight, round-robin from where the
   last round stopped (at most ``max_batch`` sessions in flight), so a busy stream cannot starve the others;
3. encode those frames with the vision tower in one batch per frame size and add them to the engine's continuous
   batch (:class:`~livecue.inference.engine.Batch`);
4. run **one** LM forward for every frame in flight (frame tokens, prompts and reply tokens of all sessions side
   by side) and deliver the frames that finished: a silent frame takes one round, a reply one round per token,
   and a session whose frame is done takes its next frame while others are still speaking. Reply tokens stream
   as ``reply_delta`` events as they are decoded.

A full queue drops its **oldest** frame: the model always watches recent footage. Drops are counted and reported
as one ``dropped`` event before the session's next processed frame (or at its close). Every event goes to the
session's ``emit`` callback (thread-safe on the server side). Only the worker thread touches engine sessions.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.engine import StreamEngine
from ..inference.events import Answer, Reply, Silence
from .protocol import Limits, Open, SessionStats, error_event, event
from ..inference.engine import StreamSession
from .streaming import TextDeltas

log = logging.getLogger(__name__)
Emit = Callable[[dict[str, Any]], None]


def describe_memory(policy: Any) -> dict[str, Any]:
    """A memory policy as JSON: its class name and fields (e.g. ``{"policy": "SinkWindow", "max_tokens": 4096}``)."""
    fields = dict(getattr(policy, "__dict__", {}))
    return {"policy": type(policy).__name__, **{k: v for k, v in fields.items() if not k.startswith("_")}}


class SchedulerFull(RuntimeError):
    """No room for another session (``max_sessions`` are open)."""


@dataclass
class ServeSession:
    """One client's stream inside the scheduler."""

    id: str
    stream: StreamSession
    emit: Emit
    fps: float
    silence: bool
    queue_size: int
    opened: float = field(default_factory=time.time)
    frames: collections.deque = field(default_factory=collections.deque)  # (t, frame) waiting for the model
    controls: collections.deque = field(default_factory=collections.deque)  # (kind, payload)
    stats: SessionStats = field(default_factory=SessionStats)
    dropped_pending: int = 0  # dropped (queue full) since the last report
    dropped_t: float = 0.0
    skipped_pending: int = 0  # skipped (faster than the session fps) since the last report
    skipped_t: float = 0.0
    kept_t: float | None = None  # time of the last frame admitted at the session fps
    closing: bool = False      # graceful close asked: finish the queue, answer queries, then `closed`
    gone: bool = False         # removed (disconnected or closed)
    busy: bool = False         # the worker is stepping it right now
    deltas: TextDeltas | None = None  # the reply being streamed token by token

    def info(self) -> dict[str, Any]:
        """A snapshot for ``GET /sessions`` (read without the worker's cooperation: approximate)."""
        return {"id": self.id, "opened": round(self.opened, 3), "fps": self.fps,
                "threshold": self.stream.threshold, "queued": len(self.frames),
                "context_tokens": self.stream.context_length, "evicted_tokens": self.stream.evicted_tokens,
                "closing": self.closing, **self.stats.to_dict()}


class Scheduler:
    """Fair scheduling of many stream sessions on one engine.

    Args:
        engine: the shared :class:`StreamEngine` (one model).
        limits: queue size and per-session caps.
        max_sessions: sessions open at once; :meth:`open` raises :class:`SchedulerFull` beyond.
        fps: the default stream fps of a session.
        max_batch: at most this many sessions' frames are encoded and stepped per round.
    """

    def __init__(self, engine: StreamEngine, *, limits: Limits | None = None, max_sessions: int = 16,
                 fps: float | None = None, max_batch: int = 16) -> None:
        if max_sessions < 1 or max_batch < 1:
            raise ValueError(f"max_sessions and max_batch must be >= 1, got {max_sessions}, {max_batch}")
        self.engine = engine
        self.limits = limits or Limits()
        self.max_sessions = max_sessions
        self.fps = float(fps or engine.model.cfg.stream.fps)
        self.max_batch = max_batch
        self.sessions: dict[str, ServeSession] = {}
        self._ring: collections.deque[str] = collections.deque()  # round-robin order
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._batch = engine.batch()  # frames in flight (continuous batching; only the worker touches it)
        self.rounds = 0

    # ---- client side (any thread) ---------------------------------------------------------------------------------
    def open(self, params: Open, emit: Emit) -> ServeSession:
        """Create a session; raise :class:`SchedulerFull` when ``max_sessions`` are open. (The worker runs it once
        :meth:`start` has been called; tests may drive :meth:`step` by hand instead.)"""
        cfg = self.engine.model.cfg.stream
        with self._cond:
            if len(self.sessions) >= self.max_sessions:
                raise SchedulerFull(f"the server is full: {self.max_sessions} sessions are open; try again later")
            sid = f"s{next(self._ids)}"
            holder: dict[str, ServeSession] = {}
            stream = self.engine.session(
                params.system_prompt, threshold=params.threshold,
                max_reply_tokens=params.max_reply_tokens or min(cfg.max_reply_tokens, self.limits.max_reply_tokens),
                on_token=lambda kind, t, ids, q: self._on_token(holder["s"], kind, t, ids, q))
            session = ServeSession(sid, stream, emit, fps=params.fps or self.fps, silence=params.silence,
                                   queue_size=self.limits.queue_size)
            holder["s"] = session
            self.sessions[sid] = session
            self._ring.append(sid)
        log.info("session %s opened (%d open)", sid, len(self.sessions))
        return session

    def admit(self, session: ServeSession, t: float) -> bool:
        """Whether a frame at ``t`` keeps to the session's fps. A frame closer than 3/4 of a frame interval to the
        last admitted one is skipped (counted, and reported in the next ``dropped`` event)."""
        with self._cond:
            if session.kept_t is not None and t < session.kept_t + 0.75 / session.fps:
                session.skipped_pending += 1
                session.skipped_t = t
                return False
            session.kept_t = t
            return True

    def push_frame(self, session: ServeSession, t: float, frame: np.ndarray) -> None:
        """Queue a decoded frame; a full queue drops its oldest frame (reported as ``dropped``)."""
        with self._cond:
            if session.gone or session.closing:
                return
            if len(session.frames) >= session.queue_size:
                old_t, _ = session.frames.popleft()
                session.dropped_pending += 1
                session.dropped_t = old_t
            session.frames.append((t, frame))
            self._cond.notify()

    def control(self, session: ServeSession, kind: str, payload: Any) -> None:
        """Queue a control for the worker: ``("query", (text, at, answer))`` or ``("threshold", value)``."""
        with self._cond:
            if not session.gone:
                session.controls.append((kind, payload))
                self._cond.notify()

    def close(self, session: ServeSession, graceful: bool = True) -> None:
        """End a session. Graceful: watch the queued frames, answer pending queries, emit ``closed``.
        Otherwise (disconnect) drop it now: its queue and engine state are freed."""
        with self._cond:
            if session.gone:
                return
            if graceful:
                session.closing = True
            else:
                self._remove(session)
            self._cond.notify()

    def snapshot(self) -> list[dict[str, Any]]:
        """Info on every open session."""
        with self._cond:
            sessions = list(self.sessions.values())
        return [s.info() for s in sessions]

    # ---- worker ---------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the model worker thread (idempotent)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="livecue-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker and drop every session."""
        with self._cond:
            self._stop = True
            for session in list(self.sessions.values()):
                self._remove(session)
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._has_work():
                    self._cond.wait(timeout=1.0)
                if self._stop:
                    return
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the worker must survive anything one round throws
                log.exception("scheduler round failed")

    def _has_work(self) -> bool:
        return bool(self._batch) or any(s.frames or s.controls or s.closing for s in self.sessions.values())

    def step(self) -> bool:
        """Run one round (see the module docstring). Returns whether there was anything to do."""
        with self._cond:
            controls = [(s, list(s.controls)) for s in self.sessions.values() if s.controls]
            for s, _ in controls:
                s.controls.clear()
            picks: list[tuple[ServeSession, float, np.ndarray, list[dict[str, Any]]]] = []
            room = self.max_batch - len(self._batch.keys)
            for _ in range(len(self._ring)):
                if len(picks) >= room:
                    break
                sid = self._ring[0]
                self._ring.rotate(-1)
                s = self.sessions[sid]
                if s.frames and not s.busy:
                    t, frame = s.frames.popleft()
                    picks.append((s, t, frame, self._take_drops(s, before=t)))
                    s.busy = True
            finishing = [s for s in self.sessions.values() if s.closing and not s.frames and not s.busy]
        for s, items in controls:
            for kind, payload in items:
                self._apply(s, kind, payload)
        feats = self.engine.frame_features_batch([p[2] for p in picks], return_errors=True)
        self._start_frames([(s, t, drops) for s, t, _, drops in picks], feats)
        in_flight = self._batch.keys
        try:
            done = self._batch.round()
        except Exception as e:  # noqa: BLE001 - the forward of the whole batch failed: each of its frames fails
            # (their sessions go on from whatever context the failed forward left: an error path, e.g. device OOM)
            log.exception("batched step failed")
            done = [(key, e) for key in in_flight]
            self._batch = self.engine.batch()
        for (s, t), result in done:
            if isinstance(result, Exception):
                self._frame_failed(s, t, result)
            else:
                self._deliver(s, t, result)
        for s in finishing:
            self._finish(s)
        self.rounds += 1
        return bool(controls or picks or finishing or in_flight)

    def _start_frames(self, picks: list[tuple[ServeSession, float, list[dict[str, Any]]]], feats: list[Any]) -> None:
        """Add every picked session's frame to the continuous batch (its forwards join the next rounds); a session
        whose frame cannot be processed gets an error and the others go on."""
        for (s, t, drops), f in zip(picks, feats):
            if s.gone:
                s.busy = False
                continue
            for ev in drops:
                self._send(s, ev)
            try:
                if isinstance(f, Exception):
                    raise f
                self._batch.add_frame(s.stream, f, t, key=(s, t))
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the session
                self._frame_failed(s, t, e)

    def _deliver(self, s: ServeSession, t: float, events: list[Any]) -> None:
        try:
            if s.gone:  # disconnected while its frame was in flight
                return
            for ev in events:
                self._count(s, ev)
                if isinstance(ev, Silence) and not s.silence:
                    continue
                self._send(s, ev.to_dict())
            s.stats.frames += 1
            s.stats.last_t = t
            cap = self.limits.max_session_frames
            if cap is not None and s.stats.frames >= cap and not s.closing:
                self._send(s, error_event("frame_limit", f"this session has streamed {cap} frames, the server's "
                                                         f"limit; it is closing: open a new one to go on", t=t))
                self.close(s)
        finally:
            s.busy = False

    def _frame_failed(self, s: ServeSession, t: float, reason: Any) -> None:
        """One bad frame must not end the session: count it and tell the client."""
        log.warning("session %s: frame at t=%s failed: %s", s.id, t, reason)
        s.stats.errors += 1
        s.busy = False
        self._send(s, error_event("frame_failed", f"the frame at t={t:g} could not be processed: {reason}", t=t))

    def _apply(self, s: ServeSession, kind: str, payload: Any) -> None:
        try:
            if kind == "query":
                text, at, answer = payload
                s.stream.add_query(text, at=at, answer=answer)
            elif kind == "threshold":
                s.stream.threshold = float(payload)
                self._send(s, event("updated", s.stream.t if s.stats.frames else None, threshold=s.stream.threshold))
            else:
                raise ValueError(f"unknown control {kind!r}")
        except ValueError as e:
            s.stats.errors += 1
            self._send(s, error_event("bad_message", str(e)))

    def _finish(self, s: ServeSession) -> None:
        """Graceful end: report drops, answer the queries still waiting, emit ``closed``, forget the session."""
        if s.gone:
            return
        with self._cond:
            drops = self._take_drops(s)
        for ev in drops:
            self._send(s, ev)
        try:
            for ev in s.stream.finish():
                self._count(s, ev)
                self._send(s, ev.to_dict())
        except Exception as e:  # noqa: BLE001 - the session still closes
            log.warning("session %s: finishing failed: %s", s.id, e)
            s.stats.errors += 1
            self._send(s, error_event("frame_failed", f"answering the last queries failed: {e}"))
        with self._cond:
            self._remove(s)
        self._send(s, event("closed", s.stats.last_t, reason="closed by the client", **s.stats.to_dict()))

    def _remove(self, s: ServeSession) -> None:
        """Forget a session (call with the lock held): its queue and engine state become garbage."""
        s.gone = True
        s.frames.clear()
        s.controls.clear()
        self.sessions.pop(s.id, None)
        try:
            self._ring.remove(s.id)
        except ValueError:
            pass
        log.info("session %s removed (%d open)", s.id, len(self.sessions))

    # ---- events ---------------------------------------------------------------------------------------------------
    def _on_token(self, s: ServeSession, kind: str, t: float, ids: list[int], query: str | None) -> None:
        if len(ids) == 1 or s.deltas is None:  # a new reply
            s.deltas = TextDeltas(lambda x: self.engine.tokenizer.decode(x, skip_special_tokens=True))
        text = s.deltas.push(ids)
        if text and not s.gone:
            self._send(s, event("reply_delta", t, kind=kind, text=text, tokens=len(ids),
                                **({"query": query} if query is not None else {})))

    def _take_drops(self, s: ServeSession, before: float = math.inf) -> list[dict[str, Any]]:
        """``dropped`` events for the frames dropped/skipped so far that are older than ``before`` (lock held)."""
        out = []
        if s.skipped_pending and s.skipped_t < before:
            out.append(event("dropped", s.skipped_t, count=s.skipped_pending,
                             reason=f"frames faster than the session's {s.fps:g} fps were skipped"))
            s.stats.dropped += s.skipped_pending
            s.skipped_pending = 0
        if s.dropped_pending:
            out.append(event("dropped", s.dropped_t, count=s.dropped_pending,
                             reason=f"the model fell behind: the session's frame queue ({s.queue_size}) was full, "
                                    "oldest frames dropped"))
            s.stats.dropped += s.dropped_pending
            s.dropped_pending = 0
        return sorted(out, key=lambda e: e["t"])

    @staticmethod
    def _count(s: ServeSession, ev: Any) -> None:
        if isinstance(ev, Reply):
            s.stats.replies += 1
        elif isinstance(ev, Answer):
            s.stats.answers += 1

    @staticmethod
    def _send(s: ServeSession, ev: dict[str, Any]) -> None:
        try:
            s.emit(ev)
        except Exception as e:  # noqa: BLE001 - a dead connection must not stop the worker
            log.debug("session %s: event lost: %s", s.id, e)

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

**Vision ahead of the LM** (``vision_ahead``, on by default once :meth:`Scheduler.start` ed): a vision thread
(:class:`~livecue.serve.vision.VisionAhead`, its own CUDA stream on a GPU) encodes the frames picked for the *next*
round while the worker runs the LM forward of this one, so a round costs about max(vision, LM) instead of their
sum. Step 2 then also takes a frame of a session whose previous frame is still in the batch (at most one frame per
session is ahead: being encoded, or encoded and waiting), and step 3 becomes: feed the frames the vision thread has
finished (in the order they were picked, each once its session's previous frame is done and the batch has room),
then hand it the new picks (one job at a time: frames are picked when it is free, so they batch up meanwhile). The
worker waits for the vision thread only when the LM has nothing else to do. A frame ahead whose session has gone is
dropped, never fed; a frame the vision fails on fails for its session only; a closing session's queries are
answered once its frame ahead has been fed and watched. :meth:`Scheduler.step` called by hand (no thread started:
tests) encodes inline, as with ``vision_ahead=False``; the events of every session are the same either way.

A full queue drops its **oldest** frame: the model always watches recent footage. Drops are counted and reported
as one ``dropped`` event before the session's next processed frame (or at its close). Every event goes to the
session's ``emit`` callback (thread-safe on the server side). Only the worker thread touches engine sessions.

A session that is dropped (its client disconnected) has its work cancelled at the start of the next round: its
program leaves the batch (:meth:`~livecue.inference.engine.Batch.cancel`) before another forward is run for it, so
a long reply of a client that has gone stops at once. A graceful close answers the pending queries in the batch too
(one forward per round beside the other sessions), never in a loop that holds up everyone.
"""

from __future__ import annotations

import collections
import copy
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..inference.engine import StreamEngine
from ..inference.events import Silence
from .protocol import Limits, Open, ProtocolError, error_event, event
from .session import Emit, QueryRefused, SchedulerFull, ServeSession, TokenBucket, describe_memory
from .streaming import TextDeltas
from .vision import VisionAhead

log = logging.getLogger(__name__)
__all__ = ["Emit", "QueryRefused", "Scheduler", "SchedulerFull", "ServeSession", "describe_memory"]
_Pick = tuple[ServeSession, float, np.ndarray, list[dict[str, Any]]]  # a frame taken from a queue, its drops


class Scheduler:
    """Fair scheduling of many stream sessions on one engine.

    Args:
        engine: the shared :class:`StreamEngine` (one model); its options are the server's, every session's defaults
            (a client's ``open`` overrides them option by option; its memory policy bounds every session).
        limits: queue size and per-session caps.
        max_sessions: sessions open at once; :meth:`open` raises :class:`SchedulerFull` beyond.
        fps: the default stream fps of a session (default: the engine's, else the model's).
        max_batch: at most this many sessions' frames are encoded and stepped per round.
        vision_ahead: once :meth:`start` ed, encode the next round's frames on a vision thread (its own CUDA stream
            on a GPU) while the LM round runs; False: encode them inline, before the round's forward.
    """

    def __init__(self, engine: StreamEngine, *, limits: Limits | None = None, max_sessions: int = 16,
                 fps: float | None = None, max_batch: int = 16, vision_ahead: bool = True) -> None:
        if max_sessions < 1 or max_batch < 1:
            raise ValueError(f"max_sessions and max_batch must be >= 1, got {max_sessions}, {max_batch}")
        self.engine = engine
        self.limits = limits or Limits()
        self.max_sessions = max_sessions
        cfg = engine.model.cfg.stream
        self.fps = float(fps or engine.options.fps or cfg.fps)
        # a reply cap no client asked for: the server's, else the model's held to the protocol's limit
        self.max_reply_tokens = engine.options.max_reply_tokens or min(cfg.max_reply_tokens,
                                                                       self.limits.max_reply_tokens)
        self.max_batch = max_batch
        self.sessions: dict[str, ServeSession] = {}
        self._ring: collections.deque[str] = collections.deque()  # round-robin order
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._batch = engine.batch()  # frames in flight (continuous batching; only the worker touches it)
        self.rounds = 0
        # the vision stage (worker thread only): frames picked ahead (being encoded, or encoded and not yet fed)
        self._vision: VisionAhead | None = VisionAhead(engine) if vision_ahead else None
        self._ahead: set[ServeSession] = set()
        self._ready: list[tuple[ServeSession, float, list[dict[str, Any]], Any]] = []  # encoded, in pick order
        self._counter: Any = None  # a tokenizer of the client side's own, to measure system prompts in `open`

    # ---- client side (any thread) ---------------------------------------------------------------------------------
    def open(self, params: Open, emit: Emit) -> ServeSession:
        """Create a session; raise :class:`SchedulerFull` when ``max_sessions`` are open. (The worker runs it once
        :meth:`start` has been called; tests may drive :meth:`step` by hand instead.)"""
        asked = params.options
        if asked.system_prompt:
            self._check_system_prompt(asked.system_prompt)
        with self._cond:
            if len(self.sessions) >= self.max_sessions:
                raise SchedulerFull(f"the server is full: {self.max_sessions} sessions are open; try again later")
            sid = f"s{next(self._ids)}"
            stream = self.engine.session(options=asked, max_reply_tokens=asked.max_reply_tokens or
                                         self.max_reply_tokens)
            buckets = TokenBucket(self.limits.query_token_rate, self.limits.max_query_tokens)
            session = ServeSession(sid, stream, emit, fps=asked.fps or self.fps, silence=params.silence,
                                   queue_size=self.limits.queue_size, query_tokens=buckets)
            # a weak reference: session -> stream -> callback -> session would be a reference cycle, and a dropped
            # session's KV cache would then live on until the garbage collector's next full pass (RSS grows)
            ref = weakref.ref(session)
            stream.on_token = lambda kind, t, ids, q: self._on_token(ref(), kind, t, ids, q)
            self.sessions[sid] = session
            self._ring.append(sid)
        log.info("session %s opened (%d open)", sid, len(self.sessions))
        return session

    def _check_system_prompt(self, text: str) -> None:
        """ProtocolError ``too_large`` when a client's system prompt is over ``max_system_tokens`` (it would stay in
        the session's attention sink for good). Counted with a copy of the tokenizer: the worker thread uses the
        engine's."""
        if self._counter is None:
            self._counter = copy.deepcopy(self.engine.tokenizer)
        n = len(self._counter(text, add_special_tokens=False, split_special_tokens=True).input_ids)
        if n > self.limits.max_system_tokens:
            raise ProtocolError("too_large", f"system_prompt is {n} tokens; the limit is "
                                             f"{self.limits.max_system_tokens}")

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
        """Queue a control for the worker: ``("query", (text, at, answer))`` or ``("threshold", value)``. θ updates
        waiting for the same round are coalesced (the latest wins); a query beyond ``max_pending_queries`` raises
        :class:`QueryRefused` (``too_many_queries``)."""
        with self._cond:
            if session.gone:
                return
            if kind == "query":
                pending = session.pending_queries
                if pending >= self.limits.max_pending_queries:
                    raise QueryRefused("too_many_queries", f"this session has {pending} queries waiting for the "
                                                           f"model; the limit is {self.limits.max_pending_queries}: "
                                                           f"wait for them to be read (query ignored)")
                session.queued_queries += 1
            elif kind == "threshold":
                kept = [c for c in session.controls if c[0] != "threshold"]
                if len(kept) != len(session.controls):
                    session.controls = collections.deque(kept)
            session.controls.append((kind, payload))
            self._cond.notify()

    def close(self, session: ServeSession, graceful: bool = True, reason: str | None = None) -> None:
        """End a session. Graceful: watch the queued frames, answer pending queries, emit ``closed`` (with
        ``reason``, default "closed by the client"). Otherwise (disconnect) drop it now: its queue and engine state
        are freed."""
        with self._cond:
            if session.gone:
                return
            if graceful:
                if reason is not None and not session.closing:
                    session.close_reason = reason
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
        """Start the model worker thread, and the vision thread with ``vision_ahead`` (idempotent)."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            if self._vision is not None:
                self._vision.start()
            self._thread = threading.Thread(target=self._run, name="livecue-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker (and the vision thread) and drop every session."""
        with self._cond:
            self._stop = True
            for session in list(self.sessions.values()):
                self._remove(session)
            self._cond.notify_all()
        if self._vision is not None:
            self._vision.stop(timeout)  # after its encode in progress; wakes a worker waiting for it
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._ahead.clear()
        self._ready.clear()

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
        return (bool(self._batch) or bool(self._ready) or (self._vision is not None and self._vision.pending)
                or any(s.frames or s.controls or (s.closing and not s.busy) for s in self.sessions.values()))

    def step(self) -> bool:
        """Run one round (see the module docstring). Returns whether there was anything to do. The round's frames
        are encoded inline unless the vision thread runs (:meth:`start` with ``vision_ahead``)."""
        vision = self._vision if self._vision is not None and self._vision.running else None
        if vision is not None and vision.pending and not self._batch and not self._ready:
            vision.wait(timeout=1.0)  # nothing for the LM to do until the frames being encoded are ready
        with self._cond:
            cancelled = [key for key in self._batch.keys if key[0].gone]
            controls = [(s, list(s.controls)) for s in self.sessions.values() if s.controls]
            for s, _ in controls:
                s.controls.clear()
                s.queued_queries = 0
        encoded = vision.take() if vision is not None else None
        self._ready.extend((s, t, drops, f) for (s, t, drops), f in encoded or ())
        for key in cancelled:  # their clients have gone: no forward is run for them any more
            self._batch.cancel(key)
            key[0].busy = False
        for s, items in controls:
            for kind, payload in items:
                self._apply(s, kind, payload)
        fed = self._feed()
        with self._cond:
            if vision is None:  # inline: this round's frames, of sessions with none in the batch
                picks = self._pick(self.max_batch - len(self._batch.keys), lambda s: not s.busy)
            else:  # ahead: the next round's, of sessions with none ahead, when the vision thread is free
                picks = [] if vision.pending else self._pick(self.max_batch - len(self._ahead),
                                                              lambda s: s not in self._ahead)
            self._ahead.update(s for s, *_ in picks)
            finishing = [s for s in self.sessions.values()
                         if s.closing and not s.frames and not s.busy and s not in self._ahead]
            for s in finishing:
                s.busy = s.finishing = True
        if picks and vision is not None:
            vision.submit([(s, t, drops) for s, t, _, drops in picks], [p[2] for p in picks])
        elif picks:
            feats = self.engine.frame_features_batch([p[2] for p in picks], return_errors=True)
            self._ready.extend((s, t, drops, f) for (s, t, _, drops), f in zip(picks, feats))
            fed += self._feed()
        for s in finishing:  # answer the pending queries beside the others' frames; then `closed`
            self._batch.add(s.stream.finish_program(), key=(s, None))
        in_flight = self._batch.keys
        try:
            done = self._batch.round()
        except Exception as e:  # noqa: BLE001 - the forward of the whole batch failed: each of its frames fails
            # (their sessions go on from whatever context the failed forward left: an error path, e.g. device OOM)
            log.exception("batched step failed")
            done = [(key, e) for key in in_flight]
            self._batch = self.engine.batch()
        for (s, t), result in done:
            if t is None:
                self._finish(s, result)
            elif isinstance(result, Exception):
                self._frame_failed(s, t, result)
            else:
                self._deliver(s, t, result)
        self.rounds += 1
        return bool(controls or encoded or fed or picks or finishing or in_flight or cancelled)

    def _pick(self, room: int, eligible: Callable[[ServeSession], bool]) -> list[_Pick]:
        """At most ``room`` frames, one of each ``eligible`` session that has one waiting, round-robin from where the
        last pick stopped; each with the ``dropped`` events to send before it (lock held)."""
        picks: list[_Pick] = []
        for _ in range(len(self._ring)):
            if len(picks) >= room:
                break
            sid = self._ring[0]
            self._ring.rotate(-1)
            s = self.sessions[sid]
            if s.frames and eligible(s):
                t, frame = s.frames.popleft()
                picks.append((s, t, frame, s.take_drops(before=t)))
        return picks

    def _feed(self) -> int:
        """Add the encoded frames of sessions with none in the batch to it, in the order they were picked, while it
        has room (each after its ``dropped`` events); a gone session's frame is dropped, never fed; a frame that
        cannot be processed fails for its session only. Returns how many left the waiting list."""
        room = self.max_batch - len(self._batch.keys)
        waiting: list[tuple[ServeSession, float, list[dict[str, Any]], Any]] = []
        for s, t, drops, f in self._ready:
            if not s.gone and (s.busy or room <= 0):
                waiting.append((s, t, drops, f))
                continue
            self._ahead.discard(s)
            if s.gone:
                continue
            room -= 1
            s.busy = True
            for ev in drops:
                self._send(s, ev)
            try:
                if isinstance(f, Exception):
                    raise f
                self._batch.add_frame(s.stream, f, t, key=(s, t))
            except Exception as e:  # noqa: BLE001 - one bad frame must not end the session
                self._frame_failed(s, t, e)
        done, self._ready = len(self._ready) - len(waiting), waiting
        return done

    def _deliver(self, s: ServeSession, t: float, events: list[Any]) -> None:
        try:
            if s.gone:  # disconnected while its frame was in flight
                return
            for ev in events:
                s.stats.count(ev)
                if isinstance(ev, Silence) and not s.silence:
                    continue
                self._send(s, ev.to_dict())
            s.stats.frame(t)
            cap = self.limits.max_session_frames
            if cap is not None and s.stats.frames >= cap and not s.closing:
                self._send(s, error_event("frame_limit", f"this session has streamed {cap} frames, the server's "
                                                         f"limit; it is closing: open a new one to go on", t=t))
                self.close(s, reason=f"the server's limit of {cap} frames per session")
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
                if self._query_allowed(s, text, at):
                    s.stream.add_query(text, at=at, answer=answer)
            elif kind == "threshold":
                s.stream.threshold = float(payload)
                self._send(s, event("updated", s.stream.t if s.stats.frames else None, threshold=s.stream.threshold))
            else:
                raise ValueError(f"unknown control {kind!r}")
        except ValueError as e:
            s.stats.errors += 1
            self._send(s, error_event("bad_message", str(e)))

    def _query_allowed(self, s: ServeSession, text: str, at: float | None) -> bool:
        """Charge a query's tokens to the session's bucket; an error event (and False) when it is over the limits."""
        n = len(self.engine.encode_text(text))
        limits = self.limits
        if n > limits.max_query_tokens:
            message = (f"query text is {n} tokens; the limit is {limits.max_query_tokens} (query ignored)")
            code = "too_large"
        elif not s.query_tokens.take(n):
            message = (f"too much query text: the limit is {limits.query_token_rate:g} tokens per second (burst "
                       f"{limits.max_query_tokens}); this query of {n} tokens was ignored")
            code = "rate_limited"
        else:
            return True
        s.stats.errors += 1
        self._send(s, error_event(code, message, t=at))
        return False

    def _finish(self, s: ServeSession, events: Any) -> None:
        """Graceful end, once the finish program is done: its answers, the drops, ``closed``; forget the session."""
        s.busy = False
        if s.gone:
            return
        with self._cond:
            drops = s.take_drops()
        for ev in drops:
            self._send(s, ev)
        if isinstance(events, Exception):  # the session still closes
            log.warning("session %s: finishing failed: %s", s.id, events)
            s.stats.errors += 1
            self._send(s, error_event("frame_failed", f"answering the last queries failed: {events}"))
            events = []
        for ev in events:
            s.stats.count(ev)
            self._send(s, ev.to_dict())
        with self._cond:
            self._remove(s)
        self._send(s, event("closed", s.stats.last_t, reason=s.close_reason, **s.stats.to_dict()))

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
    def _on_token(self, s: ServeSession | None, kind: str, t: float, ids: list[int], query: str | None) -> None:
        if s is None:  # the session has been dropped and freed meanwhile
            return
        if len(ids) == 1 or s.deltas is None:  # a new reply
            s.deltas = TextDeltas(lambda x: self.engine.tokenizer.decode(x, skip_special_tokens=True))
        text = s.deltas.push(ids)
        if text and not s.gone:
            self._send(s, event("reply_delta", t, kind=kind, text=text, tokens=len(ids),
                                **({"query": query} if query is not None else {})))

    @staticmethod
    def _send(s: ServeSession, ev: dict[str, Any]) -> None:
        try:
            s.emit(ev)
        except Exception as e:  # noqa: BLE001 - a dead connection must not stop the worker
            log.debug("session %s: event lost: %s", s.id, e)

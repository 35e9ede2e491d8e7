"""Run a source through a StreamSession: offline (every frame, as fast as possible) or in real time.

Offline: a worker thread decodes frames and encodes them with the vision tower in batches, ahead of the LLM, which
takes every frame in order. Nothing is dropped.

Real time: frames arrive on the wall clock (a file is paced to its stream times; a camera or network stream is live).
A capture thread reads the source, an encode worker turns whatever has arrived into vision features in batches, and
the LLM loop consumes them, so frames keep being captured and encoded while a reply is being decoded (speak while
watching). **Drop policy (drop-oldest):** when the LLM falls behind, a waiting frame whose stream time is more than
``max_lag`` seconds older than the newest captured frame is skipped; the model always watches the most recent
footage. Skipped frames are counted and reported as one :class:`~livecue.inference.events.Dropped` event per gap.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .engine import StreamSession, to_frame_tensor
from .events import Dropped, Event
from .stats import StreamStats

log = logging.getLogger(__name__)
_END = object()


class Pipeline:
    """Drive ``session`` with the timed frames of ``source``.

    Args:
        session: the stream session (its engine encodes frames).
        source: an iterable of ``(t, frame)``; ``source.live`` (if present) marks a wall-clock source.
        realtime: pace/drop on the wall clock instead of processing every frame.
        batch_size: frames encoded together by the vision worker.
        max_lag: real time only: skip waiting frames older than this many seconds behind the newest one.
    """

    def __init__(self, session: StreamSession, source: Iterable[tuple[float, Any]], *, realtime: bool = False,
                 batch_size: int = 8, max_lag: float = 1.0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not (isinstance(max_lag, (int, float)) and math.isfinite(max_lag) and max_lag > 0):
            raise ValueError(f"max_lag must be a finite number > 0 seconds, got {max_lag!r}")
        self.session = session
        self.source = source
        self.realtime = realtime
        self.batch_size = batch_size
        self.max_lag = max_lag
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._newest_t = float("-inf")

    def stop(self) -> None:
        """Ask the workers to stop (the run ends after the frame in progress)."""
        self._stop.set()

    def run(self) -> Iterator[Event]:
        """Yield every event of the stream, then the answers to queries left at the end."""
        self.stats = StreamStats()
        features: queue.Queue = queue.Queue(maxsize=4 if not self.realtime else 0)
        workers = self._start_workers(features)
        try:
            yield from self._consume(features)
            if not self._stop.is_set():
                for event in self.session.finish():
                    self.stats.count(event)
                    yield event
        finally:
            self._stop.set()
            for w in workers:
                w.join(timeout=5)
            self.stats.end()
            close = getattr(self.source, "close", None)
            if close is not None:
                close()

    # ---- LLM loop -------------------------------------------------------------------------------------------------
    def _consume(self, features: queue.Queue) -> Iterator[Event]:
        skipped, skipped_t = 0, 0.0
        while True:
            item = features.get()
            if item is _END:
                break
            t, feats = item
            if feats is None or (self.realtime and self._newest_t - t > self.max_lag):
                skipped, skipped_t = skipped + 1, t
                continue
            if skipped:
                event = Dropped(t=skipped_t, count=skipped)
                skipped = 0
                self.stats.count(event)
                yield event
            for event in self.session.push_frame(feats, t):
                self.stats.count(event)
                yield event
            self.stats.frame(t)
            if self._stop.is_set():
                break
        if skipped:
            event = Dropped(t=skipped_t, count=skipped)
            self.stats.count(event)
            yield event
        if self._error is not None:
            raise self._error

    # ---- workers --------------------------------------------------------------------------------------------------
    def _start_workers(self, features: queue.Queue) -> list[threading.Thread]:
        if not self.realtime:
            threads = [threading.Thread(target=self._guard, args=(self._decode_and_encode, features), daemon=True,
                                        name="livecue-encode")]
        else:
            frames: queue.Queue = queue.Queue()
            threads = [threading.Thread(target=self._guard, args=(self._capture, frames), daemon=True,
                                        name="livecue-capture"),
                       threading.Thread(target=self._guard, args=(self._encode_worker, frames, features),
                                        daemon=True, name="livecue-encode")]
        for th in threads:
            th.start()
        return threads

    def _guard(self, fn, *queues: queue.Queue) -> None:
        """Run a worker; on failure record the error and end the stream downstream."""
        try:
            fn(*queues)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            self._error = e
            queues[-1].put(_END)

    def _encode(self, batch: list[tuple[float, Any]]) -> list[tuple[float, torch.Tensor]]:
        feats = self.session.engine.encode([to_frame_tensor(f) for _, f in batch])
        return [(t, feats[i]) for i, (t, _) in enumerate(batch)]

    def _decode_and_encode(self, out: queue.Queue) -> None:
        batch: list[tuple[float, Any]] = []
        try:
            for t, frame in self.source:
                if self._stop.is_set():
                    break
                batch.append((float(t), frame))
                if len(batch) == self.batch_size:
                    self._put_all(out, self._encode(batch))
                    batch = []
        finally:  # frames read before a source failure are still watched; the error follows them
            if batch and not self._stop.is_set():
                self._put_all(out, self._encode(batch))
        out.put(_END)

    def _put_all(self, out: queue.Queue, items: list) -> None:
        for item in items:
            while not self._stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def _capture(self, frames: queue.Queue) -> None:
        live = bool(getattr(self.source, "live", False))
        start = time.perf_counter()
        for t, frame in self.source:
            if self._stop.is_set():
                break
            if not live and self._wait_until(start + float(t)):  # pace a file to its stream clock
                break
            self._newest_t = max(self._newest_t, float(t))
            frames.put((float(t), frame))
        frames.put(_END)

    def _wait_until(self, deadline: float) -> bool:
        """Sleep until ``deadline`` (perf_counter seconds) in slices; True when stopped meanwhile."""
        while (delay := deadline - time.perf_counter()) > 0:
            if self._stop.wait(min(delay, 1.0)):
                return True
        return self._stop.is_set()

    def _encode_worker(self, frames: queue.Queue, out: queue.Queue) -> None:
        done = False
        while not done and not self._stop.is_set():
            batch = [frames.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(frames.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _END:
                batch.pop()
                done = True
            # frames already too old to be watched are not worth encoding: pass them on as skipped
            fresh = [b for b in batch if self._newest_t - b[0] <= self.max_lag]
            for t, _ in batch[:len(batch) - len(fresh)]:
                out.put((t, None))
            if fresh:
                for item in self._encode(fresh):
                    out.put(item)
        out.put(_END)

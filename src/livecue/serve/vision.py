"""The server's vision stage: the frames picked for the next round are encoded on their own thread while the worker
runs the LM round in progress (speak while watching on one device).

:class:`VisionAhead` runs one **job** at a time: the worker :meth:`~VisionAhead.submit` s the frames it picked (one
per session), the vision thread encodes them with
:meth:`~livecue.inference.engine.StreamEngine.frame_features_batch` (one vision batch per frame size; a frame that
fails gets its exception in its place), and the worker :meth:`~VisionAhead.take` s the features at the start of a
later round. The engine's vision encoding is stateless, so it is safe off the worker thread; the vision thread
never touches an engine session or the batch.

On CUDA the job runs on the stage's own :class:`torch.cuda.Stream`; :meth:`~VisionAhead.take` makes the worker's
stream wait on the job's event before the LM uses the features (the GPU overlaps them without a host sync) and
records the features on that stream, so the caching allocator does not hand their memory to the next job while the
LM still reads it. On the CPU (and other devices) the two threads overlap on the cores (torch releases the GIL).

Pure plumbing: which frames, when, and what a failure means for a session is the scheduler's business.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Generic, TypeVar

import torch

from ..inference.engine import StreamEngine

log = logging.getLogger(__name__)
T = TypeVar("T")


class VisionAhead(Generic[T]):
    """One thread that encodes the frames of one job at a time, ahead of the LM.

    Args:
        engine: the shared engine (only its stateless vision encoding is used here).

    Each frame travels with a key of the caller's (the scheduler's pick); :meth:`take` gives back
    ``(key, features or exception)`` pairs in the order they were submitted.
    """

    def __init__(self, engine: StreamEngine) -> None:
        self.engine = engine
        self._cond = threading.Condition()
        self._job: tuple[list[T], list[Any]] | None = None  # submitted, not started
        self._result: tuple[list[T], list[Any], Any] | None = None  # encoded, not taken
        self._pending = False  # a job submitted and its result not taken yet
        self._stop = False
        self._thread: threading.Thread | None = None
        self.jobs = 0  # jobs encoded (for tests and benchmarks)

    @property
    def running(self) -> bool:
        """Whether the vision thread is running (else the scheduler encodes inline)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> bool:
        """Whether a job has been submitted and its features not taken yet."""
        with self._cond:
            return self._pending

    def start(self) -> None:
        """Start the vision thread (idempotent); a job left from an earlier run is forgotten."""
        with self._cond:
            if self.running:
                return
            self._stop, self._pending, self._job, self._result = False, False, None, None
            self._thread = threading.Thread(target=self._run, name="livecue-vision", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the encode in progress, if any) and forget any job."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            self._pending, self._job, self._result = False, None, None

    def submit(self, keys: list[T], frames: list[Any]) -> None:
        """Encode ``frames`` (one per key) on the vision thread; one job at a time."""
        if len(keys) != len(frames):
            raise ValueError(f"{len(keys)} keys for {len(frames)} frames")
        with self._cond:
            if self._pending:
                raise RuntimeError("a vision job is already pending: take its features first")
            self._job, self._pending = (list(keys), list(frames)), True
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the pending job's features are ready (or the stage stops); whether they are."""
        with self._cond:
            self._cond.wait_for(lambda: self._result is not None or self._stop or not self._pending, timeout)
            return self._result is not None

    def take(self) -> list[tuple[T, Any]] | None:
        """The finished job's ``(key, features or exception)`` pairs (submission order), or None while it runs.
        Call it on the thread that runs the LM: on CUDA its stream is made to wait for the features."""
        with self._cond:
            if self._result is None:
                return None
            keys, feats, ready = self._result
            self._result, self._pending = None, False
        if ready is not None:
            event, device = ready
            current = torch.cuda.current_stream(device)
            current.wait_event(event)
            for f in feats:
                if isinstance(f, torch.Tensor) and f.is_cuda:
                    f.record_stream(current)
        return list(zip(keys, feats))

    # ---- the vision thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        device = self.engine.model.device
        stream = torch.cuda.Stream(device) if device.type == "cuda" and torch.cuda.is_available() else None
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stop)
                if self._stop:
                    return
                assert self._job is not None
                keys, frames = self._job
                self._job = None
            ready = None
            try:
                if stream is None:
                    feats = self.engine.frame_features_batch(frames, return_errors=True)
                else:
                    with torch.cuda.device(device), torch.cuda.stream(stream):
                        feats = self.engine.frame_features_batch(frames, return_errors=True)
                        event = torch.cuda.Event()
                        event.record(stream)
                        ready = (event, device)
            except Exception as e:  # noqa: BLE001 - every frame of the job fails; the scheduler tells each session
                log.exception("vision job failed")
                feats = [e] * len(frames)
            with self._cond:
                if self._pending and not self._stop:
                    self._result = (keys, feats, ready)
                    self.jobs += 1
                self._cond.notify_all()
            del keys, frames, feats, ready  # hold no session (and its KV cache) while waiting for the next job


__all__ = ["VisionAhead"]


"""Capacity planning: how many streams arriving in real time one engine sustains at a p99 frame-latency target
(``livecue bench --capacity``; docs/capacity.md). :func:`run_realtime` is the server scheduler's loop with streams
arriving on the clock (queueing counts in the latency); :func:`find_capacity` searches the stream count (doubling,
then bisection)."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.engine import StreamEngine
from .core import WARMUP, BenchConfig, _pct, _Streams, memory_mb, reset_peak_memory, sync

if TYPE_CHECKING:
    from ..progress import Progress

BACKLOG_GROWTH = 0.25  # a level whose latency grows by more than this fraction of the target has fallen behind
WARM_FPS = 240.0  # the untimed warm-up of a compiled engine's level: 2 frames a stream, arriving this fast


@dataclass
class CapacityLevel:
    """One concurrency level (:func:`run_realtime`).

    Attributes:
        streams: concurrent real-time streams.
        frames: frames processed (streams x frames per stream, fewer only when ``aborted``).
        measured: frames in the latency percentiles (each stream's warm-up frames are left out).
        seconds: wall time from the first frame's arrival to the last frame's events; ``cpu_seconds``: this
            process's CPU time meanwhile (under the wall time while the engine waits for frames, or for the cores).
        offered_fps: frames/s arriving (streams x stream fps); ``achieved_fps``: frames processed / (``seconds`` +
            one frame interval), which is the offered rate when the engine keeps up, less when it falls behind.
        p50_ms, p99_ms, max_ms: frame latency, from the frame's arrival to its events (queueing included); lower
            bounds when ``aborted`` (frames still waiting count with their age so far).
        backlog_growth_ms: median latency of the last quarter of the measured frames (by arrival) minus that of the
            first quarter: about 0 while the engine keeps up, growing with the run when it falls behind (None:
            aborted, or fewer than 4 measured frames).
        replies: forced replies among the measured frames.
        peak_mem_mb: peak RSS (CPU) or allocated accelerator memory during the level.
        passed: sustained: every frame processed, p99 <= the target and backlog growth <= ``BACKLOG_GROWTH`` x target.
        aborted: stopped once so many frames were over the target that p99 could no longer meet it.
        reason: why it passed or failed, in words.
    """

    streams: int
    frames: int
    measured: int
    seconds: float
    cpu_seconds: float
    offered_fps: float
    achieved_fps: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    backlog_growth_ms: float | None
    replies: int
    peak_mem_mb: float
    passed: bool
    aborted: bool
    reason: str


@dataclass
class CapacityResult:
    """The capacity search (:func:`find_capacity`): ``capacity`` streams sustained (0: not even one), ``levels`` in
    the order tried; ``capped``: every level up to ``max_streams`` passed (the engine may sustain more)."""

    target_p99_ms: float
    stream_fps: float
    seconds: float
    max_streams: int
    max_batch: int | None
    capacity: int
    capped: bool
    reason: str
    levels: list[CapacityLevel]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_frames(seconds: float, fps: float) -> int:
    """Frames of a ``seconds``-long stream at ``fps`` (at least one)."""
    return max(1, math.ceil(seconds * fps - 1e-9))


def run_realtime(engine: StreamEngine, cfg: BenchConfig, streams: int, seconds: float, p99_s: float,
                 fps: float | None = None, max_batch: int | None = 16, warmup: int = WARMUP,
                 progress: Progress | None = None) -> CapacityLevel:
    """``streams`` forced streams (:class:`_Streams`) arriving in real time on one engine, as a server sees them.

    Stream ``i`` starts ``i / (streams * fps)`` s after the first (starts spread over one frame interval); its frame
    ``k`` arrives ``k / fps`` s after its start and waits in the stream's queue. The loop is the server scheduler's:
    each round takes the oldest waiting frame of every stream with none in the engine's continuous
    :class:`~livecue.inference.engine.Batch`, round-robin, at most ``max_batch`` streams in flight (the server's
    default: 16; None: no cap), encodes them (``--pixels``: one vision batch, inline) and runs one LM forward for
    everything in flight; with nothing in flight and nothing waiting it sleeps until the next arrival. A frame's
    latency runs from its arrival to its events, so time spent queued counts. Nothing is dropped: every frame is
    processed (the forced schedule is checked on each), unless the level is aborted once more measured frames are
    over ``p99_s`` (done late, or waiting longer than that) than a p99 within ``p99_s`` allows.

    Args:
        streams: concurrent streams, >= 1.
        seconds: stream time per stream (``stream_frames(seconds, fps)`` frames each).
        p99_s: the frame-latency target in seconds (``math.inf``: none, never aborted).
        fps: frames per second of each stream (default: the model's stream fps).
        max_batch: streams in flight at most (None: all).
        warmup: first frames of each stream left out of the percentiles (at most half of them).
        progress: counts the frames processed.
    """
    if streams < 1 or not (math.isfinite(seconds) and seconds > 0) or not p99_s > 0:
        raise ValueError(f"need streams >= 1, seconds > 0 (finite) and p99 > 0, got {streams}, {seconds}, {p99_s}")
    device = engine.model.device
    fps = fps or engine.model.cfg.stream.fps
    n = stream_frames(seconds, fps)
    warm = min(warmup, n // 2)
    runs = _Streams(engine, cfg, streams, n, fps)
    room = max_batch or streams
    late_limit = _late_limit(streams * (n - warm))
    lat = np.full((streams, n), np.nan)  # latency of frame k of stream i (NaN: not done)
    finished, taken = np.zeros(streams, dtype=np.int64), np.zeros(streams, dtype=np.int64)
    busy, rr, late, aborted = [False] * streams, 0, 0, False
    batch = engine.batch()
    reset_peak_memory(device)
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    offset = t0 + np.arange(streams) / (streams * fps)  # frame k of stream i arrives at offset[i] + k / fps
    end = t0
    while finished.sum() < streams * n:
        arrived = _arrived(time.perf_counter(), offset, fps, n)
        picks: list[tuple[int, int]] = []  # the oldest waiting frame of idle streams, round-robin, up to the cap
        free = room - len(batch.keys)
        for i in ((rr + j) % streams for j in range(streams)):
            if len(picks) >= free:
                break
            if not busy[i] and taken[i] < arrived[i]:
                picks.append((i, int(taken[i])))
        if picks:
            rr = (picks[-1][0] + 1) % streams
            runs.feed(batch, picks)
            for i, _ in picks:
                busy[i], taken[i] = True, taken[i] + 1
        elif not len(batch):  # idle: sleep until the next frame arrives
            left = taken < n
            time.sleep(max(0.0, float((offset[left] + taken[left] / fps).min()) - time.perf_counter()))
            continue
        done = batch.round()
        sync(device)
        end = time.perf_counter()
        for (i, k), events in done:
            runs.check(i, k, events)
            lat[i, k] = end - (offset[i] + k / fps)
            late += int(k >= warm and lat[i, k] > p99_s)
            busy[i], finished[i] = False, finished[i] + 1
        if progress is not None and done:
            progress.update(len(done))
        if math.isinf(p99_s):
            continue
        waiting_late = np.clip(_arrived(end - p99_s, offset, fps, n) - np.maximum(finished, warm), 0, None).sum()
        if late + int(waiting_late) >= late_limit:
            aborted = True
            break
    done_frames = int(finished.sum())
    if aborted:  # frames arrived and not done count with their age so far (lower bounds of their latency)
        for i in range(streams):
            ks = np.arange(finished[i], _arrived(end, offset, fps, n)[i])
            lat[i, ks] = end - (offset[i] + ks / fps)
    replies = sum(int(runs.speak[i][warm:finished[i]].sum()) for i in range(streams))
    seconds = end - t0
    level = CapacityLevel(streams=streams, frames=done_frames, measured=int((~np.isnan(lat[:, warm:])).sum()),
                          seconds=seconds, cpu_seconds=time.process_time() - c0, offered_fps=streams * fps,
                          achieved_fps=done_frames / (seconds + 1 / fps), p50_ms=None, p99_ms=None, max_ms=None,
                          backlog_growth_ms=None, replies=replies, peak_mem_mb=memory_mb(device)[1], passed=False,
                          aborted=aborted, reason="")
    return _verdict(level, lat[:, warm:], (offset - t0)[:, None] + np.arange(warm, n) / fps, p99_s)


def _arrived(t: float, offset: np.ndarray, fps: float, n: int) -> np.ndarray:
    """Per stream, how many of its ``n`` frames have arrived by time ``t`` (frame k at ``offset + k / fps``)."""
    return np.clip(np.floor((t - offset) * fps + 1e-9).astype(np.int64) + 1, 0, n)


def _late_limit(measured: int) -> int:
    """How many of ``measured`` latencies over a target make their p99 (numpy's linear interpolation) exceed it
    whatever the others are: the sorted value at index floor(0.99 (n - 1)) is then over it."""
    return max(1, measured - math.floor(0.99 * (measured - 1)))


def _verdict(level: CapacityLevel, lat: np.ndarray, arrival: np.ndarray, p99_s: float) -> CapacityLevel:
    """Fill ``level``'s percentiles, backlog growth and verdict from the measured frames' latencies and arrival
    times (same shape; NaN latency: not reached)."""
    seen = ~np.isnan(lat)
    by_arrival = lat[seen][np.argsort(arrival[seen], kind="stable")]
    level.p50_ms, level.p99_ms = _pct(by_arrival, 50), _pct(by_arrival, 99)
    level.max_ms = float(by_arrival.max() * 1e3) if len(by_arrival) else None
    q = len(by_arrival) // 4
    if q and not level.aborted:
        level.backlog_growth_ms = float(np.median(by_arrival[-q:]) - np.median(by_arrival[:q])) * 1e3
    target = p99_s * 1e3
    if level.aborted:
        level.reason = (f"aborted after {level.seconds:.1f} s: too many frames over {target:.0f} ms already "
                        f"(p99 >= {level.p99_ms:.0f} ms)")
    elif level.p99_ms is None or level.p99_ms > target:
        level.reason = f"p99 {level.p99_ms:.0f} ms > {target:.0f} ms" if level.p99_ms is not None else "no frames"
    elif level.backlog_growth_ms is not None and level.backlog_growth_ms > BACKLOG_GROWTH * target:
        level.reason = (f"falling behind: latency grew by {level.backlog_growth_ms:.0f} ms over the run "
                        f"(> {BACKLOG_GROWTH * target:.0f} ms)")
    else:
        level.passed = True
        level.reason = f"p99 {level.p99_ms:.0f} ms <= {target:.0f} ms" + (
            "" if level.backlog_growth_ms is None else f", backlog growth {level.backlog_growth_ms:.0f} ms")
    return level


def find_capacity(engine: StreamEngine | None, cfg: BenchConfig, p99_s: float, fps: float | None = None,
                  seconds: float = 20.0, max_streams: int = 256, max_batch: int | None = 16,
                  progress: Progress | None = None,
                  measure: Callable[[int], CapacityLevel] | None = None) -> CapacityResult:
    """The most concurrent real-time streams one engine sustains with p99 frame latency <= ``p99_s``.

    Levels of 1, 2, 4, ... streams (up to ``max_streams``, which is tried itself) until one fails, then bisection
    between the last level that passed and the first that failed. A level is one :func:`run_realtime` of ``seconds``
    of stream on fresh sessions; a compiled engine first runs the level untimed for 2 frames a stream, so that its
    new shapes are traced before the clock starts. ``measure(streams)`` replaces all that (tests; ``engine`` may
    then be None and ``fps`` must be given). ``progress`` counts the frames of every level, with the level and the
    last verdict as postfix."""
    if not (math.isfinite(p99_s) and p99_s > 0) or max_streams < 1:
        raise ValueError(f"need a finite p99 > 0 and max_streams >= 1, got {p99_s}, {max_streams}")
    if engine is None:
        if measure is None or fps is None:
            raise ValueError("find_capacity needs an engine, or a measure function and fps")
    else:
        fps = fps or float(engine.model.cfg.stream.fps)

    if measure is None:
        def measure(streams: int) -> CapacityLevel:
            gc.collect()  # the previous level's sessions and caches go first
            if engine.fast.compile:  # trace this level's shapes (pool slots, row buckets) before the clock starts
                run_realtime(engine, cfg, streams, 2 / WARM_FPS, p99_s=math.inf, fps=WARM_FPS, max_batch=max_batch,
                             warmup=0)
                gc.collect()
            return run_realtime(engine, cfg, streams, seconds, p99_s, fps=fps, max_batch=max_batch,
                                progress=progress)

    levels: list[CapacityLevel] = []

    def passes(streams: int) -> bool:
        if progress is not None:
            progress.set_total(progress.n + streams * stream_frames(seconds, fps))
            progress.update(0, streams=streams)
        level = measure(streams)
        levels.append(level)
        if progress is not None:
            progress.set_total(progress.n)  # an aborted level did fewer frames
            progress.update(0, last=f"{streams}:{'pass' if level.passed else 'fail'}")
        return level.passed

    good, bad, streams = 0, None, 1  # most streams passed, fewest failed
    while bad is None and good < max_streams:
        if passes(streams):
            good, streams = streams, min(2 * streams, max_streams)
        else:
            bad = streams
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    if bad is None:
        reason = f"every level up to the cap of {max_streams} streams passed: the engine may sustain more"
    else:
        failed = next(level for level in levels if level.streams == bad)
        reason = (f"{good} streams pass, {bad} fail" if good else "1 stream fails") + f": {failed.reason}"
    return CapacityResult(target_p99_ms=p99_s * 1e3, stream_fps=fps, seconds=seconds, max_streams=max_streams,
                          max_batch=max_batch, capacity=good, capped=bad is None, reason=reason, levels=levels)


__all__ = ["BACKLOG_GROWTH", "CapacityLevel", "CapacityResult", "find_capacity", "run_realtime", "stream_frames"]

"""Streaming benchmark: speed and memory of the StreamEngine versus stream length (issue 10).

Random frame features (or random pixels through the vision tower) are streamed at the model's fps with a **forced
speak schedule**: every ``speak_every`` seconds a frame is forced to speak a reply of exactly ``reply_tokens``
tokens; every other frame is forced silent, so random weights cost what a trained model costs. The forcing is the
session's public hook (:meth:`~livecue.inference.session.StreamSession.force`; see :func:`forced_session`).

Per stream, in windows of frames ending at each mark: frames/s, silent and speaking frame latency p50/p99, cached
tokens, memory (RSS on CPU, allocated accelerator memory otherwise). :func:`measure_overhead` compares the engine's
end-to-end time with exactly the same LM forwards (ids, features, cache growth, evictions) called through
``model(...)``. :func:`find_capacity` finds how many streams arriving in real time one engine sustains at a p99
frame-latency target (:func:`run_realtime`: the server scheduler's loop, queueing included; docs/capacity.md).

Every runner takes an optional ``progress`` (a :class:`livecue.progress.Progress`, made by the caller, which owns the
display): it counts the frames streamed, outside the timed calls (in :func:`run_streams`' continuous mode, whose
whole loop is timed, once a round: a negligible cost)."""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..inference.engine import StreamEngine, StreamSession
from ..inference.events import Reply
from ..inference.memory import MemoryPolicy, parse_memory
from ..inference.options import check_option
from ..model import lm as lm_api
from ..model.load import load_model

if TYPE_CHECKING:
    from ..progress import Progress

log = logging.getLogger(__name__)
WARMUP = 5  # frames per stream left out of run_streams' latency percentiles


# ---- configuration --------------------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What one benchmark stream does.

    Attributes:
        marks: frame counts at which statistics are taken; the stream runs to the largest.
        speak_every: seconds between forced replies (0: never speak).
        reply_tokens: exact length of every forced reply.
        memory: memory policy spec (:func:`parse_memory`).
        pixels: feed random uint8 frames through the vision tower instead of random features.
        window: frames per statistics window (ending at each mark; at most half the mark).
        seed: seed of the random frames.
        time_budget: stop the stream after this many seconds (marks not reached are reported missing).
    """

    marks: list[int] = field(default_factory=lambda: [100, 1000])
    speak_every: float = 3.0
    reply_tokens: int = 15
    memory: str = "unbounded"
    pixels: bool = False
    window: int = 120
    seed: int = 0
    time_budget: float | None = None

    def __post_init__(self) -> None:
        if not self.marks or min(self.marks) <= 0:
            raise ValueError(f"marks must be positive frame counts, got {self.marks}")
        if not math.isfinite(self.speak_every) or (self.time_budget is not None
                                                   and not (math.isfinite(self.time_budget) and self.time_budget >= 0)):
            raise ValueError(f"speak_every and time_budget must be finite (time_budget >= 0), got {self.speak_every}, "
                             f"{self.time_budget}")
        if self.speak_every < 0 or self.reply_tokens <= 0 or self.window <= 0:
            raise ValueError(f"need speak_every >= 0, reply_tokens > 0, window > 0; got {self.speak_every}, "
                             f"{self.reply_tokens}, {self.window}")
        self.marks = sorted(set(self.marks))
        check_option("memory", self.memory)


# ---- the forced session ---------------------------------------------------------------------------------------------
Trace = list[tuple[str, Any, Any]]  # ("forward", ids, (features, positions)), ("evict", (start, end), shift)


def forced_session(engine: StreamEngine, reply_tokens: int, memory: MemoryPolicy,
                   trace: Trace | None = None) -> StreamSession:
    """A session whose every reply is exactly ``reply_tokens`` long (eos cannot end it earlier); the runner forces
    each frame's decision with ``session.force(speak, reply_tokens)``. With ``trace``, the session's forwards
    (:attr:`~livecue.inference.session.StreamSession.on_step`) and evictions (``on_evict``) are appended to it for a
    pure replay."""
    session = engine.session(memory=memory, max_reply_tokens=reply_tokens)
    session.force(False, reply_tokens)
    if trace is not None:
        session.on_step = lambda step: trace.append(("forward", step.ids, (step.features, step.positions)))
        session.on_evict = lambda start, end, shift: trace.append(("evict", (start, end), shift))
    return session


# ---- memory and devices ---------------------------------------------------------------------------------------------
def _is_accel(device: torch.device) -> bool:
    return device.type not in ("cpu", "meta")


def sync(device: torch.device) -> None:
    """Wait for the accelerator (no-op on CPU)."""
    if _is_accel(device):
        torch.accelerator.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    """Restart peak-memory accounting (accelerator stats, or the process's peak RSS via /proc/self/clear_refs)."""
    if _is_accel(device):
        torch.accelerator.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        log.debug("cannot reset the peak RSS: it covers the whole process")


def memory_mb(device: torch.device) -> tuple[float, float]:
    """``(current, peak)`` MiB: allocated accelerator memory, or the process's RSS on CPU."""
    if _is_accel(device):
        return torch.accelerator.memory_allocated() / 2**20, torch.accelerator.max_memory_allocated() / 2**20
    try:
        with open("/proc/self/status") as f:
            status = dict(line.split(":", 1) for line in f if ":" in line)
        return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def environment(model: Any, device: torch.device) -> dict[str, Any]:
    """What a result depends on: versions, threads, device, load average, model size."""
    import transformers

    env = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "device": str(device), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
           "model": model.cfg.name, "dtype": str(model.dtype).removeprefix("torch."),
           "lm_params": sum(p.numel() for p in model.lm.parameters()),
           "vision_params": sum(p.numel() for p in model.vision.parameters()) if model.vision is not None else 0}
    if _is_accel(device):
        backend = getattr(torch, device.type, None)  # torch.cuda, torch.xpu, ...
        name = getattr(backend, "get_device_name", None)
        env["accelerator"] = name(device) if callable(name) else device.type
    return env


def load_bench_model(source: str, device: str | None = None, dtype: str | None = None,
                     overrides: list[str] | None = None, quantize: str | None = None) -> tuple[Any, Any]:
    """``load_model`` with every tensor created directly on ``device`` (default-device context), so a real-size
    random model (e.g. 8B parameters) is allocated and initialised on the GPU in seconds instead of on the CPU;
    ``quantize``: a weight-only scheme (:mod:`livecue.model.quantize`) applied after loading."""
    target = torch.device(device or "cpu")
    with torch.device(target):
        return load_model(source, device=target, dtype=dtype, overrides=overrides or None, quantize=quantize)


# ---- the stream -----------------------------------------------------------------------------------------------------
@dataclass
class MarkStats:
    """Statistics of the window of frames ending at ``frame``."""

    frame: int
    window: int
    fps: float
    silent_p50_ms: float | None
    silent_p99_ms: float | None
    reply_p50_ms: float | None
    reply_p99_ms: float | None
    replies: int
    cache_tokens: int
    evicted_tokens: int
    mem_mb: float
    peak_mem_mb: float


@dataclass
class StreamResult:
    """One benchmark stream."""

    memory: str
    stream_fps: float
    frames: int
    seconds: float
    cpu_seconds: float
    fps: float
    replies: int
    reply_tokens: int
    peak_mem_mb: float
    memory_kind: str
    marks: list[MarkStats]
    missing_marks: list[int]
    complete: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_pool(engine: StreamEngine, pixels: bool, seed: int, size: int = 32) -> list[torch.Tensor]:
    """Random inputs cycled through by a stream: ``(K, D_vision)`` features or ``(3, R, R)`` uint8 frames."""
    model = engine.model
    g = torch.Generator().manual_seed(seed)
    if pixels and model.vision is None:
        raise ValueError("--pixels needs a model with a vision tower")
    if pixels:
        r = model.cfg.frame_resolution
        return [torch.randint(0, 256, (3, r, r), generator=g, dtype=torch.uint8) for _ in range(size)]
    width = model.feature_width
    return [torch.randn(model.frame_num_tokens, width, generator=g).to(model.device, model.dtype)
            for _ in range(size)]


def speak_schedule(frames: int, fps: float, speak_every: float) -> np.ndarray:
    """Which frames are forced to speak: the first frame at or after each multiple of ``speak_every`` seconds."""
    speak = np.zeros(frames, dtype=bool)
    if speak_every > 0:
        t = np.arange(frames) / fps
        slot = np.floor(t / speak_every + 1e-9).astype(np.int64)
        speak[1:] = slot[1:] > slot[:-1]
    return speak


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q) * 1e3) if len(values) else None


def run_stream(engine: StreamEngine, cfg: BenchConfig, trace: Trace | None = None,
               progress: Progress | None = None) -> tuple[StreamResult, StreamSession]:
    """Stream up to the largest mark with the forced schedule and collect statistics at every mark (the session's
    forwards and evictions go into ``trace`` when given; ``progress`` counts the frames, with the last mark's
    window latency and cached tokens)."""
    device, fps, n = engine.model.device, engine.model.cfg.stream.fps, cfg.marks[-1]
    speak = speak_schedule(n, fps, cfg.speak_every)
    pool = frame_pool(engine, cfg.pixels, cfg.seed)
    session = forced_session(engine, cfg.reply_tokens, parse_memory(cfg.memory), trace)
    latency, cpu = np.zeros(n), 0.0
    tokens = np.zeros((n, 2), dtype=np.int64)  # cached, evicted
    memory: dict[int, tuple[float, float]] = {}
    reset_peak_memory(device)
    started, done = time.perf_counter(), 0
    for i in range(n):
        session.force(bool(speak[i]), cfg.reply_tokens)
        c0, t0 = time.process_time(), time.perf_counter()
        events = session.push_frame(pool[i % len(pool)], i / fps)
        sync(device)
        latency[i] = time.perf_counter() - t0
        cpu += time.process_time() - c0
        _check(events, bool(speak[i]), cfg.reply_tokens, i)
        tokens[i] = session.context_length, session.evicted_tokens
        done = i + 1
        if done in cfg.marks:
            memory[done] = memory_mb(device)
            ms = latency[max(0, done - cfg.window):done].mean() * 1e3
            log.info("%s: frame %d, %.1f ms/frame in the last window, %d cached tokens", cfg.memory, done, ms,
                     tokens[i, 0])
            if progress is not None:
                progress.update(0, ms_per_frame=float(ms), cached=int(tokens[i, 0]))
        if progress is not None:
            progress.update(1)
        if cfg.time_budget is not None and time.perf_counter() - started > cfg.time_budget:
            log.warning("time budget of %.0f s spent after %d frames", cfg.time_budget, done)
            break
    stats = []
    for mark in (m for m in cfg.marks if m in memory):
        w = min(cfg.window, max(1, mark // 2))
        lat, spk = latency[mark - w:mark], speak[mark - w:mark]
        stats.append(MarkStats(frame=mark, window=w, fps=w / lat.sum(), silent_p50_ms=_pct(lat[~spk], 50),
                               silent_p99_ms=_pct(lat[~spk], 99), reply_p50_ms=_pct(lat[spk], 50),
                               reply_p99_ms=_pct(lat[spk], 99), replies=int(spk.sum()),
                               cache_tokens=int(tokens[mark - 1, 0]), evicted_tokens=int(tokens[mark - 1, 1]),
                               mem_mb=memory[mark][0], peak_mem_mb=memory[mark][1]))
    total = float(latency[:done].sum())
    result = StreamResult(memory=cfg.memory, stream_fps=fps, frames=done, seconds=total, cpu_seconds=cpu,
                          fps=done / total, replies=int(speak[:done].sum()), reply_tokens=cfg.reply_tokens,
                          peak_mem_mb=memory_mb(device)[1], memory_kind="allocated" if _is_accel(device) else "rss",
                          marks=stats, missing_marks=[m for m in cfg.marks if m > done], complete=done == n)
    return result, session


def _check(events: list, speak: bool, reply_tokens: int, frame: int) -> None:
    """The forcing held: a reply of exactly ``reply_tokens`` where the schedule speaks, silence elsewhere."""
    last = events[-1]
    if isinstance(last, Reply) != speak or speak and len(last.token_ids) != reply_tokens:
        raise RuntimeError(f"frame {frame} was forced to {'speak' if speak else 'stay silent'} "
                           f"({reply_tokens} tokens) but gave {last!r}")


# ---- engine overhead over pure model time ---------------------------------------------------------------------------
class _Replayer:
    """Runs recorded forwards and evictions directly through ``model(...)`` on its own cache."""

    def __init__(self, model: Any) -> None:
        self.model, self.cache = model, None

    @torch.inference_mode()
    def run(self, entries: Trace) -> tuple[float, float]:
        """``(wall, cpu)`` seconds for ``entries``; their input tensors are built before the clock starts."""
        model, device = self.model, self.model.device
        steps = [(kind, torch.tensor([a], device=device) if kind == "forward" else a, b) for kind, a, b in entries]
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        for kind, a, b in steps:
            if kind == "forward":
                features, positions = b
                self.cache = model(a, frame_features=features, position_ids=positions, cache=self.cache,
                                   use_cache=True, logits_to_keep=1).cache
            else:
                lm_api.evict_span(model.lm, self.cache, *a, shift=b)
        sync(device)
        return time.perf_counter() - t0, time.process_time() - c0


def replay(model: Any, trace: Trace) -> tuple[float, float]:
    """``(wall, cpu)`` seconds to run a session's recorded forwards and evictions directly through ``model(...)``:
    the same ids and features, the cache growing and evicted exactly as in the session."""
    return _Replayer(model).run(trace)


@dataclass
class OverheadResult:
    """Engine time / time of the same forwards called directly (lockstep, per repeat): ``ratio`` of median wall
    times, ``ratio_min`` of minima (least disturbed), ``ratio_cpu`` of median process CPU times."""

    frames: int
    forwards: int
    engine_s: list[float]
    pure_s: list[float]
    engine_cpu_s: list[float]
    pure_cpu_s: list[float]
    ratio: float
    ratio_min: float
    ratio_cpu: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_overhead(engine: StreamEngine, cfg: BenchConfig, frames: int, repeats: int = 3,
                     progress: Progress | None = None) -> OverheadResult:
    """Stream ``frames`` frames (features, not pixels: vision is not part of the LM replay) ``repeats`` times; after
    every frame, replay that frame's forwards (and evictions) directly on a second cache, so that both sides see the
    same machine load. Only ``push_frame`` and the replayed calls are timed (``progress`` counts ``frames`` x
    ``repeats`` frames, with the repeat)."""
    fps = engine.model.cfg.stream.fps
    device = engine.model.device
    speak = speak_schedule(frames, fps, cfg.speak_every)
    pool = frame_pool(engine, False, cfg.seed)
    engine_s, pure_s, engine_cpu, pure_cpu, forwards = [], [], [], [], 0
    for repeat in range(repeats):
        trace: Trace = []
        session = forced_session(engine, cfg.reply_tokens, parse_memory(cfg.memory), trace)
        replayer = _Replayer(engine.model)
        totals = np.zeros(4)  # engine wall, engine cpu, pure wall, pure cpu
        forwards = 0
        for i in range(frames):
            session.force(bool(speak[i]), cfg.reply_tokens)
            c0, t0 = time.process_time(), time.perf_counter()
            session.push_frame(pool[i % len(pool)], i / fps)
            sync(device)
            totals[:2] += (time.perf_counter() - t0, time.process_time() - c0)
            entries = list(trace)
            trace.clear()
            forwards += sum(1 for kind, _, _ in entries if kind == "forward")
            totals[2:] += replayer.run(entries)
            if progress is not None:
                progress.update(1, repeat=f"{repeat + 1}/{repeats}")
        engine_s.append(float(totals[0]))
        engine_cpu.append(float(totals[1]))
        pure_s.append(float(totals[2]))
        pure_cpu.append(float(totals[3]))
    med = statistics.median
    return OverheadResult(frames=frames, forwards=forwards, engine_s=engine_s, pure_s=pure_s,
                          engine_cpu_s=engine_cpu, pure_cpu_s=pure_cpu, ratio=med(engine_s) / med(pure_s),
                          ratio_min=min(engine_s) / min(pure_s), ratio_cpu=med(engine_cpu) / med(pure_cpu))


# ---- many streams: batched stepping vs one session at a time --------------------------------------------------------
@dataclass
class MultiStreamResult:
    """N streams of ``frames`` frames (plus warm-up) each, stepped in one of three modes (:func:`run_streams`).

    ``fps``: aggregate frames/s over all streams; ``realtime_streams``: how many streams at the model fps this
    throughput sustains; ``frame_*``: frame latency (see :func:`run_streams`)."""

    streams: int
    mode: str
    frames: int
    seconds: float
    fps: float
    per_stream_fps: float
    realtime_streams: float
    frame_p50_ms: float
    frame_p99_ms: float
    replies: int
    peak_mem_mb: float
    memory_kind: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Streams:
    """The forced streams of a multi-stream run: each its own random frames and session, speak schedules staggered by
    one frame per stream (so that replies do not all fall on the same tick); frame ``k`` of a stream is at ``k / fps``
    seconds of stream time. Shared by :func:`run_streams` and :func:`run_realtime`."""

    def __init__(self, engine: StreamEngine, cfg: BenchConfig, streams: int, frames: int, fps: float) -> None:
        self.engine, self.cfg, self.fps = engine, cfg, fps
        self.pools = [frame_pool(engine, cfg.pixels, cfg.seed + i, size=8) for i in range(streams)]
        self.speak = [np.roll(speak_schedule(frames + streams, fps, cfg.speak_every), i)[:frames]
                      for i in range(streams)]
        self.sessions = [forced_session(engine, cfg.reply_tokens, parse_memory(cfg.memory)) for _ in range(streams)]

    def start(self, i: int, k: int) -> tuple[StreamSession, torch.Tensor, float]:
        """Force frame ``k`` of stream ``i``'s decision; its ``(session, frame, t)``."""
        self.sessions[i].force(bool(self.speak[i][k]), self.cfg.reply_tokens)
        return self.sessions[i], self.pools[i][k % len(self.pools[i])], k / self.fps

    def feed(self, batch: Any, picks: list[tuple[int, int]]) -> None:
        """Add frame ``k`` of stream ``i`` for every ``(i, k)`` in ``picks`` to the continuous ``batch`` (key
        ``(i, k)``); the vision encoding of these frames is one batch (``--pixels``), as the server's scheduler does."""
        items = [self.start(i, k) for i, k in picks]
        feats = self.engine.frame_features_batch([frame for _, frame, _ in items])
        for (i, k), (session, _, t), f in zip(picks, items, feats):
            batch.add_frame(session, f, t, key=(i, k))

    def check(self, i: int, k: int, events: list) -> bool:
        """The forcing held for frame ``k`` of stream ``i`` (:func:`_check`); whether it spoke."""
        _check(events, bool(self.speak[i][k]), self.cfg.reply_tokens, k)
        return bool(self.speak[i][k])


def run_streams(engine: StreamEngine, cfg: BenchConfig, streams: int, frames: int, mode: str = "batched",
                warmup: int = WARMUP, progress: Progress | None = None) -> MultiStreamResult:
    """``streams`` forced sessions (:class:`_Streams`), ``frames`` frames each, stepped

    * ``batched``: in lockstep ticks, one :meth:`StreamEngine.step` per tick (a tick lasts as long as its longest
      reply);
    * ``continuous``: through one continuous :class:`~livecue.inference.engine.Batch`, each session taking its next
      frame as soon as its previous one is done (as the server's scheduler does with frames waiting);
    * ``sequential``: one ``push_frame`` at a time.

    Frame latency is a frame's own time from the start of its tick (lockstep) or from joining the batch
    (continuous; vision encoding of the frames that join together is one batch and is included) to its events; the
    first ``warmup`` frames of each stream are left out of the latency percentiles
    (not out of the throughput). ``progress`` counts the ``streams`` x (``frames`` + ``warmup``) frames. Frames
    are all there from the start: for streams arriving in real time, see :func:`run_realtime`."""
    if mode not in ("batched", "continuous", "sequential"):
        raise ValueError(f"mode must be batched, continuous or sequential, got {mode!r}")
    device, fps = engine.model.device, engine.model.cfg.stream.fps
    total = frames + warmup
    runs = _Streams(engine, cfg, streams, total, fps)
    latencies, replies = [], 0
    reset_peak_memory(device)
    start = runs.start

    def record(i: int, k: int, events: list, seconds: float) -> None:
        nonlocal replies
        spoke = runs.check(i, k, events)
        if k >= warmup:
            latencies.append(seconds)
            replies += int(spoke)

    timed = 0.0
    if mode == "continuous":
        batch, nxt, began = engine.batch(), [0] * streams, {}
        t_start = time.perf_counter()
        while len(batch) or min(nxt) < total:
            busy = batch.sessions
            new = [i for i in range(streams) if nxt[i] < total and runs.sessions[i] not in busy]
            now = time.perf_counter()
            runs.feed(batch, [(i, nxt[i]) for i in new])
            for i in new:
                began[i] = now
                nxt[i] += 1
            done = batch.round()
            for (i, k), events in done:
                sync(device)
                record(i, k, events, time.perf_counter() - began[i])
            if progress is not None:  # once a round: a negligible cost inside the timed loop
                progress.update(len(done))
        timed = time.perf_counter() - t_start
    else:
        for k in range(total):
            items = [start(i, k) for i in range(streams)]
            t0 = time.perf_counter()
            if mode == "batched":
                results = engine.step(items)
                sync(device)
                finished = [time.perf_counter() - t0] * streams
            else:
                results, finished = [], []
                for item in items:
                    results.append(item[0].push_frame(item[1], item[2]))
                    sync(device)
                    finished.append(time.perf_counter() - t0)
            for i, events in enumerate(results):
                record(i, k, events, finished[i])
            timed += finished[-1]
            if progress is not None:
                progress.update(streams)
    lat = np.array(latencies)
    agg = streams * total / timed
    return MultiStreamResult(streams=streams, mode=mode, frames=frames, seconds=timed, fps=agg,
                             per_stream_fps=agg / streams, realtime_streams=agg / fps,
                             frame_p50_ms=_pct(lat, 50), frame_p99_ms=_pct(lat, 99), replies=replies,
                             peak_mem_mb=memory_mb(device)[1], memory_kind="allocated" if _is_accel(device) else "rss")


__all__ = ["WARMUP", "BenchConfig", "MarkStats", "MultiStreamResult", "OverheadResult", "StreamResult",
           "environment", "forced_session", "load_bench_model", "measure_overhead", "memory_mb", "parse_memory",
           "replay", "run_stream", "run_streams", "speak_schedule"]

"""``livecue bench``: speed and memory of the streaming engine (:mod:`.core`: one forced stream by marks, the engine's
overhead over pure model time, many streams batched) and capacity planning (:mod:`.capacity`: the most streams
arriving in real time one engine sustains at a p99 target)."""

from .capacity import BACKLOG_GROWTH, CapacityLevel, CapacityResult, find_capacity, run_realtime, stream_frames
from .core import (
    WARMUP,
    BenchConfig,
    MarkStats,
    MultiStreamResult,
    OverheadResult,
    StreamResult,
    environment,
    forced_session,
    load_bench_model,
    measure_overhead,
    memory_mb,
    parse_memory,
    replay,
    run_stream,
    run_streams,
    speak_schedule,
)

__all__ = ["BACKLOG_GROWTH", "WARMUP", "BenchConfig", "CapacityLevel", "CapacityResult", "MarkStats",
           "MultiStreamResult", "OverheadResult", "StreamResult", "environment", "find_capacity", "forced_session",
           "load_bench_model", "measure_overhead", "memory_mb", "parse_memory", "replay", "run_realtime", "run_stream",
           "run_streams", "speak_schedule", "stream_frames"]

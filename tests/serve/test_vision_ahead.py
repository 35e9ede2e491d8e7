"""The server scheduler's vision stage: the next round's frames are encoded on their own thread while the LM round
runs (issue 19, vision ahead of the LM).

The same sessions and frames give the same events per session with the overlap on, off, and when rounds are stepped
by hand; the vision thread really encodes the next frames during an LM forward; a frame ahead of a session that has
gone is never fed; a frame the vision fails on fails for its own session only; stop() ends both threads. Waits are
bounded; nothing asserts on timing.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest
from serve_helpers import frames, wait_until

from livecue.inference.engine import StreamEngine
from livecue.inference.options import StreamOptions
from livecue.serve.protocol import Limits, Open
from livecue.serve.scheduler import Scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_until_closed(sched: Scheduler, out: dict[str, list[dict]], timeout: float = 20.0) -> None:
    """Start ``sched``, wait until every session of ``out`` has its ``closed`` event, stop it."""
    sched.start()
    try:
        assert wait_until(lambda: all(ev and ev[-1]["type"] == "closed" for ev in out.values()), timeout)
    finally:
        sched.stop()

THREADS = ("livecue-scheduler", "livecue-vision")


def ours_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in THREADS and t.is_alive()]


def run_scenario(tiny, mode: str) -> dict[str, list[dict]]:
    """Three sessions (one always talks and is asked a question, one is silent and gets a θ update, one pushes more
    frames than its queue holds), every frame queued before the scheduler runs, each closed gracefully: every
    session's events, by name, less their wall-clock ``latency``. ``mode``: ``step`` (rounds by hand), ``serial`` or
    ``ahead`` (worker threads)."""
    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=6, max_reply_tokens=5),
                      vision_ahead=mode == "ahead")
    out: dict[str, list[dict]] = {"talk": [], "quiet": [], "busy": []}
    talk = sched.open(Open(StreamOptions(threshold=1.0, max_reply_tokens=5)), out["talk"].append)
    quiet = sched.open(Open(StreamOptions(threshold=1.0), silence=True), out["quiet"].append)
    busy = sched.open(Open(StreamOptions(), silence=True), out["busy"].append)  # the model's own θ
    video = frames(9, seed=3)
    for i in range(6):
        sched.push_frame(talk, i * 0.5, video[i])
        sched.push_frame(quiet, i * 0.5, video[8 - i])
    for i in range(9):  # 9 frames into a queue of 6: the 3 oldest are dropped (reported before the first watched)
        sched.push_frame(busy, i * 0.5, video[i])
    sched.control(talk, "query", ("What colour is it?", 1.2, True))
    sched.control(quiet, "threshold", 0.0)  # applied before its first frame: silent throughout
    for s in (talk, quiet, busy):
        sched.close(s)
    if mode == "step":
        while sched.step():
            pass
    else:
        run_until_closed(sched, out, 60)
    assert not ours_alive()
    return {name: [{k: v for k, v in e.items() if k != "latency"} for e in events] for name, events in out.items()}


def assert_same_events(got: dict[str, list[dict]], want: dict[str, list[dict]]) -> None:
    """Every event equal, ``p_silence`` to 1e-4: sessions batched side by side in other rounds (the frames join
    the batch a round later with the overlap on) may move it in its last float digits, never a decision."""
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for a, b in zip(got[name], want[name]):
            assert {k: v for k, v in a.items() if k != "p_silence"} == {k: v for k, v in b.items()
                                                                        if k != "p_silence"}, name
            assert a.get("p_silence") == pytest.approx(b.get("p_silence"), abs=1e-4), name


def test_overlap_on_and_off_give_the_same_events(tiny):
    """Texts, decisions, drops, answers and frame order of every session are the same whether the frames are
    encoded ahead on the vision thread, inline on the worker, or with rounds stepped by hand."""
    by_hand = run_scenario(tiny, "step")
    talk = [e["type"] for e in by_hand["talk"]]
    assert talk.count("reply") == 6 and "answer" in talk and talk[-1] == "closed"
    assert by_hand["busy"][0]["type"] == "dropped" and by_hand["busy"][0]["count"] == 3
    assert [e["t"] for e in by_hand["busy"] if e["type"] == "reply"] == [1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    assert [e["type"] for e in by_hand["quiet"]] == ["updated"] + ["silence"] * 6 + ["closed"]
    for mode in ("serial", "ahead"):
        assert_same_events(run_scenario(tiny, mode), by_hand)


def test_the_next_frames_are_encoded_while_the_lm_runs(tiny):
    """While the worker runs the LM forward of a session's frame, the vision thread encodes its next frame (the
    forward waits, bounded, until that encode has started: it would time out if they were serialised)."""
    engine = StreamEngine(*tiny)
    threads: list[str] = []
    second_encode = threading.Event()
    encode = engine.frame_features_batch

    def recording_encode(batch, return_errors=False):
        threads.append(threading.current_thread().name)
        if len(threads) == 2:
            second_encode.set()
        return encode(batch, return_errors=return_errors)

    overlapped: list[bool] = []
    execute = engine._execute

    def waiting_execute(steps):
        if not overlapped and any(step.features is not None for step in steps):  # the first frame's forward
            overlapped.append(second_encode.wait(10))
        return execute(steps)

    engine.frame_features_batch, engine._execute = recording_encode, waiting_execute
    sched = Scheduler(engine, limits=Limits(queue_size=8))
    out: list[dict] = []
    s = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out.append)
    for i, f in enumerate(frames(4)):
        sched.push_frame(s, i * 0.5, f)
    sched.close(s)
    sched.start()
    try:
        assert wait_until(lambda: out and out[-1]["type"] == "closed")
    finally:
        sched.stop()
    assert overlapped == [True]
    assert set(threads) == {"livecue-vision"} and sched._vision.jobs == 4
    assert [e["t"] for e in out if e["type"] == "silence"] == [0.0, 0.5, 1.0, 1.5]


def test_a_session_gone_while_its_frame_is_encoded_never_gets_it(tiny):
    """A client that disconnects while its next frame is on the vision thread: that frame is dropped, never fed to
    the LM; the other session goes on, and nothing holds the gone session's engine state."""
    engine = StreamEngine(*tiny)
    video = frames(3, seed=5)
    encoding, release = threading.Event(), threading.Event()
    encode = engine.frame_features_batch

    def held_encode(batch, return_errors=False):
        if any(f is video[1] for f in batch):
            encoding.set()
            release.wait(10)
        return encode(batch, return_errors=return_errors)

    engine.frame_features_batch = held_encode
    sched = Scheduler(engine, limits=Limits(queue_size=8))
    gone_out: list[dict] = []
    other_out: list[dict] = []
    gone = sched.open(Open(StreamOptions(threshold=0.0), silence=True), gone_out.append)
    other = sched.open(Open(StreamOptions(threshold=0.0), silence=True), other_out.append)
    fed: list[tuple[str, float]] = []  # (session, t) of every frame added to the LM's batch
    add = sched._batch.add_frame
    sched._batch.add_frame = lambda stream, f, t, key=None: fed.append((key[0].id, t)) or add(stream, f, t, key=key)
    for i, f in enumerate(video):
        sched.push_frame(gone, i * 0.5, f)
    sched.push_frame(other, 0.0, video[0])
    sched.start()
    try:
        assert encoding.wait(10), "the frame was never encoded"
        assert wait_until(lambda: gone_out), "the frame before it was not watched"  # the worker now waits for it
        sched.close(gone, graceful=False)
        release.set()
        for i, f in enumerate(frames(3, seed=6)):
            sched.push_frame(other, 0.5 + i * 0.5, f)
        sched.close(other)
        assert wait_until(lambda: other_out and other_out[-1]["type"] == "closed")
    finally:
        release.set()
        sched.stop()
    assert [t for sid, t in fed if sid == gone.id] == [0.0]
    assert [e["t"] for e in gone_out] == [0.0]
    assert [e["t"] for e in other_out if e["type"] == "silence"] == [0.0, 0.5, 1.0, 1.5]
    assert not sched._ahead and not sched._ready
    stream = weakref.ref(gone.stream)
    del gone
    gc.collect()
    assert stream() is None


def test_an_encoding_error_reaches_only_its_session(tiny):
    """A frame the vision cannot encode (2 colour channels) fails for its session, in its place among its frames;
    the session goes on, and the other sessions encoded in the same vision batch never hear of it."""
    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=8))
    out: dict[str, list[dict]] = {"bad": [], "good": []}
    bad = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out["bad"].append)
    good = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out["good"].append)
    video = frames(3)
    for i in range(3):
        sched.push_frame(bad, i * 0.5, video[i][..., :2] if i == 1 else video[i])
        sched.push_frame(good, i * 0.5, video[i])
    for s in (bad, good):
        sched.close(s)
    run_until_closed(sched, out)
    assert [(e["type"], e["t"]) for e in out["bad"][:-1]] == [("silence", 0.0), ("error", 0.5), ("silence", 1.0)]
    assert out["bad"][1]["code"] == "frame_failed" and "3 colour channels" in out["bad"][1]["message"]
    assert out["bad"][-1]["errors"] == 1 and out["bad"][-1]["frames"] == 2
    assert [e["type"] for e in out["good"]] == ["silence"] * 3 + ["closed"]
    assert out["good"][-1]["errors"] == 0


def test_a_failing_vision_job_fails_its_frames_and_the_sessions_go_on(tiny):
    """A vision job that raises as a whole (a bug or a device error): each of its frames fails for its own session
    with the reason, and the next frames are watched."""
    engine = StreamEngine(*tiny)
    encode = engine.frame_features_batch
    calls = []

    def failing_once(batch, return_errors=False):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("vision device lost")
        return encode(batch, return_errors=return_errors)

    engine.frame_features_batch = failing_once
    sched = Scheduler(engine, limits=Limits(queue_size=8))
    out: dict[str, list[dict]] = {"a": [], "b": []}
    sessions = [sched.open(Open(StreamOptions(threshold=0.0), silence=True), out[k].append) for k in out]
    for s in sessions:
        for i, f in enumerate(frames(2)):
            sched.push_frame(s, i * 0.5, f)
        sched.close(s)
    run_until_closed(sched, out)
    for events in out.values():
        assert [e["type"] for e in events] == ["error", "silence", "closed"]
        assert "vision device lost" in events[0]["message"] and events[1]["t"] == 0.5


def test_stop_returns_promptly_with_no_thread_left_and_start_again_works(tiny):
    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=64))
    out: list[dict] = []
    s = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out.append)
    for i, f in enumerate(frames(40)):
        sched.push_frame(s, i * 0.5, f)
    sched.start()
    assert sorted(ours_alive()) == sorted(THREADS)
    assert wait_until(lambda: len(out) >= 2)
    began = time.monotonic()
    sched.stop()
    assert time.monotonic() - began < 5 and not ours_alive()
    assert s.gone and not sched.sessions and not sched._ahead and not sched._ready
    sched.start()  # a stopped scheduler can serve again
    try:
        again: list[dict] = []
        s2 = sched.open(Open(StreamOptions(threshold=0.0), silence=True), again.append)
        for i, f in enumerate(frames(3)):
            sched.push_frame(s2, i * 0.5, f)
        sched.close(s2)
        assert wait_until(lambda: again and again[-1]["type"] == "closed")
        assert [e["type"] for e in again] == ["silence"] * 3 + ["closed"]
    finally:
        sched.stop()
    assert not ours_alive()


def test_a_closed_session_is_freed_without_the_garbage_collector(tiny):
    """With the vision thread, a finished session leaves nothing behind either: no frame ahead, no job, no
    reference cycle (its engine session is freed by reference counting alone)."""
    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=8))
    out: list[dict] = []
    s = sched.open(Open(StreamOptions(threshold=1.0, max_reply_tokens=4)), out.append)
    for i, f in enumerate(frames(3)):
        sched.push_frame(s, i * 0.5, f)
    stream = weakref.ref(s.stream)
    gc.collect()
    gc.disable()
    try:
        sched.start()
        sched.close(s)
        del s
        assert wait_until(lambda: out and out[-1]["type"] == "closed")
        assert wait_until(lambda: stream() is None, 5), "the session outlived its close"
    finally:
        gc.enable()
        sched.stop()

"""livecue serve under hostile clients (1/2): header bombs, a bounded decode pool, context growth, clients that
vanish mid-reply. tests/serve/test_serve_hostile_net.py has the network side (half-open sockets, Origin/Host, tokens).

Servers listen on 127.0.0.1 only; counts and waits are bounded; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("websockets", reason="the [serve] extra is not installed")

from serve_helpers import frames, start_server, wait_until

from livecue.client import SyncLiveClient
from livecue.inference.engine import StreamEngine
from livecue.inference.memory import SinkWindow
from livecue.inference.options import StreamOptions
from livecue.serve.app import create_app
from livecue.serve.images import DecodePool, encode_image
from livecue.serve.imagesize import check_declared_size, declared_sizes
from livecue.serve.protocol import Limits, Open, ProtocolError
from livecue.serve.scheduler import QueryRefused, Scheduler

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOKEN = "s3cret-7f4a9b2c"


def png_header(w: int, h: int) -> bytes:
    """A tiny PNG that declares ``w`` x ``h`` pixels (no real picture data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def jpeg_sof(w: int, h: int) -> bytes:
    """A baseline JPEG frame header declaring ``w`` x ``h`` (3 components)."""
    return b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, h, w, 3) + bytes([1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1])


def webp(lossless: bool = False, shape=(48, 64)) -> bytes:
    """A real WebP (FFmpeg's libwebp encoder writes the RIFF container)."""
    from fractions import Fraction

    import av

    frame = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    codec = av.CodecContext.create("libwebp", "w")
    codec.width, codec.height, codec.time_base = shape[1], shape[0], Fraction(1, 25)
    codec.pix_fmt = "bgra" if lossless else "yuv420p"
    codec.options = {"lossless": "1"} if lossless else {}
    picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=codec.pix_fmt)
    return b"".join(bytes(p) for p in list(codec.encode(picture)) + list(codec.encode(None)))




# ---- a. image sizes from the header bytes ------------------------------------------------------------------------
def test_declared_sizes_of_every_accepted_format():
    frame = frames(1)[0]
    assert declared_sizes(encode_image(frame, "jpeg")) == [(64, 48)]
    assert declared_sizes(encode_image(frame, "png")) == [(64, 48)]
    assert declared_sizes(webp()) == [(64, 48)] and declared_sizes(webp(lossless=True)) == [(64, 48)]
    from livecue.serve.images import decode_image

    assert decode_image(webp(), 10_000).shape == (48, 64, 3)
    # a JPEG whose second frame header (after the first scan) declares a huge picture is refused by that one
    small = encode_image(frame, "jpeg")
    assert check_declared_size(small[:-2] + jpeg_sof(16000, 16000) + b"\xff\xd9", 10**9) == (64, 48)
    with pytest.raises(ProtocolError, match="16000x16000") as info:
        check_declared_size(small[:-2] + jpeg_sof(16000, 16000) + b"\xff\xd9", 1920 * 1080)
    assert info.value.code == "too_many_pixels"
    # bytes that look like a frame header inside an APP segment are skipped, as a decoder skips them
    app = b"\xff\xe1" + struct.pack(">H", 2 + 19) + jpeg_sof(16000, 16000)
    assert declared_sizes(small[:2] + app + small[2:]) == [(64, 48)]
    vp8x = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4) \
        + (15999).to_bytes(3, "little") + (15999).to_bytes(3, "little")
    assert declared_sizes(vp8x) == [(16000, 16000)]
    for data, words in [(b"GIF89a" + bytes(20), "GIF is not accepted"), (b"BM" + bytes(30), "unsupported"),
                        (png_header(0, 5), "empty 0x5"), (b"\x89PNG\r\n\x1a\n" + bytes(4), "IHDR"),
                        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(12), "VP8")]:
        with pytest.raises(ProtocolError, match=words) as info:
            check_declared_size(data, 10**6)
        assert info.value.code == "bad_image"


def test_header_bomb_costs_no_memory(tmp_path):
    """A 65-byte PNG declaring 16000 x 16000 (and JPEG/WebP ones) are refused from their header: peak RSS grows by
    well under 50 MB (FFmpeg allocated ~750 MB for the PNG before the limit was checked)."""
    bomb = png_header(16000, 16000)
    assert len(bomb) == 65
    script = textwrap.dedent(f"""
        import resource, struct, sys
        import numpy as np
        from livecue.serve.images import decode_image, encode_image
        from livecue.serve.protocol import ProtocolError
        small = encode_image(np.zeros((48, 64, 3), np.uint8), "png")
        decode_image(small, 10**6)                     # warm: FFmpeg and its codecs are loaded
        decode_image(encode_image(np.zeros((48, 64, 3), np.uint8)), 10**6)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        codes = []
        bombs = [{bomb!r}, b"\\xff\\xd8" + {jpeg_sof(16000, 16000)!r} + bytes(64) + b"\\xff\\xd9",
                 b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8L" + struct.pack("<I", 5) + b"\\x2f"
                 + (15999 | 15999 << 14).to_bytes(4, "little") + b"\\x00"]
        for data in bombs:
            try:
                decode_image(data, 1920 * 1080)
            except ProtocolError as e:
                codes.append((e.code, "16000x16000" in e.message))
        grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(codes, grew)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    codes, grew = out.stdout.strip().rsplit("] ", 1)
    assert codes + "]" == str([("too_many_pixels", True)] * 3)
    assert float(grew) < 50, f"decoding the header bombs grew peak RSS by {grew} MB"


def test_the_decode_pool_is_bounded():
    """However many connections decode at once, at most `workers` decodes run."""
    def slow(data: bytes, max_pixels: int) -> np.ndarray:
        time.sleep(0.02)
        return np.zeros((1, 1, 3), np.uint8)

    pool = DecodePool(2, decode=slow)

    async def many() -> list:
        return await asyncio.gather(*(pool.decode(b"x", 1) for _ in range(24)))

    assert len(asyncio.run(many())) == 24
    assert pool.peak <= 2 and pool.active == 0
    pool.close()
    with pytest.raises(ValueError, match="decode workers"):
        DecodePool(0)


# ---- b. per-session bounds ---------------------------------------------------------------------------------------
def test_memory_is_bounded_by_default(tiny, capsys):
    from livecue.commands.serve import build_parser, memory_from_args
    from livecue.inference.memory import Unbounded

    app = create_app(*tiny)
    assert isinstance(app.state.scheduler.engine.memory, SinkWindow)
    parse = build_parser().parse_args
    assert memory_from_args(parse([])) == SinkWindow(4096, 256)
    # the deprecated spelling is --memory sink:N (the same chunk), with one warning line
    assert memory_from_args(parse(["--max-context-tokens", "1000"])) == SinkWindow(1000, 125) \
        == memory_from_args(parse(["--memory", "sink:1000"]))
    assert capsys.readouterr().err.splitlines() == [
        "livecue serve: warning: --max-context-tokens is deprecated: use --memory sink:1000"]
    assert memory_from_args(parse(["--memory", "unbounded"])) == Unbounded()
    assert memory_from_args(parse(["--memory", "sink:512:64"])) == SinkWindow(512, 64)


def test_one_client_cannot_grow_its_context_or_pending_work(tiny):
    """Queries beyond the pending cap are refused; query text beyond the token bucket is refused; θ updates are
    coalesced; the cache stays within the budget (plus the step in progress) however much the client talks."""
    engine = StreamEngine(*tiny, memory=SinkWindow(300, chunk=60))
    limits = Limits(max_pending_queries=3, max_query_tokens=200, query_token_rate=1.0, max_reply_tokens=16,
                    queue_size=64)
    sched = Scheduler(engine, limits=limits)
    out: list[dict] = []
    with pytest.raises(ProtocolError, match=r"system_prompt is \d+ tokens; the limit is 2048") as info:
        sched.open(Open(StreamOptions(system_prompt="\U0001f642" * 100 + "x" * 1700)), out.append)  # < max chars
    assert info.value.code == "too_large" and not sched.sessions
    s = sched.open(Open(StreamOptions(threshold=1.0, max_reply_tokens=16)), out.append)
    for i in range(3):
        sched.control(s, "query", (f"question {i}?", 0.0, True))
    with pytest.raises(QueryRefused, match="3 queries waiting") as info:
        sched.control(s, "query", ("one too many?", 0.0, True))
    assert info.value.code == "too_many_queries"
    for theta in (0.1, 0.2, 0.3, 1.0):
        sched.control(s, "threshold", theta)
    assert len(s.controls) == 4  # three queries + the latest θ
    sched.step()
    assert s.pending_queries == 3 and s.stream.threshold == 1.0
    with pytest.raises(QueryRefused):
        sched.control(s, "query", ("still too many?", 0.0, True))
    for i, f in enumerate(frames(24)):
        sched.push_frame(s, 0.5 + i * 0.5, f)
        while s.frames or s.busy:
            sched.step()
            assert s.stream.context_length <= 300 + 3 * 40 + 16 + 20  # budget + the step in progress
        if i in (5, 6, 7):  # a long instruction (151 tokens) while the bucket refills at 1 token/s
            sched.control(s, "query", ("word " * 50, None, False))
        if i == 8:
            sched.control(s, "query", ("word " * 80, None, False))   # 241 tokens > max_query_tokens
    while sched.step():
        pass
    codes = [e["code"] for e in out if e["type"] == "error"]
    assert codes == ["rate_limited", "rate_limited", "too_large"], codes
    assert [e["type"] for e in out].count("answer") == 3 and s.stream.evicted_tokens > 0


def test_long_texts_are_not_cached(tiny):
    engine = StreamEngine(*tiny)
    engine.encode_text("x" * 2000)
    engine.ids_tensor(list(range(5, 1000)))
    assert "x" * 2000 not in engine._text_ids and len(engine._id_tensors) == 0


# ---- c. cancellation ---------------------------------------------------------------------------------------------
def test_a_client_that_goes_mid_reply_is_cancelled_within_one_round(tiny):
    """A 512-token reply of a session whose client has gone gets no further forward after the next round; the
    session beside it in the batch is not disturbed (same events and cache as alone)."""
    engine = StreamEngine(*tiny)
    forwards: dict[str, int] = {}
    execute = engine._execute

    def counting(steps):
        for step in steps:
            forwards[step.session.system_prompt] = forwards.get(step.session.system_prompt, 0) + 1
        return execute(steps)

    engine._execute = counting
    sched = Scheduler(engine, limits=Limits(max_reply_tokens=512, queue_size=8))
    talk_out: list[dict] = []
    quiet_out: list[dict] = []
    talk = sched.open(Open(StreamOptions(threshold=1.0, max_reply_tokens=512, system_prompt="talk")),
                      talk_out.append)
    quiet = sched.open(Open(StreamOptions(threshold=0.0, system_prompt="quiet")), quiet_out.append)
    video = frames(6)
    sched.push_frame(talk, 0.0, video[0])
    for i, f in enumerate(video):
        sched.push_frame(quiet, i * 0.5, f)
    for _ in range(4):
        sched.step()
    assert [k for k in sched._batch.keys if k[0] is talk] and 0 < forwards["talk"] < 10
    sched.close(talk, graceful=False)  # the client disconnected
    before = forwards["talk"]
    sched.step()
    assert not [k for k in sched._batch.keys if k[0] is talk] and forwards["talk"] == before
    while sched.step():
        pass
    assert forwards["talk"] == before and "reply" not in [e["type"] for e in talk_out]
    alone = StreamEngine(*tiny).session("quiet", threshold=0.0)
    ref = [e for i, f in enumerate(video) for e in alone.push_frame(f, i * 0.5)]
    assert [(e["type"], e["frame"]) for e in quiet_out] == [("silence", e.frame) for e in ref]
    assert quiet.stream.context_length == alone.context_length


def test_graceful_close_answers_in_the_batch_and_a_disconnect_cancels_it(tiny):
    engine = StreamEngine(*tiny)
    sched = Scheduler(engine, limits=Limits(max_reply_tokens=512, queue_size=8))
    out: list[dict] = []
    other: list[dict] = []
    s = sched.open(Open(StreamOptions(threshold=0.0, max_reply_tokens=512)), out.append)
    o = sched.open(Open(StreamOptions(threshold=0.0)), other.append)
    for i in range(3):
        sched.control(s, "query", (f"question {i}?", 10.0, True))
    sched.close(s, graceful=True)
    sched.step()
    assert (s, None) in sched._batch.keys  # answering in the batch ...
    sched.push_frame(o, 0.0, frames(1)[0])
    sched.step()
    assert [e["type"] for e in other] == ["silence"]  # ... while the other session goes on
    sched.close(s, graceful=False)
    sched.step()
    assert (s, None) not in sched._batch.keys and not sched._batch.keys
    assert "closed" not in [e["type"] for e in out]


@pytest.mark.parametrize("graceful", [False, True])
def test_a_dropped_session_is_freed_without_the_garbage_collector(tiny, graceful):
    """Once a session is dropped (disconnect) or closed, nothing keeps its engine session and KV cache alive: no
    reference cycle waits for the collector's next full pass (with hundreds of sessions a server's RSS grew by a
    quarter in 10 minutes that way)."""
    import gc
    import weakref

    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=8))
    s = sched.open(Open(StreamOptions(threshold=1.0, max_reply_tokens=8)), lambda ev: None)
    for i, f in enumerate(frames(3)):
        sched.push_frame(s, i * 0.5, f)
    sched.control(s, "query", ("what is it?", 0.5, True))
    for _ in range(3):
        sched.step()
    stream, cache = weakref.ref(s.stream), weakref.ref(s.stream.cache)
    gc.disable()
    try:
        sched.close(s, graceful=graceful)
        del s
        for _ in range(200):
            if not sched.step():
                break
        assert not sched.sessions and stream() is None and cache() is None
    finally:
        gc.enable()


def _serve(app) -> tuple[SimpleNamespace, Callable[[], None]]:
    url, stop = start_server(app)
    return SimpleNamespace(url=url, app=app, scheduler=app.state.scheduler), stop


def test_context_growth_client_that_disconnects_is_cancelled_and_memory_stays_bounded(tiny):
    """A client floods questions (beyond the pending cap), forces a 512-token answer and vanishes mid-answer: its
    work stops (a second client's 24-token reply, which takes 24+ rounds, finishes while the gone session's context
    does not grow by more than the round in progress), and RSS does not grow over repeats."""
    import psutil

    app = create_app(*tiny, limits=Limits(max_pixels=320 * 240))
    server, stop = _serve(app)
    proc = psutil.Process()
    rss: list[float] = []
    try:
        for round_ in range(4):
            client = SyncLiveClient(server.url).connect()
            sid = client.open(threshold=1.0, max_reply_tokens=512)["session"]
            for i in range(12):  # flood: questions and instructions, more than may wait
                client.ask("Describe it all in detail, please.", at=0.0, answer=bool(i % 2))
            client.send_frame(frames(1, round_)[0], 0.0)
            codes = set()
            while (ev := client.recv(30))["type"] != "reply_delta":
                codes.add(ev.get("code"))
            assert "too_many_queries" in codes
            session = server.scheduler.sessions[sid]
            client.ws.socket.close()  # gone mid-answer (of up to 512 tokens, 5 more waiting), no close handshake
            assert wait_until(lambda sid=sid: sid not in server.scheduler.sessions)
            gone_at = session.stream.context_length
            with SyncLiveClient(server.url) as other:  # many rounds of work for the scheduler after the removal
                other.open(threshold=1.0, max_reply_tokens=24)
                other.send_frame(frames(1, 9)[0], 0.0)
                while (ev := other.recv(60))["type"] != "reply":
                    pass
                assert len(ev["token_ids"]) >= 8
            assert session.stream.context_length - gone_at <= 2, "the gone session's work went on"
            rss.append(proc.memory_info().rss / 2**20)
    finally:
        stop()
    assert rss[-1] - rss[0] < 100, f"RSS grew from {rss[0]:.0f} to {rss[-1]:.0f} MB"

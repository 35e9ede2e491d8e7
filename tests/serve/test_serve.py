"""livecue serve: the WebSocket protocol end to end with the tiny model (in-process uvicorn on a loopback port).

A full session, 8 concurrent clients, abrupt disconnects, malformed/oversized/out-of-order messages (each answered
by an error event while the session lives on), tokens, the fair scheduler and its drop-oldest queues, token
streaming, and `livecue watch --server`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("websockets", reason="the [serve] extra is not installed")

from serve_helpers import frames, start_server, wait_until

from livecue import cli
from livecue.client import LiveClient, ServerError, SyncLiveClient, http_url, ws_url
from livecue.inference.engine import StreamEngine
from livecue.inference.options import StreamOptions
from livecue.serve.app import create_app
from livecue.serve.images import encode_image
from livecue.serve.protocol import Limits, Open, ProtocolError, pack_frame, parse_text
from livecue.serve.scheduler import Scheduler
from livecue.serve.streaming import TextDeltas

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIMITS = Limits(max_message_bytes=200_000, max_frame_bytes=100_000, max_pixels=320 * 240, queue_size=4)



def jpeg(seed: int = 0, shape=(48, 64)) -> bytes:
    return encode_image(frames(1, seed, shape)[0])


@pytest.fixture(scope="module")
def server(tiny):
    """A real uvicorn server on a free loopback port, serving the tiny model."""
    model, tok = tiny
    app = create_app(model, tok, max_sessions=12, limits=LIMITS)
    url, stop = start_server(app, 4 * LIMITS.max_message_bytes)
    yield SimpleNamespace(url=url, app=app, scheduler=app.state.scheduler)
    stop()


def visible(text: str) -> str:
    """What a reply's ``reply_delta`` events add up to: its final text, less a trailing incomplete UTF-8 character
    (U+FFFD: a byte-level BPE reply can stop mid-character, e.g. at its token cap), which never resolves."""
    while text.endswith("\ufffd"):
        text = text[:-1].rstrip()
    return text


def drain(client: SyncLiveClient, timeout: float = 30.0) -> list[dict]:
    """Every event until the server closes the session."""
    return list(client.events(timeout=timeout))



# ---- pure parts ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, code, words", [
    ("{bad", "bad_message", "not valid JSON"),
    ("[1, 2]", "bad_message", "JSON object"),
    ('{"type": "dance"}', "bad_message", "unknown message type 'dance'"),
    ('{"type": "open", "treshold": 0.5}', "bad_message", "unknown field(s) 'treshold'"),
    ('{"type": "open", "threshold": 1.5}', "bad_message", "threshold must be a finite number in [0, 1], got '1.5'"),
    ('{"type": "open", "fps": 0}', "bad_message", "fps must be a finite number in (0, 240], got '0'"),
    ('{"type": "open", "fps": 31}', "bad_message", "fps must be at most 30 on this server"),
    ('{"type": "open", "max_reply_tokens": 100000}', "bad_message", "max_reply_tokens must be an integer in [1, 4096]"),
    ('{"type": "open", "max_reply_tokens": 513}', "bad_message", "max_reply_tokens must be at most 512 on this"),
    ('{"type": "open", "memory": "unbounded"}', "bad_message", "unknown field(s) 'memory'"),
    ('{"type": "query", "text": "  "}', "bad_message", "non-empty string"),
    ('{"type": "query", "text": "hi", "at": -1}', "bad_message", "query at must be a finite number"),
    ('{"type": "frame", "t": 0, "data": "***"}', "bad_message", "not valid base64"),
    ('{"type": "frame", "t": NaN, "data": "AAAA"}', "bad_message", "frame t must be a finite number"),
    ('{"type": "update"}', "bad_message", "threshold must be a finite number in [0, 1], got 'None'"),
    ('{"type": "update", "threshold": "0.5"}', "bad_message", "threshold must be a finite number in [0, 1]"),
    ('{"type": "open", "system_prompt": 7}', "bad_message", "system_prompt must be a system prompt (a string)"),
])
def test_parse_errors_name_the_problem(text, code, words):
    with pytest.raises(ProtocolError) as info:
        parse_text(text, LIMITS)
    assert info.value.code == code and words in info.value.message


def test_parse_accepts_the_documented_messages():
    assert parse_text('{"type": "open"}', LIMITS) == Open()
    msg = parse_text('{"type": "open", "threshold": 0.5, "system_prompt": "S", "fps": 1, "max_reply_tokens": 8, '
                     '"temperature": 0.5, "top_p": 0.9, "repetition_penalty": 1.1, "silence": false}', LIMITS)
    assert msg == Open(StreamOptions(threshold=0.5, system_prompt="S", fps=1.0, max_reply_tokens=8, temperature=0.5,
                                     top_p=0.9, repetition_penalty=1.1), silence=False)
    assert isinstance(msg.options.fps, float) and isinstance(msg.options.max_reply_tokens, int)
    import base64

    data = jpeg()
    frame = parse_text(json.dumps({"type": "frame", "t": 1.5, "data": "data:image/jpeg;base64,"
                                   + base64.b64encode(data).decode()}), LIMITS)
    assert frame.t == 1.5 and frame.data == data
    assert parse_text('{"type": "query", "text": " hi ", "at": 2}', LIMITS).text == "hi"
    assert ws_url("http://h:1") == "ws://h:1/ws" and ws_url("wss://h/x/ws") == "wss://h/x/ws"
    assert http_url("ws://h:1/ws") == "http://h:1"


def test_token_stream_session_equals_the_engine_session(tiny):
    """The streaming session's events are the engine's, token for token; the deltas add up to the final text."""
    engine = StreamEngine(*tiny)
    video = frames(6, seed=3)
    plain = engine.session("S", threshold=1.0, max_reply_tokens=6)
    seen: list[tuple[str, float, list[int]]] = []
    streamed = engine.session("S", threshold=1.0, max_reply_tokens=6,
                              on_token=lambda kind, t, ids, q: seen.append((kind, t, list(ids))))
    for s in (plain, streamed):
        s.add_query("what is it?", at=0.7)
    a = [e for i, f in enumerate(video) for e in plain.push_frame(f, i * 0.5)]
    b = [e for i, f in enumerate(video) for e in streamed.push_frame(f, i * 0.5)]
    assert [e.to_dict() | {"latency": 0} for e in a] == [e.to_dict() | {"latency": 0} for e in b]
    assert {e.type for e in b} == {"reply", "answer"}
    for ev in b:  # every reply/answer was announced token by token
        steps = [ids for kind, t, ids in seen if kind == ev.type and t == ev.t]
        assert steps[-1] == ev.token_ids and [len(x) for x in steps] == list(range(1, len(ev.token_ids) + 1))
        deltas = TextDeltas(lambda ids: engine.tokenizer.decode(ids, skip_special_tokens=True))
        text = "".join(deltas.push(ids) for ids in steps)
        assert text == visible(ev.text)


def test_the_servers_stream_options_are_defaults_a_client_overrides(tiny):
    """``livecue serve --threshold ... --temperature ...`` set every session's defaults; a client's ``open`` replaces
    them option by option (an explicit 0 included); the memory policy stays the server's."""
    from livecue.inference.memory import SinkWindow
    from livecue.inference.options import SamplingConfig

    server = StreamOptions(threshold=0.3, temperature=0.7, max_reply_tokens=9, fps=4.0, memory="sink:512")
    engine = StreamEngine(*tiny, server)
    sched = Scheduler(engine, limits=Limits(queue_size=4))
    plain = sched.open(Open(), lambda ev: None)
    assert (plain.stream.threshold, plain.stream.max_reply_tokens, plain.fps) == (0.3, 9, 4.0)
    assert plain.stream.sampling == SamplingConfig(temperature=0.7)
    mine = sched.open(parse_text('{"type": "open", "threshold": 0.9, "temperature": 0, "top_p": 0.5, "fps": 2}',
                                 Limits()), lambda ev: None)
    assert (mine.stream.threshold, mine.stream.max_reply_tokens, mine.fps) == (0.9, 9, 2.0)
    assert mine.stream.sampling == SamplingConfig(temperature=0.0, top_p=0.5)
    assert plain.stream.memory == mine.stream.memory == SinkWindow(512, 64)
    model_cap = Scheduler(StreamEngine(*tiny), limits=Limits(max_reply_tokens=6)).open(Open(), lambda ev: None)
    assert model_cap.stream.max_reply_tokens == min(6, tiny[0].cfg.stream.max_reply_tokens)


def test_scheduler_is_round_robin_and_drops_the_oldest(tiny):
    engine = StreamEngine(*tiny)
    sched = Scheduler(engine, limits=Limits(queue_size=3), max_batch=8)
    out: dict[str, list[dict]] = {"a": [], "b": []}
    a = sched.open(Open(StreamOptions(threshold=0.0)), out["a"].append)  # θ = 0: always silent, one event per frame
    b = sched.open(Open(StreamOptions(threshold=0.0)), out["b"].append)
    video = frames(8)
    for i in range(8):  # a busy stream: 8 frames into a queue of 3
        sched.push_frame(a, i * 0.5, video[i])
    sched.push_frame(b, 0.0, video[0])
    sched.push_frame(b, 0.5, video[1])
    assert [t for t, _ in a.frames] == [2.5, 3.0, 3.5]  # the oldest went first
    assert sched.step() and [e["t"] for e in out["a"]] == [2.0, 2.5] and [e["t"] for e in out["b"]] == [0.0]
    assert out["a"][0] == {"type": "dropped", "t": 2.0, "count": 5, "reason": out["a"][0]["reason"]}
    sched.step()
    assert [e["t"] for e in out["b"]] == [0.0, 0.5]  # b was served every round despite a's backlog
    sched.step()
    assert not b.frames and not a.frames
    sched.close(a, graceful=True)
    sched.close(b, graceful=False)  # abrupt: gone at once
    assert b.id not in sched.sessions and sched.step()
    assert out["a"][-1]["type"] == "closed" and out["a"][-1]["frames"] == 3 and out["a"][-1]["dropped"] == 5
    assert not sched.sessions and not sched.step()


def test_scheduler_batches_sessions_and_isolates_a_bad_frame(tiny):
    """Silent sessions keep taking frames while a talking one decodes (continuous batching: one forward per round
    for all); a frame that cannot be encoded fails for its own session only, which then goes on."""
    engine = StreamEngine(*tiny)
    widths = []
    forward_streams = engine.model.forward_streams
    engine.model.forward_streams = lambda *a, **kw: widths.append(len(a[3])) or forward_streams(*a, **kw)
    sched = Scheduler(engine, limits=Limits(queue_size=8, max_reply_tokens=6))
    out: dict[str, list[dict]] = {"talk": [], "quiet": [], "bad": []}
    talk = sched.open(Open(StreamOptions(threshold=1.0), silence=True), out["talk"].append)  # θ = 1: always replies
    quiet = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out["quiet"].append)
    bad = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out["bad"].append)
    video = frames(4)
    for i in range(4):
        sched.push_frame(talk, i * 0.5, video[i])
        sched.push_frame(quiet, i * 0.5, video[i])
        sched.push_frame(bad, i * 0.5, video[i] if i else video[i][..., :2])  # frame 0: 2 colour channels
    rounds = 0
    while sched.step():
        rounds += 1
        if rounds == 3:  # the talker is still on its first frame; the quiet stream is done with 3 frames
            assert "reply" not in [e["type"] for e in out["talk"]] and len(out["quiet"]) == 3
    assert [e["type"] for e in out["quiet"]] == ["silence"] * 4
    assert [e["type"] for e in out["talk"] if e["type"] != "reply_delta"] == ["reply"] * 4
    assert out["bad"][0]["type"] == "error" and out["bad"][0]["code"] == "frame_failed"
    assert "3 colour channels" in out["bad"][0]["message"]
    assert [e["type"] for e in out["bad"][1:]] == ["silence"] * 3
    assert max(widths) == 3


def test_scheduler_survives_a_failing_forward(tiny):
    engine = StreamEngine(*tiny)
    sched = Scheduler(engine, limits=Limits(queue_size=8))
    out: list[dict] = []
    a = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out.append)
    b = sched.open(Open(StreamOptions(threshold=0.0), silence=True), out.append)
    execute = engine._execute
    engine._execute = lambda steps: (_ for _ in ()).throw(RuntimeError("device lost"))
    video = frames(2)
    for s in (a, b):
        sched.push_frame(s, 0.0, video[0])
    assert sched.step()
    assert [(e["type"], e["code"]) for e in out] == [("error", "frame_failed")] * 2
    assert "device lost" in out[0]["message"]
    assert not a.busy and not b.busy
    engine._execute = execute
    for s in (a, b):
        sched.push_frame(s, 0.5, video[1])
    while sched.step():
        pass
    assert [e["type"] for e in out[2:]] == ["silence", "silence"]


def test_bounded_memory_and_instructions(tiny):
    """A server memory policy bounds every stream's cache; a query with answer=false is read, not answered."""
    from livecue.inference.memory import SinkWindow

    sched = Scheduler(StreamEngine(*tiny, memory=SinkWindow(120, chunk=30)), limits=Limits(queue_size=64))
    out: list[dict] = []
    s = sched.open(parse_text('{"type": "open", "threshold": 0}', LIMITS), out.append)
    query = parse_text('{"type": "query", "text": "Narrate what happens.", "at": 0.2, "answer": false}', LIMITS)
    sched.control(s, "query", (query.text, query.at, query.answer))
    for i, f in enumerate(frames(30)):
        sched.push_frame(s, i * 0.5, f)
    while sched.step():
        pass
    assert [e["type"] for e in out] == ["silence"] * 30
    info = sched.snapshot()[0]
    assert info["context_tokens"] <= 120 and info["evicted_tokens"] > 0 and info["frames"] == 30


def test_frames_faster_than_the_session_fps_are_skipped(tiny):
    sched = Scheduler(StreamEngine(*tiny), limits=Limits(queue_size=8))
    events: list[dict] = []
    s = sched.open(Open(StreamOptions(threshold=0.0, fps=2.0)), events.append)
    kept = [t for t in (0.0, 0.1, 0.2, 0.5, 0.6, 1.0) if sched.admit(s, t)]
    assert kept == [0.0, 0.5, 1.0]


# ---- the server --------------------------------------------------------------------------------------------------
def test_full_session(server):
    with SyncLiveClient(server.url) as client:
        ready = client.open(threshold=0.9, max_reply_tokens=6, system_prompt="You narrate.")
        assert ready["type"] == "ready" and ready["session"] and ready["fps"] == 2.0 and ready["threshold"] == 0.9
        assert ready["limits"]["queue_size"] == 4 and ready["system_prompt"] == "You narrate."
        assert (ready["temperature"], ready["top_p"], ready["repetition_penalty"]) == (0.0, 1.0, 1.0)  # greedy
        assert server.app.state.scheduler.sessions
        client.ask("What is happening?", at=0.7)
        got: list[dict] = []
        for i, f in enumerate(frames(4)):
            client.send_frame(f, i * 0.5)
            while True:  # one frame at a time: nothing is dropped
                ev = client.recv(timeout=30)
                got.append(ev)
                if ev["type"] in ("silence", "reply") and ev["t"] == i * 0.5:
                    break
        client.set_threshold(0.0)
        client.send_frame(jpeg(9), 2.0)  # raw JPEG bytes work too
        client.close()
        got += drain(client)
    kinds = [e["type"] for e in got]
    assert kinds[-1] == "closed" and "updated" in kinds and "answer" in kinds
    answer = next(e for e in got if e["type"] == "answer")
    assert answer["query"] == "What is happening?" and answer["t"] == 0.7 and answer["query_t"] == 0.7
    replies = [e for e in got if e["type"] == "reply"]
    assert [r["t"] for r in replies] == [0.0, 0.5, 1.0, 1.5] and all(len(r["token_ids"]) <= 6 for r in replies)
    for r in replies + [answer]:  # streamed token by token before the final event
        deltas = [e for e in got if e["type"] == "reply_delta" and e["t"] == r["t"] and e["kind"] == r["type"]]
        assert deltas and got.index(deltas[-1]) < got.index(r)
        assert "".join(d["text"] for d in deltas) == visible(r["text"])
    assert [e["t"] for e in got if e["type"] == "silence"] == [2.0]  # after θ = 0
    closed = got[-1]
    assert closed["frames"] == 5 and closed["replies"] == 4 and closed["answers"] == 1 and closed["dropped"] == 0
    assert wait_until(lambda: not server.scheduler.sessions)


def test_http_endpoints(server):
    import httpx

    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    version = httpx.get(server.url + "/version").json()
    assert version["protocol"] == 1 and version["livecue"]
    model = httpx.get(server.url + "/model").json()
    assert model["frame_num_tokens"] == 10 and model["stream"]["fps"] == 2.0 and model["parameters"] > 0
    assert model["memory"] == {"policy": "SinkWindow", "max_tokens": 4096, "chunk": 256}  # bounded by default
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "getUserMedia" in httpx.get(server.url + "/static/app.js").text
    with SyncLiveClient(server.url) as client:
        sid = client.open()["session"]
        listed = client.get("/sessions")
        assert listed["count"] >= 1 and sid in [s["id"] for s in listed["sessions"]]


def test_eight_concurrent_clients_complete_sessions(server):
    n, per_client = 8, 6
    peak: list[int] = []

    async def one(k: int) -> dict:
        async with LiveClient(server.url) as client:
            ready = await client.open(threshold=0.0 if k % 2 else 1.0, max_reply_tokens=4)
            await client.ask(f"question {k}", at=1.2)  # answered before the frame at 1.5
            results: list[dict] = []
            for i, f in enumerate(frames(per_client, seed=k)):
                await client.send_frame(f, i * 0.5)
                while (ev := await client.recv(timeout=60))["type"] not in ("silence", "reply") or ev["t"] < i * 0.5:
                    results.append(ev)
                results.append(ev)
                peak.append(len(server.scheduler.sessions))
            await client.close()
            results += [ev async for ev in client]
            return {"ready": ready, "events": results}

    async def everyone() -> list[dict]:
        return await asyncio.gather(*(one(k) for k in range(n)))

    outcomes = asyncio.run(everyone())
    assert max(peak) == n  # all eight were open at once
    sessions = {o["ready"]["session"] for o in outcomes}
    assert len(sessions) == n
    for k, o in enumerate(outcomes):
        closed = o["events"][-1]
        assert closed["type"] == "closed" and closed["frames"] == per_client and closed["errors"] == 0
        assert closed["answers"] == 1 and closed["replies"] == (0 if k % 2 else per_client)
        assert not [e for e in o["events"] if e["type"] == "error"]
    assert wait_until(lambda: not server.scheduler.sessions)


def test_abrupt_disconnect_frees_the_session(server):
    client = SyncLiveClient(server.url).connect()
    sid = client.open(threshold=0.0)["session"]
    session = server.scheduler.sessions[sid]
    stream = weakref.ref(session.stream)
    for i, f in enumerate(frames(6)):
        client.send_frame(f, i * 0.5)
    client.ws.socket.close()  # no close handshake: the TCP connection just goes away
    assert wait_until(lambda: sid not in server.scheduler.sessions), "the session outlived its client"
    assert session.gone and not session.frames
    del session
    assert wait_until(lambda: gc.collect() is not None and stream() is None), "the engine session was not freed"


def test_bad_messages_get_error_events_and_the_session_survives(server):
    with SyncLiveClient(server.url) as client:
        client.send_raw(pack_frame(0.0, jpeg()))                      # before open
        assert client.recv(10)["code"] == "not_open"
        client.send_raw('{"type": "query", "text": "hi"}')
        assert client.recv(10)["code"] == "not_open"
        client.open(threshold=0.0)
        bad = [
            ("{nope", "bad_message"),
            ('{"type": "open"}', "already_open"),
            ('{"type": "frame", "t": 1}', "bad_message"),
            (b"\x00\x01", "bad_message"),                               # binary shorter than its header
            (pack_frame(0.5, b"GIF89a-not-supported"), "bad_image"),
            (pack_frame(1.0, b"\xff\xd8\xff\xe0 broken jpeg"), "bad_image"),
            (pack_frame(1.5, jpeg(1, (300, 400))), "too_many_pixels"),   # 120,000 px > 76,800
            (pack_frame(2.0, b"\xff\xd8\xff" + bytes(150_000)), "too_large"),  # image bytes over the frame limit
            ("x" * 250_000, "too_large"),                                # any message over the message limit
            ('{"type": "update", "threshold": "high"}', "bad_message"),
            ('{"type": "query", "text": "' + "q" * 3000 + '"}', "too_large"),
        ]
        for msg, code in bad:
            client.send_raw(msg)
            ev = client.recv(10)
            assert ev["type"] == "error" and ev["code"] == code, (msg[:40], ev)
            assert ev["message"]
        client.send_frame(jpeg(2), 3.0)
        assert client.recv(30)["type"] == "silence"
        client.send_frame(jpeg(3), 1.0)                                 # out of order
        ev = client.recv(10)
        assert ev["code"] == "out_of_order" and ev["t"] == 1.0 and "must not decrease" in ev["message"]
        client.send_frame(jpeg(4), 3.5)                                 # the session lives on
        assert client.recv(30) | {"p_silence": 0} == {"type": "silence", "t": 3.5, "p_silence": 0, "frame": 1}
        client.close()
        closed = drain(client)[-1]
    assert closed["type"] == "closed" and closed["frames"] == 2 and closed["errors"] == len(bad) + 1


def test_rate_limit_token_and_capacity(tiny):
    from starlette.testclient import TestClient

    model, tok = tiny
    app = create_app(model, tok, max_sessions=1, token="s3cret", limits=Limits(max_rate=2, max_burst=5))
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200                  # public
        assert http.get("/sessions").status_code == 401
        assert http.get("/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/sessions?token=s3cret").json()["count"] == 0
        for url in ("/ws", "/ws?token=wrong"):
            with http.websocket_connect(url) as ws:
                ev = ws.receive_json()
                assert ev["type"] == "error" and ev["code"] == "unauthorized" and "token" in ev["message"]
                assert ws.receive_json()["type"] == "closed"
        with http.websocket_connect("/ws", headers={"Authorization": "Bearer s3cret"}) as ws:
            ws.send_text('{"type": "open"}')
            assert ws.receive_json()["type"] == "ready"
            with http.websocket_connect("/ws?token=s3cret") as second:  # max_sessions = 1
                second.send_text('{"type": "open"}')
                assert second.receive_json()["code"] == "busy"
        with http.websocket_connect("/ws?token=s3cret") as ws:     # 2 messages/s, burst 5
            for i in range(12):
                ws.send_text(json.dumps({"type": "ping", "id": i}))
            got = [ws.receive_json() for _ in range(6)]
            assert [e["id"] for e in got[:5]] == [0, 1, 2, 3, 4]
            assert got[5]["code"] == "rate_limited" and "2 per second" in got[5]["message"]
            time.sleep(0.6)
            ws.send_text('{"type": "ping", "id": "again"}')
            assert ws.receive_json()["id"] == "again"                  # the connection survived


def test_serve_refuses_a_public_address_without_token(capsys):
    from livecue.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")
    assert cli.main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "refusing to listen on '0.0.0.0' without a token" in capsys.readouterr().err


def test_open_errors_reach_the_client(server):
    with SyncLiveClient(server.url) as client:
        with pytest.raises(ServerError, match=r"fps must be a finite number in \(0, 240\], got '1000'"):
            client.open(fps=1000)
        assert client.open()["type"] == "ready"                        # the connection survived


def test_watch_server_feeds_a_source(server, tiny, tmp_path, capsys, monkeypatch):
    from livecue.commands import watch_remote, world_notice

    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames(5, seed=7)):
        (folder / f"{i:03d}.png").write_bytes(encode_image(f, "png"))
    out = tmp_path / "events.jsonl"
    notices = []  # the world-only notice is decided by the server's model name (the default model's: shown)
    monkeypatch.setattr(watch_remote, "notify_world_only",
                        lambda *a: notices.append(a) or world_notice.notify_world_only(*a))
    rc = cli.main(["watch", str(folder), "--server", server.url, "--threshold", "0", "--query", "what now?",
                   "--at", "1.0", "--jsonl", str(out)])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, text
    assert notices == [("livecue watch", tiny[0].cfg.name, str(folder))]  # the name the server reports
    assert "knows only the built-in world" not in captured.err
    assert world_notice.needs_world_notice(world_notice.DEFAULT_MODEL_NAME, str(folder))
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["t"] for e in events if e["type"] == "silence"] == [0.0, 0.5, 1.5, 2.0]
    assert [e["type"] for e in events].count("answer") == 1 and events[-1]["type"] == "closed"
    assert "Q: what now?" in text and "5 frames sent, 5 watched" in text and "0 dropped" in text

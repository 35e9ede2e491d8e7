"""GET /metrics: Prometheus text of one server (sessions, frames, latencies, drops, queues, KV tokens, errors), checked
against what real clients streamed to a tiny-model server on a loopback port."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("prometheus_client", reason="the [serve] extra is not installed")

from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import frames, start_server, wait_until

from livecue.client import SyncLiveClient
from livecue.serve.app import create_app
from livecue.serve.protocol import Limits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIMITS = Limits(max_message_bytes=200_000, max_frame_bytes=100_000, max_pixels=320 * 240, queue_size=4)


@pytest.fixture(scope="module")
def server(tiny):
    model, tok = tiny
    app = create_app(model, tok, max_sessions=4, limits=LIMITS)
    url, stop = start_server(app, 4 * LIMITS.max_message_bytes)
    yield SimpleNamespace(url=url, app=app, scheduler=app.state.scheduler)
    stop()


def scrape(url: str, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """``/metrics`` parsed by the Prometheus parser: {(sample name, sorted labels): value}."""
    import httpx

    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_two_clients_streamed(server):
    """Client a gets replies (θ 0.9) and asks a question; client b is silent (θ 0) without silence events and asks
    one too. Counters and histograms equal what they streamed; gauges follow the sessions."""
    before = scrape(server.url)
    assert value(before, "livecue_sessions") == 0 and value(before, "livecue_frames_total") == 0
    assert value(before, "livecue_frame_latency_seconds_count") == 0
    got: dict[str, list[dict]] = {"a": [], "b": []}
    with SyncLiveClient(server.url) as a, SyncLiveClient(server.url) as b:
        a.open(threshold=0.9, max_reply_tokens=4)
        b.open(threshold=0.0, silence=False)
        open_now = scrape(server.url)
        assert value(open_now, "livecue_sessions") == 2 and value(open_now, "livecue_connections") == 2
        a.ask("What is happening?", at=0.7)
        b.ask("Anything?", at=0.2)
        for i, f in enumerate(frames(3, seed=1)):  # b: queued at once (3 < queue_size: nothing is dropped)
            b.send_frame(f, i * 0.5)
        for i, f in enumerate(frames(4)):  # a: one frame at a time
            a.send_frame(f, i * 0.5)
            while True:
                ev = a.recv(timeout=30)
                got["a"].append(ev)
                if ev["type"] in ("silence", "reply") and ev["t"] == i * 0.5:
                    break
        assert value(scrape(server.url), "livecue_kv_tokens") > 0  # a's context at least
        for name, client in (("a", a), ("b", b)):
            client.close()
            got[name] += list(client.events(timeout=30))
    assert wait_until(lambda: not server.scheduler.sessions and not server.app.state.connections)
    closed = {name: evs[-1] for name, evs in got.items()}
    assert closed["a"]["type"] == closed["b"]["type"] == "closed"
    assert closed["a"]["frames"] == 4 and closed["b"]["frames"] == 3
    assert not any(e["type"] == "silence" for e in got["b"])  # measured, never sent to a client that asked for none
    replies = sum(e["type"] == "reply" for evs in got.values() for e in evs)
    answers = sum(e["type"] == "answer" for evs in got.values() for e in evs)
    assert answers == 2

    after = scrape(server.url)
    assert value(after, "livecue_frames_total") == 7
    assert value(after, "livecue_frame_latency_seconds_count") == 7  # every processed frame, silent ones included
    assert 0 < value(after, "livecue_frame_latency_seconds_sum") < 7 * 30
    assert value(after, "livecue_frame_latency_seconds_bucket", le="+Inf") == 7
    assert value(after, "livecue_replies_total") == replies and value(after, "livecue_answers_total") == 2
    assert value(after, "livecue_reply_latency_seconds_count", kind="reply") == replies
    assert value(after, "livecue_reply_latency_seconds_count", kind="answer") == 2
    assert value(after, "livecue_dropped_frames_total") == 0
    for gauge in ("livecue_sessions", "livecue_connections", "livecue_queued_frames", "livecue_kv_tokens"):
        assert value(after, gauge) == 0, gauge
    assert value(after, "livecue_max_sessions") == 4


def test_dropped_frames_and_errors_are_counted(server):
    """A client flooding its queue: the counter equals the drops its ``dropped`` events reported; a bad message is
    counted by its error code."""
    dropped_before = value(scrape(server.url), "livecue_dropped_frames_total")
    with SyncLiveClient(server.url) as client:
        client.open(threshold=0.0)
        video = frames(4, seed=2)
        for i in range(24):  # twice the session fps (skipped), and faster than the model (the queue of 4 overflows)
            client.send_frame(video[i % 4], i * 0.25)
        client.send_frame(video[0], 1.0)  # back in time: an `out_of_order` error
        client.close()
        events = list(client.events(timeout=60))
    reported = sum(e["count"] for e in events if e["type"] == "dropped")
    assert reported > 0 and events[-1]["type"] == "closed" and events[-1]["dropped"] == reported
    assert any(e["type"] == "error" and e["code"] == "out_of_order" for e in events)
    assert wait_until(lambda: not server.scheduler.sessions)
    after = scrape(server.url)
    assert value(after, "livecue_dropped_frames_total") - dropped_before == reported
    assert value(after, "livecue_errors_total", code="out_of_order") >= 1


def test_metrics_need_the_token_and_apps_do_not_share_values(tiny, server):
    """With a token, /metrics needs it (401 without); a second app in the same process has its own registry."""
    from starlette.testclient import TestClient

    model, tok = tiny
    app = create_app(model, tok, max_sessions=1, token="s3cret", replica="r1")
    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with http.websocket_connect("/ws") as ws:  # refused: counted by its code
            assert ws.receive_json()["code"] == "unauthorized"
        r = http.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(r.text) for s in family.samples}
    # every sample of a replica's app carries its replica label
    assert all(dict(labels).get("replica") == "r1" for _, labels in samples)
    assert value(samples, "livecue_frames_total", replica="r1") == 0
    assert value(samples, "livecue_frame_latency_seconds_count", replica="r1") == 0
    assert value(samples, "livecue_errors_total", replica="r1", code="unauthorized") == 1
    assert value(samples, "livecue_max_sessions", replica="r1") == 1
    # the other server's values are its own (it has streamed frames in the tests before, or not: never r1's zero)
    mine = scrape(server.url)
    assert ("livecue_errors_total", (("code", "unauthorized"),)) not in mine
    assert value(mine, "livecue_max_sessions") == 4


def test_a_frame_latency_is_matched_by_its_stream_time():
    """An answer between two frames, or a frame dropped from the queue, observes nothing; the next frame's event
    observes its own arrival and forgets the dropped ones."""
    import asyncio

    from livecue.serve.connection import Connection
    from livecue.serve.metrics import ServeMetrics

    class FakeScheduler:
        max_sessions = 1

        def snapshot(self):
            return []

    async def run() -> tuple:
        metrics = ServeMetrics(FakeScheduler())
        c = Connection(ws=None, scheduler=FakeScheduler(), limits=Limits(), model_name="m", metrics=metrics)
        for t, at in ((0.0, 1.0), (0.5, 2.0), (1.0, 3.0)):
            c.received = at
            c._arrived(t, queue_size=4)
        c.send({"type": "answer", "t": 0.2, "latency": 0.1})  # between frames: frame 0.0 was dropped, nothing seen
        assert list(c.arrivals) == [0.5, 1.0]
        c.send({"type": "reply_delta", "t": 1.0, "text": "x"})  # not a frame's end
        c.send({"type": "reply", "t": 1.0, "latency": 0.5})  # frame 1.0: 0.5 (dropped) is forgotten
        assert not c.arrivals
        return [item[2] for item in list(c.outbox._queue)], metrics

    arrivals, metrics = asyncio.run(run())
    assert arrivals == [None, None, 3.0]
    text = metrics.render().decode()
    assert "livecue_answers_total 1.0" in text and "livecue_replies_total 1.0" in text


def test_any_replica_shows_every_replica_from_the_board():
    """--replicas: a replica's exposition merges the others' posted texts (each family once, each sample with its
    replica label); a stale or unreadable text is left out."""
    from livecue.serve.cluster_health import LoadBoard
    from livecue.serve.metrics import ServeMetrics

    class FakeScheduler:
        max_sessions = 2

        def snapshot(self):
            return [{"queued": 3, "context_tokens": 100}]

    one, two = ServeMetrics(FakeScheduler(), replica="r1"), ServeMetrics(FakeScheduler(), replica="r2")
    two.frame_done(0.2)
    two.sent({"type": "dropped", "t": 1.0, "count": 5})
    board = LoadBoard()
    board.post_metrics("r2", two.render().decode())
    board.post_metrics("r3", "not { prometheus text")
    board.post_metrics("r4", two.render().decode().replace('"r2"', '"r4"'))
    board._metrics["r4"] = (board._metrics["r4"][0] - 60, board._metrics["r4"][1])  # stale: its replica is gone
    texts = board.read_metrics()
    assert set(texts) == {"r2", "r3"}
    text = one.render(texts).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sum(line.startswith("# TYPE livecue_sessions ") for line in text.splitlines()) == 1
    by = {(s.name, s.labels.get("replica")): s.value for f in families.values() for s in f.samples}
    assert by[("livecue_queued_frames", "r1")] == by[("livecue_queued_frames", "r2")] == 3
    assert by[("livecue_kv_tokens", "r1")] == 100
    assert by[("livecue_dropped_frames_total", "r1")] == 0 and by[("livecue_dropped_frames_total", "r2")] == 5
    assert by[("livecue_frame_latency_seconds_count", "r2")] == 1
    assert not any(replica == "r4" for _, replica in by)
    board.remove("r2")
    assert set(board.read_metrics()) == {"r3"}

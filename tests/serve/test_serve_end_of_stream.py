"""The end of a stream (what the web page does when its video file ends): `close` after the last frame; the server
watches what it has queued, answers every pending question (also one asked for a time after the last frame), sends
`closed` with the session's counters, and closes the socket with the normal code 1000.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("httpx", reason="the [serve] extra is not installed")

from serve_helpers import frames

from livecue.serve.app import create_app
from livecue.serve.images import encode_image
from livecue.serve.protocol import Limits, pack_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_close_at_the_end_of_a_stream_answers_the_pending_questions_then_closes_normally(tiny):
    from starlette.testclient import TestClient

    model, tok = tiny
    app = create_app(model, tok, limits=Limits(queue_size=4))
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"type": "open", "threshold": 0.0, "max_reply_tokens": 4}))  # θ = 0: silent frames
        assert ws.receive_json()["type"] == "ready"
        times = [i * 0.5 for i in range(6)]
        for t, image in zip(times, frames(6, seed=4)):  # faster than the model: some wait in the queue, or drop
            ws.send_bytes(pack_frame(t, encode_image(image)))
        ws.send_text(json.dumps({"type": "query", "text": "What is on the table?", "at": times[-1]}))
        ws.send_text(json.dumps({"type": "query", "text": "And now?", "at": 9.0}))  # after the last frame
        ws.send_text(json.dumps({"type": "close"}))  # the end of the stream
        ws.send_text(json.dumps({"type": "ping", "id": "after close"}))  # still answered
        events = []
        while not events or events[-1]["type"] != "closed":
            events.append(ws.receive_json())
        end = ws.receive()
    assert end["type"] == "websocket.close" and end["code"] == 1000
    kinds = [e["type"] for e in events]
    assert "error" not in kinds, [e for e in events if e["type"] == "error"]
    assert any(e["type"] == "pong" and e["id"] == "after close" for e in events)
    answers = [e for e in events if e["type"] == "answer"]
    assert [(a["query"], a["query_t"]) for a in answers] == [("What is on the table?", 2.5), ("And now?", 9.0)]
    assert answers[-1]["t"] == 9.0 and kinds.index("answer") < kinds.index("closed")
    closed = events[-1]
    assert closed["reason"] == "closed by the client" and closed["answers"] == 2 and closed["errors"] == 0
    # every frame was watched (silence, or the answer asked at its time) or reported dropped
    watched = [e["t"] for e in events if e["type"] in ("silence", "reply")] + [2.5]
    dropped = sum(e["count"] for e in events if e["type"] == "dropped")
    assert closed["frames"] == len(watched) and len(watched) + dropped == len(times) and closed["dropped"] == dropped
    assert closed["last_t"] == times[-1]  # the newest frame is never the one dropped


def test_a_session_at_the_frame_limit_is_closed_saying_why(tiny):
    """Limits.max_session_frames: after the N-th frame the client is told (error frame_limit), the session closes
    gracefully and `closed` names the server's limit, not the client."""
    from starlette.testclient import TestClient

    model, tok = tiny
    app = create_app(model, tok, limits=Limits(queue_size=8, max_session_frames=2))
    with TestClient(app) as http, http.websocket_connect("/ws") as ws:
        ws.send_text(json.dumps({"type": "open", "threshold": 0.0}))
        assert ws.receive_json()["type"] == "ready"
        for i, image in enumerate(frames(2, seed=5)):
            ws.send_bytes(pack_frame(i * 0.5, encode_image(image)))
        events = []
        while not events or events[-1]["type"] != "closed":
            events.append(ws.receive_json())
        assert ws.receive()["code"] == 1000
    errors = [e for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["frame_limit"] and "2 frames" in errors[0]["message"]
    assert events[-1]["reason"] == "the server's limit of 2 frames per session" and events[-1]["frames"] == 2

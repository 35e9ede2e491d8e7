"""livecue serve under hostile clients (2/2): timeouts and connection caps, half-open sockets under a file limit,
Origin and Host checks, the token in headers/subprotocols and never in logs.

Servers listen on 127.0.0.1 only; counts and waits are bounded; nothing asserts on timing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("uvicorn", reason="the [serve] extra is not installed")
pytest.importorskip("websockets", reason="the [serve] extra is not installed")

from serve_helpers import frames, wait_until

from livecue.client import SyncLiveClient
from livecue.serve.app import create_app
from livecue.serve.protocol import Limits, ServerLimits

TOKEN = "s3cret-7f4a9b2c"




# ---- d/e/f. connection hygiene, Origin and Host, tokens ----------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tiny):
    """An in-process app as `livecue serve` builds it for a loopback address, with a token, an allowed origin, two
    WebSocket connections at most and short timeouts."""
    from starlette.testclient import TestClient

    app = create_app(*tiny, token=TOKEN, loopback_only=True, allow_origins=["https://ok.example"],
                     limits=Limits(open_timeout=0.3, idle_timeout=0.5),
                     server_limits=ServerLimits(max_connections=2))
    with TestClient(app, base_url="http://127.0.0.1:8000") as http:
        yield http


WS = "ws://127.0.0.1:8000/ws"


def bearer() -> dict[str, str]:
    """Fresh headers each time (the test client adds its own handshake headers to the dict it is given)."""
    return {"Authorization": f"Bearer {TOKEN}"}


def test_host_check_on_loopback_servers(guarded):
    """DNS rebinding: a loopback server answers only Host values that are loopback names with its port."""
    from starlette.testclient import WebSocketDenialResponse

    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "app.localhost:8000"):
        assert guarded.get("/health", headers={"host": host}).status_code == 200, host
    for host in ("evil.example:8000", "evil.example", "127.0.0.1:9999", "localhost", "127.0.0.1.evil.example:8000",
                 ""):
        response = guarded.get("/health", headers={"host": host})
        assert response.status_code == 403 and "is not this loopback server" in response.json()["detail"], host
    with pytest.raises(WebSocketDenialResponse) as info:
        with guarded.websocket_connect(WS, headers={"host": "evil.example:8000", "origin": "http://evil.example:8000",
                                                    **bearer()}):
            pass
    assert info.value.status_code == 403


def test_origin_check_on_the_websocket(guarded):
    from starlette.testclient import WebSocketDenialResponse

    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "https://ok.example.evil.org"):
        with pytest.raises(WebSocketDenialResponse) as info:
            with guarded.websocket_connect(WS, headers={"origin": origin, **bearer()}):
                pass
        assert info.value.status_code == 403 and "refused" in info.value.json()["detail"], origin
    for headers in ({"origin": "http://127.0.0.1:8000"}, {"origin": "https://ok.example"}, {}):  # own, allowed, none
        with guarded.websocket_connect(WS, headers={**headers, **bearer()}) as ws:
            ws.send_text('{"type": "open"}')
            assert ws.receive_json()["type"] == "ready"


def test_token_as_bearer_header_or_subprotocol(guarded):
    with guarded.websocket_connect(WS, subprotocols=["livecue", f"livecue.token.{TOKEN}"]) as ws:
        assert ws.accepted_subprotocol == "livecue"  # the token is never echoed
        ws.send_text('{"type": "open"}')
        assert ws.receive_json()["type"] == "ready"
    with guarded.websocket_connect(WS, headers=bearer()) as ws:
        ws.send_text('{"type": "open"}')
        assert ws.receive_json()["type"] == "ready"
    for kwargs in ({"subprotocols": ["livecue", "livecue.token.wrong"]}, {"headers": {"Authorization": "Bearer x"}},
                   {}):
        with guarded.websocket_connect(WS, **kwargs) as ws:
            assert ws.receive_json()["code"] == "unauthorized"
            assert ws.receive_json()["type"] == "closed"


def test_open_and_idle_timeouts_and_the_connection_cap(guarded):
    from starlette.websockets import WebSocketDisconnect

    with guarded.websocket_connect(WS, headers=bearer()) as ws:  # sends nothing
        ev = ws.receive_json()
        assert ev["code"] == "open_timeout" and "0.3 s" in ev["message"]
        assert ws.receive_json()["type"] == "closed"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert info.value.code == 4408
    with guarded.websocket_connect(WS, headers=bearer()) as ws:
        ws.send_text('{"type": "open"}')
        sid = ws.receive_json()["session"]
        ev = ws.receive_json()                                   # no message for 0.5 s
        assert ev["code"] == "idle_timeout" and ws.receive_json()["type"] == "closed"
    assert wait_until(lambda: sid not in guarded.app.state.scheduler.sessions)
    with guarded.websocket_connect(WS, headers=bearer()) as a, guarded.websocket_connect(WS, headers=bearer()) as b:
        for ws in (a, b):
            ws.send_text('{"type": "ping"}')
            assert ws.receive_json()["type"] == "pong"
        with guarded.websocket_connect(WS, headers=bearer()) as third:   # max_connections = 2
            ev = third.receive_json()
            assert ev["code"] == "busy" and "2 connections are open" in ev["message"]
        assert guarded.get("/health").json()["connections"] == 2


def test_no_api_docs_routes(guarded):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert guarded.get(path).status_code == 404, path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`livecue serve --model tiny` in a subprocess limited to 256 open files, with a token, debug logging, a 1-s
    request-head timeout and at most 64 sockets. Its stdout (the banner, the access log) and stderr go to files."""
    folder = tmp_path_factory.mktemp("serve")
    out_path, err_path = folder / "stdout.log", folder / "stderr.log"

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "livecue.cli", "serve", "--model", "tiny", "--port", "0",
                                 "--token", TOKEN, "--log-level", "debug", "--header-timeout", "1",
                                 "--max-sockets", "64", "--threads", "1"], stdout=out, stderr=err, text=True,
                                preexec_fn=limit_files, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: "livecue serve:" in out_path.read_text() or proc.poll() is not None, 120)
        match = re.search(r"(http://127\.0\.0\.1:(\d+))/", out_path.read_text())
        assert match, f"livecue serve did not start: {out_path.read_text()!r} {err_path.read_text()[-2000:]}"
        yield SimpleNamespace(url=match.group(1), port=int(match.group(2)), proc=proc,
                              logs=lambda: out_path.read_text() + err_path.read_text())
    finally:
        proc.terminate()
        proc.wait(15)


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_half_open_sockets_cannot_lock_out_health_or_sessions(served):
    """300 sockets that send nothing or half a request, against a 256-file limit: /health and a new session still
    work (the longest-waiting sockets are dropped to make room), and every one of them is closed by the server."""
    socks = []
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", served.port), timeout=20)
        if i % 2:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        socks.append(s)
    try:
        status, body = get(served.url + "/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        with SyncLiveClient(served.url, token=TOKEN) as client:
            client.open(threshold=0.0)
            client.send_frame(frames(1)[0], 0.0)
            assert client.recv(60)["type"] == "silence"
            client.close()
            assert list(client.events(60))[-1]["type"] == "closed"

        def closed(s: socket.socket) -> bool:
            s.settimeout(0.001)
            try:
                return s.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        wait_until(lambda: all(closed(s) for s in socks), 30)
        assert all(closed(s) for s in socks), f"{sum(not closed(s) for s in socks)} half-open sockets still open"
    finally:
        for s in socks:
            s.close()
    assert get(served.url + "/health", {"Host": "evil.example"})[0] == 403   # the Host check is on (loopback bind)
    assert "Too many open files" not in served.logs()


def test_the_token_never_appears_in_logs(served):
    from websockets.sync.client import connect

    assert get(served.url + f"/model?token={TOKEN}")[0] == 200
    assert get(served.url + "/sessions", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert get(served.url + "/sessions?token=wrong-guess-1234")[0] == 401
    assert get(served.url + f"/?token={TOKEN}")[0] == 200
    ws_url = served.url.replace("http", "ws") + "/ws"
    for kwargs in ({"uri": f"{ws_url}?token={TOKEN}"}, {"uri": ws_url, "additional_headers": bearer()},
                   {"uri": ws_url, "subprotocols": ["livecue", f"livecue.token.{TOKEN}"]}):
        with connect(**kwargs) as ws:
            ws.send('{"type": "open"}')
            assert json.loads(ws.recv(30))["type"] == "ready"
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as info:  # a page of another origin, on the real server
        connect(ws_url, origin="http://evil.example", additional_headers=bearer())
    assert info.value.response.status_code == 403
    assert wait_until(lambda: "WebSocket /ws?token=***" in served.logs() and "/model?token=***" in served.logs())
    text = served.logs()
    assert TOKEN not in text and "wrong-guess-1234" not in text
    assert "/sessions?token=***" in text and "Traceback" not in text

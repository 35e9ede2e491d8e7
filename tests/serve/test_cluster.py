"""livecue serve --replicas N: the same app on Ray Serve replicas (docs/cluster.md).

The pure parts (options, the config file, the router's choice, the proxy's replica-lost event) run without Ray.
The rest starts one local Ray instance (4 CPUs, no dashboard) in this process and `livecue serve --replicas 2
--model tiny --address ...` in a subprocess joined to it, then checks through Ray Serve's proxy: the page and the
protocol; 12 clients spread over both replicas, none over --max-sessions, each pinned to one replica; the token, the
Origin and Host checks and --max-sessions as in the single process; killing one replica's process ends exactly its
sessions with a `replica_lost` error while the other replica's sessions complete, and Ray starts a new replica.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("websockets", reason="the [serve] extra is not installed")

from serve_helpers import frames, wait_until

from livecue import cli
from livecue.client import LiveClient, ServerError
from livecue.serve.cluster_proxy import REPLICA_LOST, ReplicaLossGuard

TOKEN = "cluster-test-token-0123"
ALLOWED = "https://allowed.example"
HEADER = "x-livecue-replica"


# ---- without Ray ---------------------------------------------------------------------------------------------------
def test_the_default_serve_never_imports_ray():
    """The single-process server stays the zero-dependency default: parsing its options never imports Ray."""
    code = ("import sys; from livecue.commands import serve, serve_cluster; "
            "args = serve.parse(['--model', 'tiny'])[1]; "
            "assert not serve_cluster.wanted(args) and 'ray' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_without_ray_the_error_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main(["serve", "--replicas", "2", "--model", "tiny", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'livecue[cluster]'" in err, err


BAD = [
    (["--replicas", "0"], 2, "--replicas"),
    (["--replicas", "2", "--max-sockets", "10"], 1, "--max-sockets guards the single-process server"),
    (["--replicas", "2", "--header-timeout=3"], 1, "--header-timeout"),
    (["--autoscale", "3:2"], 2, "--autoscale"), (["--autoscale", "0:2"], 2, "--autoscale"),
    (["--autoscale", "two"], 2, "--autoscale"),
    (["--replicas", "5", "--autoscale", "1:4"], 1, "--replicas 5 is outside --autoscale 1:4"),
    (["--replicas", "2", "--target-sessions", "4"], 1, "--target-sessions needs --autoscale"),
    (["--replicas", "2", "--device", "cuda:1", "--ray-config"], 1, "--device cuda:1"),
    (["--replicas", "2", "--num-gpus-per-replica", "1", "--device", "cpu", "--ray-config"], 1,
     "--num-gpus-per-replica 1 with --device cpu"),
    (["--replicas", "2", "--device", "cuda", "--num-gpus-per-replica", "0", "--ray-config"], 1,
     "--num-gpus-per-replica 0"),
    (["--replicas", "2", "--num-cpus-per-replica", "-1"], 2, "--num-cpus-per-replica"),
    (["--replicas", "2", "--drain-timeout", "0"], 2, "--drain-timeout"),
    (["--replicas", "2", "--model", "./no/such/run"], 1, "no such checkpoint"),
    (["--replicas", "2", "--host", "0.0.0.0"], 1, "without a token"),
]


@pytest.mark.parametrize("argv, code, words", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_cluster_options_are_refused_in_one_line(argv, code, words, capsys):
    try:
        rc = cli.main(["serve", *argv])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]
    assert rc == code and len(lines) == 1 and words in lines[0] and "Traceback" not in err, (rc, err)


def test_ray_config_is_a_serve_deploy_file(tmp_path, capsys):
    """--ray-config writes the deployment of the current options as a Ray Serve config: replicas, resources,
    autoscaling on sessions, the drain timeout, the router, the proxy's middleware; never the token. Ray Serve's own
    schema accepts it, and its builder rebuilds the application from the options it names."""
    path = tmp_path / "serve.yaml"
    argv = ["serve", "--model", "tiny", "--autoscale", "1:4", "--target-sessions", "3", "--max-sessions", "6",
            "--num-cpus-per-replica", "2", "--drain-timeout", "60", "--threshold", "0.5", "--token", TOKEN,
            "--ray-config", str(path), "--stream.max_reply_tokens=8"]
    assert cli.main(argv) == 0
    text = path.read_text()
    config = yaml.safe_load(text)
    assert TOKEN not in text and "LIVECUE_TOKEN" in text
    app = config["applications"][0]
    assert app["import_path"] == "livecue.commands.serve:cluster_app" and app["route_prefix"] == "/"
    assert app["args"]["argv"] == ["--model", "tiny", "--max-sessions", "6", "--threshold", "0.5",
                                   "--num-cpus-per-replica", "2", "--autoscale", "1:4", "--target-sessions", "3",
                                   "--drain-timeout", "60", "--stream.max_reply_tokens=8"]
    deployment = app["deployments"][0]
    assert deployment["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 1,
                                                "target_ongoing_requests": 3}
    assert "num_replicas" not in deployment and deployment["graceful_shutdown_timeout_s"] == 60
    assert deployment["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0}
    assert deployment["max_ongoing_requests"] == 64 + 16  # every WebSocket the app may hold, plus HTTP room
    assert deployment["request_router_config"]["request_router_class"].endswith(":LeastSessionsRouter")
    env = config["controller_options"]["runtime_env"]["env_vars"]
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "livecue.serve.cluster_proxy:proxy_middlewares"
    assert cli.main(["serve", "--replicas", "3", "--model", "tiny", "--ray-config"]) == 0  # stdout
    assert yaml.safe_load(capsys.readouterr().out)["applications"][0]["deployments"][0]["num_replicas"] == 3

    pytest.importorskip("ray.serve", reason="the [cluster] extra is not installed")
    from ray.serve.schema import ServeDeploySchema

    from livecue.commands.serve import cluster_app

    ServeDeploySchema.model_validate(config)
    built = cluster_app(app["args"])
    assert type(built).__name__ == "Application"


def test_the_router_sends_each_session_to_the_least_loaded_replica():
    """Fewest known sessions first; a burst routed before Ray counts it is counted by the router itself; ties go to
    fewer queued frames; a pick Ray has counted is not counted twice."""
    pytest.importorskip("ray.serve", reason="the [cluster] extra is not installed")
    from livecue.serve.cluster_router import LeastSessionsRouter

    known = {"a": 5, "b": 2}
    router = object.__new__(LeastSessionsRouter)  # no Ray router state: only what choose_replicas reads
    router.initialize_state()
    router._replica_queue_len_cache = SimpleNamespace(get=known.get)
    router._use_replica_queue_len_cache = False  # on_send_request: Ray's own bookkeeping (its cache) is the fake
    replicas = {r: SimpleNamespace(replica_id=r, routing_stats={"sessions": 0, "queued_frames": q})
                for r, q in (("a", 0), ("b", 0), ("c", 9))}

    def choose() -> str:
        groups = asyncio.run(router.choose_replicas(list(replicas.values())))
        assert len(groups[0]) == 1 and sum(len(g) for g in groups) == 3
        return groups[0][0].replica_id

    known["c"] = 2
    assert choose() == "b"           # b and c have 2 sessions; c has 9 queued frames
    assert choose() == "c"           # b has a pending pick: 3 > 2
    router.on_send_request("b")      # Ray counted b's: cache 3, no pending pick
    known["b"] = 3
    picks = [choose() for _ in range(4)]  # a burst: c 3, b 3 -> then alternating, never a (5)
    assert sorted(picks) == ["b", "b", "c", "c"]
    del known["a"]                   # an expired cache entry: the replica's own report counts
    replicas["a"].routing_stats = {"sessions": 0, "queued_frames": 0}
    assert choose() == "a"


def test_the_proxy_ends_an_orphaned_session_with_replica_lost():
    """ReplicaLossGuard: after accept, an app that returns without closing (its replica died) -> error, closed,
    close 1011; a replica's own close or a client's disconnect -> nothing added; other paths untouched."""
    def run(app, path="/ws", incoming=()):
        sent, queue = [], list(incoming)

        async def receive():
            return queue.pop(0) if queue else {"type": "websocket.receive", "text": "{}"}

        async def send(message):
            sent.append(message)

        asyncio.run(ReplicaLossGuard(app)({"type": "websocket", "path": path}, receive, send))
        return sent

    async def dies(scope, receive, send):
        await send({"type": "websocket.accept"})
        await receive()

    async def closes(scope, receive, send):
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    async def client_leaves(scope, receive, send):
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"

    sent = run(dies)
    events = [json.loads(m["text"]) for m in sent if m["type"] == "websocket.send"]
    assert [e["type"] for e in events] == ["error", "closed"] and events[0]["code"] == REPLICA_LOST
    assert "lost" in events[0]["message"] and events[1]["reason"] == REPLICA_LOST
    assert sent[-1] == {"type": "websocket.close", "code": 1011, "reason": REPLICA_LOST}
    assert [m["type"] for m in run(closes)] == ["websocket.accept", "websocket.close"]
    assert [m["type"] for m in run(client_leaves, incoming=[{"type": "websocket.disconnect", "code": 1001}])] \
        == ["websocket.accept"]
    assert [m["type"] for m in run(dies, path="/other")] == ["websocket.accept"]


# ---- two replicas on a local Ray instance --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A local Ray instance (this process) and `livecue serve --replicas 2 --model tiny` joined to it (a subprocess):
    a token, an allowed origin, at most 8 sessions per replica, silent by default (θ 0: cheap frames)."""
    ray = pytest.importorskip("ray", reason="the [cluster] extra (Ray Serve) is not installed")
    pytest.importorskip("ray.serve", reason="the [cluster] extra (Ray Serve) is not installed")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from a test run
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    folder = tmp_path_factory.mktemp("cluster")
    out_path, err_path = folder / "stdout.log", folder / "stderr.log"
    argv = [sys.executable, "-m", "livecue.cli", "serve", "--replicas", "2", "--model", "tiny", "--port", "0",
            "--address", ray.get_runtime_context().gcs_address, "--token", TOKEN, "--allow-origin", ALLOWED,
            "--max-sessions", "8", "--threads", "1", "--threshold", "0", "--log-level", "warning"]
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: "livecue serve: tiny on" in out_path.read_text() or proc.poll() is not None, 180)
        match = re.search(r"(http://127\.0\.0\.1:(\d+))/", out_path.read_text())
        assert match, f"livecue serve did not start: {out_path.read_text()!r} {err_path.read_text()[-3000:]}"
        yield SimpleNamespace(url=match.group(1), port=int(match.group(2)), proc=proc, ray=ray,
                              logs=lambda: out_path.read_text() + err_path.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            ray.shutdown()


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def stream(url: str, n_frames: int, seed: int, *, spacing: float = 0.1, started: list | None = None,
                 go: asyncio.Event | None = None, **options) -> dict:
    """One session: open, `n_frames` frames (after `go`, if given), close; what it saw: its replica (the handshake's
    header), its events (read as they come), the frames it could send, the close code."""
    async with LiveClient(url, token=TOKEN) as client:
        replica = client.ws.response.headers.get(HEADER)
        ready = await client.open(**options)
        events: list[dict] = []

        async def read() -> None:
            while (ev := await client.recv(timeout=90)) is not None:
                events.append(ev)

        reader = asyncio.create_task(read())
        if started is not None:
            started.append(replica)
        if go is not None:
            await go.wait()
        sent = 0
        for k, frame in enumerate(frames(n_frames, seed=seed)):
            if reader.done():  # the server closed the connection
                break
            try:
                await client.send_frame(frame, t=k * 0.5)
            except Exception:  # noqa: BLE001 - closed while sending
                break
            sent += 1
            await asyncio.sleep(spacing)
        else:
            await client.close()
        await asyncio.wait_for(reader, 120)
        return {"replica": replica, "ready": ready, "events": events, "sent": sent, "code": client.ws.close_code}


def test_page_health_and_a_session_through_the_proxy(served):
    status, headers, body = get(served.url + "/")
    assert status == 200 and b"<html" in body.lower() and headers.get("x-livecue-replica")
    status, headers, body = get(served.url + "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["replica"] == headers["x-livecue-replica"]
    assert wait_until(lambda: len(json.loads(get(served.url + "/health")[2])["replicas"]) == 2, 30)
    cluster = json.loads(get(served.url + "/health")[2])["cluster"]
    assert cluster["replicas"] == 2 and cluster["max_sessions"] == 16 and cluster["sessions"] == 0
    seen = asyncio.run(stream(served.url, 4, seed=1, threshold=1.0, max_reply_tokens=3))
    types = [e["type"] for e in seen["events"]]
    assert seen["ready"]["model"] == "tiny" and types[-1] == "closed" and seen["code"] == 1000
    assert types.count("reply") == 4 and seen["events"][-1]["frames"] == 4  # θ 1: a reply on every frame


def test_metrics_through_the_proxy_show_every_replica(served):
    """Whichever replica answers /metrics, it shows every replica's samples, each with its `replica` label (the
    others' from the shared board, at most a couple of seconds old); it needs the token."""
    from prometheus_client.parser import text_string_to_metric_families

    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert get(served.url + "/metrics")[0] == 401

    def replicas() -> set[str]:
        status, _, body = get(served.url + "/metrics", auth)
        assert status == 200
        return {s.labels["replica"] for f in text_string_to_metric_families(body.decode()) for s in f.samples
                if s.name == "livecue_sessions"}

    assert wait_until(lambda: len(replicas()) == 2, 30)


def test_twelve_sessions_spread_over_both_replicas_and_stay_pinned(served):
    """12 clients at once: all admitted, both replicas used, none over its 8 sessions, /health counts all 12; each
    session's frames were all watched by the replica it opened on (a session moved mid-stream would meet a replica
    that does not know it: `not_open` errors and missing frames)."""
    def cluster_sessions() -> int:
        return json.loads(get(served.url + "/health")[2])["cluster"]["sessions"]

    async def run() -> tuple[list[dict], bool]:
        started: list[str] = []
        go = asyncio.Event()
        tasks = [asyncio.create_task(stream(served.url, 12, seed=i, started=started, go=go)) for i in range(12)]
        while len(started) < 12 and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        counted = await asyncio.to_thread(wait_until, lambda: cluster_sessions() == 12, 15)
        go.set()
        return await asyncio.gather(*tasks), counted

    results, counted = asyncio.run(run())
    per_replica = {r: sum(s["replica"] == r for s in results) for r in {s["replica"] for s in results}}
    assert len(per_replica) == 2 and max(per_replica.values()) <= 8, per_replica
    assert counted, "/health never counted the 12 sessions across the replicas"
    for s in results:
        closed = s["events"][-1]
        assert closed["type"] == "closed" and closed["reason"] == "closed by the client" and s["code"] == 1000
        assert closed["frames"] + closed["dropped"] == 12 and closed["errors"] == 0
        assert not [e for e in s["events"] if e["type"] == "error"]


def test_token_origin_host_and_session_limit_as_in_one_process(served):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ws = served.url.replace("http", "ws") + "/ws"
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        with connect(ws, additional_headers=headers) as conn:
            error, closed = json.loads(conn.recv(30)), json.loads(conn.recv(30))
            assert error["code"] == "unauthorized" and closed["reason"] == "unauthorized"
            with pytest.raises(Exception):  # noqa: B017 - the server closes: 4401
                conn.recv(30)
            assert conn.close_code == 4401
    for kwargs in ({"subprotocols": ["livecue", f"livecue.token.{TOKEN}"]}, {"uri": f"{ws}?token={TOKEN}"}):
        with connect(**{"uri": ws, **kwargs}) as conn:  # the page's ways
            conn.send('{"type": "open"}')
            assert json.loads(conn.recv(30))["type"] == "ready"
    for origin, ok in (("http://evil.example", False), (ALLOWED, True), (served.url, True)):
        if ok:
            with connect(ws, origin=origin, additional_headers={"Authorization": f"Bearer {TOKEN}"}):
                pass
        else:
            with pytest.raises(InvalidStatus) as info:
                connect(ws, origin=origin, additional_headers={"Authorization": f"Bearer {TOKEN}"})
            assert info.value.response.status_code == 403
    assert get(served.url + "/health", {"Host": "evil.example"})[0] == 403
    assert get(served.url + "/model")[0] == 401
    assert get(served.url + "/model", {"Authorization": f"Bearer {TOKEN}"})[0] == 200

    async def fill() -> tuple[list[str], str]:
        clients = []
        try:
            for _ in range(16):  # one after another: the router balances them exactly, 8 and 8
                client = await LiveClient(served.url, token=TOKEN).connect()
                clients.append(client)
                await client.open()
            extra = await LiveClient(served.url, token=TOKEN).connect()
            clients.append(extra)
            with pytest.raises(ServerError) as info:
                await extra.open()
            return [c.ws.response.headers[HEADER] for c in clients[:16]], info.value.code
        finally:
            for client in clients:
                await client.disconnect()

    replicas, code = asyncio.run(fill())
    assert code == "busy" and sorted({replicas.count(r) for r in replicas}) == [8]


def test_the_token_never_appears_in_logs(served):
    """Neither the command's output (which relays the replicas' logs) nor Ray's log files show the token."""
    assert get(served.url + f"/model?token={TOKEN}")[0] == 200
    time.sleep(1)
    texts = [served.logs()]
    session = Path("/tmp/ray/session_latest/logs")  # Ray's default log folder
    if session.is_dir():
        texts += [p.read_text(errors="replace") for p in session.rglob("*") if p.is_file() and p.suffix in
                  (".log", ".out", ".err")]
    assert len(texts) > 1 or not session.is_dir()
    assert not [t for t in texts if TOKEN in t]


def replica_pid(ray, replica: str) -> int:
    """The process of the replica whose id is ``replica`` (Ray Serve names its actors ...#<id>)."""
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == "serve" and a["name"].endswith(f"#{replica}")]
    assert len(names) == 1, names
    actor = ray.get_actor(names[0], namespace="serve")
    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()), timeout=30)


def test_a_killed_replica_ends_exactly_its_sessions(served):
    """SIGKILL one replica's process while 6 sessions stream (3 on each): its sessions get `replica_lost`, `closed`,
    close code 1011; the other replica's complete every frame; Ray starts a new replica, which serves new sessions."""
    state: dict = {}

    async def run() -> list[dict]:
        started: list[str] = []
        tasks = [asyncio.create_task(stream(served.url, 40, seed=10 + i, spacing=0.1, started=started))
                 for i in range(6)]
        while len(started) < 6 and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        victim = started[0]
        state["victim"] = victim
        pid = await asyncio.to_thread(replica_pid, served.ray, victim)
        await asyncio.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        return await asyncio.gather(*tasks)

    results = asyncio.run(run())
    victim = state["victim"]
    lost = [s for s in results if s["replica"] == victim]
    kept = [s for s in results if s["replica"] != victim]
    assert lost and kept, [s["replica"] for s in results]
    for s in lost:
        tail = [e for e in s["events"] if e["type"] in ("error", "closed")]
        assert [e["type"] for e in tail] == ["error", "closed"] and tail[0]["code"] == REPLICA_LOST, tail
        assert tail[1]["reason"] == REPLICA_LOST and s["code"] == 1011 and s["sent"] < 40
    for s in kept:
        closed = s["events"][-1]
        assert closed["type"] == "closed" and closed["reason"] == "closed by the client" and s["code"] == 1000
        assert closed["frames"] + closed["dropped"] == 40 and closed["errors"] == 0

    def replicas_now() -> set:
        return set(json.loads(get(served.url + "/health")[2])["replicas"])

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (len(now := replicas_now()) == 2 and victim not in now):
        time.sleep(1)
    assert len(now) == 2 and victim not in now, now  # a new replica replaced the dead one
    seen = asyncio.run(stream(served.url, 2, seed=99))
    assert seen["events"][-1]["type"] == "closed" and seen["code"] == 1000


def test_leaving_a_joined_cluster_drains_the_replicas(served):
    """`livecue serve --address` stopped (SIGTERM) while sessions stream: it exits at once and deletes its
    application; each replica takes no new session and is stopped only once its sessions have ended, which complete
    every frame."""
    from ray import serve

    async def run() -> list[dict]:
        started: list[str] = []
        tasks = [asyncio.create_task(stream(served.url, 20, seed=50 + i, started=started)) for i in range(2)]
        while len(started) < 2 and not any(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(served.proc.wait, 30) == 0
        return await asyncio.gather(*tasks)

    for s in asyncio.run(run()):
        closed = s["events"][-1]
        assert closed["type"] == "closed" and closed["reason"] == "closed by the client" and s["code"] == 1000
        assert closed["frames"] + closed["dropped"] == 20 and closed["errors"] == 0
    assert wait_until(lambda: "livecue" not in serve.status().applications, 60)

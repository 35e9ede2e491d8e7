"""Aggregate capacity of `livecue serve --replicas N` on CPU: the most concurrent real-time 2-fps WebSocket clients
the deployment holds with p99 frame latency <= the target, for 1 and 2 replicas (issue 20).

For each N this script starts a local Ray instance (``num_cpus=N``, no dashboard, usage stats off), then
``livecue serve --replicas N --model tiny --threads 1 --num-cpus-per-replica 1 --port 0 --address <gcs>`` as a
subprocess (loopback, no token), waits until ``/health`` counts N replicas, and searches the client count with
``livecue.bench.capacity.find_capacity`` (1, 2, 4, ... until a level fails, then bisection), its ``measure``
replaced by :func:`run_level`: C clients each open a session (``silence`` events on, θ and ``max_reply_tokens`` as
given), then send small random JPEG frames in real time (frame k at k / fps s after the client's start, starts
spread over one frame interval). A frame's latency runs from sending it to the first event carrying its ``t``
(``silence``, ``reply_delta``, ``reply``, ``answer``). A level passes when no frame is lost (dropped by the server or
never answered), p99 <= the target and latency did not grow over the run (as ``livecue bench --capacity``); it is
aborted as soon as so many frames are over the target that p99 can no longer meet it.

    .venv/bin/python benchmarks/cluster_capacity.py            # 1 and 2 replicas, writes results/cluster_capacity_cpu.*
    .venv/bin/python benchmarks/cluster_capacity.py --replicas 2 --seconds 10 --max-clients 8 --out /tmp/x.md

Traffic goes only to the loopback servers it starts; Ray and the servers are stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from livecue.bench.capacity import BACKLOG_GROWTH, CapacityLevel, CapacityResult, find_capacity, stream_frames
from livecue.client import LiveClient
from livecue.serve.images import encode_image
from livecue.serve.protocol import pack_frame

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "cluster_capacity_cpu.md"
FRAME_EVENTS = ("silence", "reply_delta", "reply", "answer")
HEADER = "x-livecue-replica"


# ---- the deployment ------------------------------------------------------------------------------------------------
def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start_server(args: argparse.Namespace, replicas: int, gcs: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``livecue serve --replicas N`` joined to the Ray instance at ``gcs``; its URL once N replicas are up."""
    argv = [sys.executable, "-m", "livecue.cli", "serve", "--replicas", str(replicas), "--model", args.model,
            "--threads", "1", "--num-cpus-per-replica", "1", "--port", "0", "--address", gcs,
            "--max-sessions", str(args.max_sessions), "--log-level", "warning"]
    out = log.open("w")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 300
    url = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            match = re.search(r"(http://127\.0\.0\.1:\d+)/", log.read_text())
            if match:
                url = match.group(1)
                try:
                    if len(get_json(url + "/health").get("replicas", {})) == replicas:
                        return proc, url
                except OSError:
                    pass
            time.sleep(0.5)
    except BaseException:  # Ctrl-C or SIGTERM while it starts: stop it too
        stop_server(proc)
        raise
    stop_server(proc)
    raise SystemExit(f"livecue serve --replicas {replicas} did not come up ({url}): {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def replica_pids(ray: Any) -> dict[str, int]:
    """Replica id -> process id of the livecue replicas (Ray Serve names its replica actors ...#<id>)."""
    pids = {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor.get("namespace") == "serve" and "livecue" in actor["name"] and "#" in actor["name"]:
            handle = ray.get_actor(actor["name"], namespace="serve")
            pids[actor["name"].rsplit("#", 1)[1]] = ray.get(handle.__ray_call__.remote(lambda self: os.getpid()),
                                                            timeout=30)
    return pids


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def wait_idle(url: str, timeout: float = 60.0) -> None:
    """Until every replica reports no session and no queued frame (the previous level's are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = get_json(url + "/health")
            if health["cluster"]["sessions"] == 0 and not any(r.get("queued_frames") for r in
                                                              health["replicas"].values()):
                return
        except OSError:
            pass
        time.sleep(0.5)


# ---- one level -----------------------------------------------------------------------------------------------------
def random_frames(n: int, seed: int, shape: tuple[int, int] = (48, 64)) -> list[bytes]:
    """``n`` small random RGB frames, JPEG-encoded once (the clients' CPU goes to sending, not encoding)."""
    rng = np.random.default_rng(seed)
    return [encode_image(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), "jpeg", 4) for _ in range(n)]


async def level(url: str, clients: int, args: argparse.Namespace, jpegs: list[bytes]) -> dict[str, Any]:
    """``clients`` real-time sessions for ``args.seconds`` of stream; per frame its send and first-event times."""
    n = stream_frames(args.seconds, args.fps)
    warm = min(args.warmup, n // 2)
    sent = np.full((clients, n), np.nan)
    first = np.full((clients, n), np.nan)
    stats = {"replies": 0, "reply_tokens": 0, "dropped": 0, "errors": [], "replicas": []}
    abort = asyncio.Event()
    conns = [LiveClient(url, open_timeout=30) for _ in range(clients)]
    for c in conns:  # one after another: the router balances them exactly
        await c.connect()
        stats["replicas"].append(c.ws.response.headers.get(HEADER))
        await c.open(threshold=args.threshold, max_reply_tokens=args.max_reply_tokens, fps=args.fps)
    t0 = time.perf_counter() + 0.5

    async def send(i: int, c: LiveClient) -> None:
        start = t0 + i / (clients * args.fps)
        for k in range(n):
            await asyncio.sleep(max(0.0, start + k / args.fps - time.perf_counter()))
            if abort.is_set():
                return
            sent[i, k] = time.perf_counter()
            await c.ws.send(pack_frame(k / args.fps, jpegs[(i + k) % len(jpegs)]))
        await c.close()

    async def read(i: int, c: LiveClient) -> None:
        while (ev := await c.recv(timeout=args.seconds + 120)) is not None:
            kind, t = ev.get("type"), ev.get("t")
            if kind in FRAME_EVENTS and t is not None:
                k = round(t * args.fps)
                if 0 <= k < n and np.isnan(first[i, k]):
                    first[i, k] = time.perf_counter()
            if kind == "reply":
                stats["replies"] += 1
                stats["reply_tokens"] += len(ev.get("token_ids") or [])
            elif kind == "dropped":
                stats["dropped"] += int(ev.get("count", 0))
            elif kind == "error":
                stats["errors"].append(f"{ev.get('code')}: {ev.get('message')}")
            elif kind == "closed":
                return

    limit = late_limit(clients * (n - warm))

    async def watch() -> None:  # abort once p99 can no longer meet the target
        while not abort.is_set():
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            lat = np.where(np.isnan(first), now, first) - sent
            if int(np.nansum(lat[:, warm:] > args.p99)) >= limit:
                abort.set()

    readers = [asyncio.create_task(read(i, c)) for i, c in enumerate(conns)]
    senders = [asyncio.create_task(send(i, c)) for i, c in enumerate(conns)]
    watcher = asyncio.create_task(watch())
    load_before = os.getloadavg()
    done = asyncio.gather(*senders, *readers)
    stop = asyncio.create_task(abort.wait())
    try:
        await asyncio.wait([done, stop], return_when=asyncio.FIRST_COMPLETED)
        aborted = abort.is_set()
        if not aborted:
            await done
        end = time.perf_counter() if aborted or np.isnan(first).all() else float(np.nanmax(first))
    finally:
        abort.set()
        watcher.cancel()
        for task in (*senders, *readers):
            task.cancel()
        await asyncio.gather(done, stop, watcher, return_exceptions=True)  # retrieved: no "never retrieved"
        for c in conns:
            await c.disconnect()
    return {"sent": sent, "first": first, "warm": warm, "aborted": aborted, "t0": t0, "end": end, "n": n,
            "load": (load_before, os.getloadavg()), **stats}


def late_limit(measured: int) -> int:
    """How many of ``measured`` latencies over a target make their p99 exceed it whatever the others are (as
    ``livecue bench --capacity``: the sorted value at index floor(0.99 (n - 1)) is then over it)."""
    return max(1, measured - math.floor(0.99 * (measured - 1)))


def verdict(clients: int, raw: dict[str, Any], args: argparse.Namespace, cpu: float) -> CapacityLevel:
    """The level's :class:`CapacityLevel`: percentiles over the measured frames that got an event, lost frames
    (never answered, e.g. dropped from a full queue) fail the level, and so do p99 and backlog growth as in
    ``livecue bench --capacity``. ``cpu_seconds``: the replicas' CPU time during the level."""
    sent, first = raw["sent"][:, raw["warm"]:], raw["first"][:, raw["warm"]:]
    lat = first - sent
    seen = ~np.isnan(lat)
    lost = int((~np.isnan(sent) & ~seen).sum())
    order = np.argsort(sent[seen], kind="stable")
    by_send = lat[seen][order]
    done = int((~np.isnan(raw["first"])).sum())
    seconds = raw["end"] - raw["t0"]
    pct = (lambda q: float(np.percentile(by_send, q) * 1e3)) if len(by_send) else (lambda q: None)
    growth = None
    if (q := len(by_send) // 4) and not raw["aborted"]:
        growth = float(np.median(by_send[-q:]) - np.median(by_send[:q])) * 1e3
    target = args.p99 * 1e3
    p99 = pct(99)
    passed = False
    if raw["aborted"]:
        reason = f"aborted after {seconds:.1f} s: too many frames over {target:.0f} ms already"
    elif lost:
        reason = f"{lost} frames lost (dropped by the server or never answered)"
    elif p99 is None or p99 > target:
        reason = f"p99 {p99:.0f} ms > {target:.0f} ms" if p99 is not None else "no frames"
    elif growth is not None and growth > BACKLOG_GROWTH * target:
        reason = f"falling behind: latency grew by {growth:.0f} ms over the run (> {BACKLOG_GROWTH * target:.0f} ms)"
    else:
        passed = True
        reason = f"p99 {p99:.0f} ms <= {target:.0f} ms" + (
            "" if growth is None else f", backlog growth {growth:.0f} ms")
    level_ = CapacityLevel(streams=clients, frames=done, measured=int(seen.sum()) + lost, seconds=seconds,
                           cpu_seconds=cpu, offered_fps=clients * args.fps,
                           achieved_fps=done / (seconds + 1 / args.fps),
                           p50_ms=pct(50), p99_ms=p99, max_ms=float(by_send.max() * 1e3) if len(by_send) else None,
                           backlog_growth_ms=growth, replies=raw["replies"], peak_mem_mb=0.0, passed=passed,
                           aborted=raw["aborted"], reason=reason)
    return level_


# ---- the search ----------------------------------------------------------------------------------------------------
def measure_replicas(ray: Any, replicas: int, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Start Ray and ``livecue serve --replicas N``, search the capacity, stop both; the result and extras."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=replicas, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    signal.signal(signal.SIGTERM, _interrupt)  # after ray.init, which installs its own: stop everything as on Ctrl-C
    proc = None
    try:
        started = time.perf_counter()
        proc, url = start_server(args, replicas, ray.get_runtime_context().gcs_address, log)
        print(f"{replicas} replica(s) up in {time.perf_counter() - started:.0f} s at {url}", file=sys.stderr)
        pids = replica_pids(ray)
        jpegs = random_frames(16, seed=replicas)
        extras: list[dict[str, Any]] = []

        def measure(clients: int) -> CapacityLevel:
            wait_idle(url)
            cpu0 = {r: cpu_seconds(p) for r, p in pids.items()}
            raw = asyncio.run(level(url, clients, args, jpegs))
            cpu = sum((cpu_seconds(p) or 0.0) - (cpu0[r] or 0.0) for r, p in pids.items())
            lv = verdict(clients, raw, args, cpu)
            lv.peak_mem_mb = sum(rss_mb(p) or 0.0 for p in pids.values())  # the replicas' RSS after the level
            spread = sorted((raw["replicas"].count(r) for r in set(raw["replicas"])), reverse=True)
            extras.append({"clients": clients, "load_before": raw["load"][0], "load_after": raw["load"][1],
                           "spread": spread, "dropped": raw["dropped"], "errors": raw["errors"][:5],
                           "reply_tokens": raw["reply_tokens"]})
            print(row(lv, extras[-1]), file=sys.stderr, flush=True)
            return lv

        result = find_capacity(None, None, args.p99, fps=args.fps, seconds=args.seconds, max_streams=args.max_clients,
                               max_batch=None, measure=measure)
        return {"replicas": replicas, "url": url, "result": result.to_dict(), "extras": extras}
    finally:
        if proc is not None:
            stop_server(proc)
        ray.shutdown()


# ---- the report ----------------------------------------------------------------------------------------------------
def ms(x: float | None, aborted: bool) -> str:
    return "–" if x is None else (">= " if aborted else "") + f"{x:.0f}"


HEAD = ("| clients | per replica | frames | offered / achieved frames/s | latency p50 / p99 / max ms "
        "| backlog growth ms | replies (tokens) | replica CPU s / wall s | replicas' RSS MiB "
        "| load avg 1 min before → after | sustained |\n"
        "|---:|:---|---:|---:|---:|---:|---:|---:|---:|:---|:---|")


def row(lv: CapacityLevel, extra: dict[str, Any]) -> str:
    load = f"{extra['load_before'][0]:.2f} → {extra['load_after'][0]:.2f}"
    growth = "–" if lv.backlog_growth_ms is None else f"{lv.backlog_growth_ms:.0f}"
    return (f"| {lv.streams} | {'+'.join(map(str, extra['spread']))} | {lv.frames} | {lv.offered_fps:.0f} / "
            f"{lv.achieved_fps:.1f} | {ms(lv.p50_ms, lv.aborted)} / {ms(lv.p99_ms, lv.aborted)} / "
            f"{ms(lv.max_ms, lv.aborted)} | {growth} | {lv.replies} ({extra['reply_tokens']}) | "
            f"{lv.cpu_seconds:.1f} / {lv.seconds:.1f} | "
            f"{lv.peak_mem_mb:.0f} | {load} | {'yes' if lv.passed else 'no'}: {lv.reason} |")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    match = re.search(r"model name\s*:\s*(.+)", text)
    return match.group(1).strip() if match else platform.machine()


def ray_version() -> str:
    import ray

    return ray.__version__


def report(runs: list[dict[str, Any]], args: argparse.Namespace, command: str, wall: float) -> str:
    summary = ", ".join(f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ''}: "
                        f"{r['result']['capacity']}{'+' if r['result']['capped'] else ''} streams" for r in runs)
    lines = [f"# Cluster capacity on CPU: real-time {args.fps:g}-fps WebSocket streams held at p99 ≤ "
             f"{args.p99 * 1e3:.0f} ms, 1 vs 2 replicas (issue 20)", "",
             f"**Result: {summary}** (model `{args.model}`, p99 frame latency ≤ {args.p99 * 1e3:.0f} ms).", "",
             "```bash", command, "```", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores shared with other jobs, Python "
             f"{platform.python_version()}, Ray {ray_version()}; whole run {wall / 60:.1f} min.", "",
             f"Each level: C clients connect one after another (Ray Serve's proxy, livecue's least-sessions router), "
             f"open a session with silence events, θ = {args.threshold:g} and max_reply_tokens = "
             f"{args.max_reply_tokens}, then send {stream_frames(args.seconds, args.fps)} random 64×48 JPEG frames "
             f"each in real time ({args.seconds:g} s of stream, starts spread over one frame interval). "
             f"Latency: frame sent → first event with its `t`; the first {args.warmup} frames of each client are left "
             f"out. A level passes with no frame lost, p99 within the target and backlog growth ≤ "
             f"{BACKLOG_GROWTH:g} × target; it is aborted once p99 can no longer pass (latencies then `>=`). "
             f"The clients run in the benchmark process, on the same cores.", ""]
    for r in runs:
        res = r["result"]
        lines += [f"## {r['replicas']} replica{'s' if r['replicas'] > 1 else ''}: {res['capacity']} streams", "",
                  res["reason"], "", HEAD]
        for lv, extra in zip(res["levels"], r["extras"], strict=True):
            lines.append(row(CapacityLevel(**lv), extra))
        errors = [e for x in r["extras"] for e in x["errors"]]
        if errors:
            lines += ["", "Errors seen (first 5): " + "; ".join(errors[:5])]
        lines.append("")
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--replicas", default="1,2", help="replica counts to measure (default: %(default)s)")
    p.add_argument("--model", default="tiny")
    p.add_argument("--p99", type=float, default=0.5, help="frame-latency target, seconds (default: %(default)s)")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--seconds", type=float, default=15.0, help="stream seconds per level (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="first frames per client left out (default: %(default)s)")
    p.add_argument("--max-clients", type=int, default=32, help="highest level tried (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=64, help="--max-sessions of each replica")
    p.add_argument("--threshold", type=float, default=1.0,
                   help="θ of each session (the random tiny model's p(silence) is ~0, so any θ > 0.001 makes it "
                        "reply on every frame; default: %(default)s)")
    p.add_argument("--max-reply-tokens", type=int, default=8, help="reply length cap (default: %(default)s)")
    p.add_argument("--out", default=str(OUT), help="markdown report; the raw JSON goes beside it")
    p.add_argument("--log", default="/tmp/livecue_cluster_capacity_server.log")
    args = p.parse_args()
    try:
        counts = [int(x) for x in args.replicas.split(",")]
    except ValueError:
        p.error(f"--replicas must be comma-separated integers, got {args.replicas!r}")
    try:
        import ray
    except ImportError:
        print("cluster_capacity needs the [cluster] extra: pip install 'livecue[cluster]'", file=sys.stderr)
        return 1
    script = Path(sys.argv[0]).resolve()
    command = " ".join(["python", str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0],
                        *sys.argv[1:]])
    started, runs = time.perf_counter(), []
    for n in counts:
        print(f"== {n} replica(s)\n{HEAD}", file=sys.stderr, flush=True)
        runs.append(measure_replicas(ray, n, args, Path(args.log)))
        res = CapacityResult(**{**runs[-1]["result"], "levels": []})
        print(f"{n} replica(s): {res.capacity} streams ({res.reason})", flush=True)
    text = report(runs, args, command, time.perf_counter() - started)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "args": vars(args), "runs": runs,
                                                    "levels_extra": "load averages (1, 5, 15 min), clients per "
                                                    "replica"}, indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

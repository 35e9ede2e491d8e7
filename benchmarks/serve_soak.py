"""Soak test of `livecue serve`: N clients stream a sample video in real time for D seconds against a local server.

Measures the server process's memory (RSS over time), per-frame latency (frame sent → its first event: silence,
first reply token or answer), reply latency (frame sent → final reply/answer), drops, errors and CPU, and writes a
markdown report. Every client sends the bikes sample (looped) at the stream fps with increasing stream times and asks
a question every ``--ask-every`` seconds (staggered across clients), so answers are streamed token by token too.

With ``--session-mean S`` every client ends its session after a random time (exponential, mean S seconds) and
reconnects: with probability ``--abrupt`` it drops the TCP connection without a close handshake (often mid-reply),
otherwise it closes gracefully and waits for ``closed``; then it opens a new session after a short pause. The report
gives the server's RSS at ``--baseline`` seconds (minute 2 by default) and at the end of the run, and their growth
(the hardening target: under 5 %).

    python benchmarks/serve_soak.py --clients 16 --duration 600             # starts `livecue serve --model tiny`
    python benchmarks/serve_soak.py --clients 32 --duration 600 --session-mean 60 --abrupt 0.5 --threads 1
    python benchmarks/serve_soak.py --server http://127.0.0.1:8000 --duration 60

Traffic goes only to the loopback server it starts (or the --server given); every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ClientStats:
    sent: int = 0
    frame_latency: list[float] = field(default_factory=list)
    reply_latency: list[float] = field(default_factory=list)
    replies: int = 0
    answers: int = 0
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    closed: dict | None = None  # the last `closed` event
    watched: int = 0            # frames the server reported watched, over every completed session
    sessions: int = 0           # sessions opened
    completed: int = 0          # sessions closed gracefully (a `closed` event received)
    abrupt: int = 0             # sessions dropped without a close handshake
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (wall, frame latency)


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def sample_frames(fps: float) -> list[bytes]:
    """The bikes sample at ``fps`` as JPEG bytes (encoded once, sent by every client)."""
    from livecue.data.samples import sample_video
    from livecue.inference.sources import open_source
    from livecue.serve.images import encode_image

    with open_source(str(sample_video("bikes")), fps) as source:
        return [encode_image(frame) for _, frame in source]


async def run_session(k: int, url: str, frames: list[bytes], args: argparse.Namespace, t_end: float,
                      stats: ClientStats, rng: random.Random) -> None:
    """One session: open, stream in real time until its end (or the run's), then close gracefully or drop."""
    from livecue.client import LiveClient

    pending: dict[float, float] = {}  # frame t -> wall time sent
    sent_at: dict[float, float] = {}
    ends = min(t_end, time.monotonic() + rng.expovariate(1 / args.session_mean)) if args.session_mean else t_end
    abrupt = ends < t_end and rng.random() < args.abrupt
    client = LiveClient(url)
    await client.connect()
    try:
        await client.open(threshold=args.threshold, max_reply_tokens=args.max_reply_tokens)
        stats.sessions += 1

        async def send() -> None:
            start = time.monotonic()
            i = 0
            next_ask = args.ask_every * (k + 1) / args.clients if args.ask_every else float("inf")
            while time.monotonic() < ends:
                t = round(i / args.fps, 6)
                await asyncio.sleep(max(0.0, start + t - time.monotonic()))
                if t >= next_ask:
                    await client.ask(f"What is happening now? ({k})", at=t)
                    next_ask += args.ask_every
                now = time.monotonic()
                pending[t] = sent_at[t] = now
                await client.send_frame(frames[i % len(frames)], t)
                stats.sent += 1
                i += 1
            if abrupt:
                client.ws.transport.abort()  # gone, without a close handshake (often mid-reply)
            else:
                await client.close()

        sender = asyncio.create_task(send())
        async for ev in client:
            now = time.monotonic()
            kind, t = ev["type"], ev.get("t")
            if kind in ("silence", "reply_delta", "reply", "answer") and t in pending:
                lat = now - pending.pop(t)
                stats.frame_latency.append(lat)
                stats.timeline.append((now, lat))
            if kind in ("reply", "answer") and t in sent_at:
                stats.reply_latency.append(now - sent_at[t])
            if t is not None:
                for old in [x for x in pending if x < t]:
                    pending.pop(old)
                for old in [x for x in sent_at if x < t - 5]:
                    sent_at.pop(old)
            if kind == "reply":
                stats.replies += 1
            elif kind == "answer":
                stats.answers += 1
            elif kind == "dropped":
                stats.dropped += ev["count"]
            elif kind == "error":
                stats.errors.append(f"{ev['code']}: {ev['message']}")
            elif kind == "closed":
                stats.closed = ev
                stats.watched += ev.get("frames", 0)
                stats.completed += 1
                break
        await sender
        stats.abrupt += abrupt
    finally:
        await client.disconnect()


async def run_client(k: int, url: str, frames: list[bytes], args: argparse.Namespace, t_end: float,
                     stats: ClientStats) -> None:
    """Sessions back to back until the end of the run (one, without --session-mean)."""
    from livecue.client import ServerError

    rng = random.Random(args.seed * 1000 + k)
    while time.monotonic() < t_end:
        try:
            await run_session(k, url, frames, args, t_end, stats, rng)
        except (ServerError, ConnectionError) as e:  # e.g. `busy`: counted, then retried like a reconnect
            stats.errors.append(f"session refused: {e}")
        if not args.session_mean:
            return
        await asyncio.sleep(rng.uniform(0.1, 2.0))


async def soak(url: str, pid: int | None, args: argparse.Namespace) -> dict:
    frames = sample_frames(args.fps)
    stats = [ClientStats() for _ in range(args.clients)]
    start = time.monotonic()
    t_end = start + args.duration
    memory: list[tuple[float, float, int]] = []  # (elapsed s, RSS MB, open sessions)
    cpu0 = cpu_seconds(pid) if pid else 0.0
    rss0 = rss_mb(pid) if pid else float("nan")

    async def monitor() -> None:
        from livecue.client import LiveClient

        probe = LiveClient(url)
        while time.monotonic() < t_end + 30:
            try:
                count = (await probe.get("/sessions"))["count"]
            except Exception:  # noqa: BLE001 - keep sampling memory even if the probe fails once
                count = -1
            memory.append((time.monotonic() - start, rss_mb(pid) if pid else float("nan"), count))
            await asyncio.sleep(args.sample_every)

    mon = asyncio.create_task(monitor())
    results = await asyncio.gather(*(run_client(k, url, frames, args, t_end, stats[k]) for k in range(args.clients)),
                                   return_exceptions=True)
    wall = time.monotonic() - start
    run_end = [m for m in memory if m[0] <= args.duration]
    await asyncio.sleep(2)
    mon.cancel()
    from livecue.client import LiveClient

    after = await LiveClient(url).get("/sessions")
    base = min(memory, key=lambda m: abs(m[0] - args.baseline)) if memory else (0.0, float("nan"), -1)
    return {"stats": stats, "failures": [repr(r) for r in results if isinstance(r, BaseException)],
            "memory": memory, "wall": wall, "baseline": base, "run_end": run_end[-1] if run_end else base,
            "rss0": rss0, "rss_end": rss_mb(pid) if pid else float("nan"),
            "cpu": (cpu_seconds(pid) - cpu0) if pid else float("nan"), "sessions_after": after["count"]}


def report(res: dict, args: argparse.Namespace, command: str) -> str:
    stats: list[ClientStats] = res["stats"]
    lat = [x for s in stats for x in s.frame_latency]
    rlat = [x for s in stats for x in s.reply_latency]
    sent = sum(s.sent for s in stats)
    watched = sum(s.watched for s in stats)
    dropped = sum(s.dropped for s in stats)
    errors = [e for s in stats for e in s.errors]
    mem = res["memory"]
    rss = [m[1] for m in mem]
    growth = 100 * (res["run_end"][1] - res["baseline"][1]) / res["baseline"][1]

    def ms(x: float) -> str:
        return f"{1000 * x:.0f} ms"

    lines = [
        "# `livecue serve` soak", "",
        f"Command: `{command}`", "",
        f"- machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), shared with other "
        f"work; Python {platform.python_version()}",
        f"- model: `{args.model}`; {args.clients} clients × {args.duration:g} s at {args.fps:g} fps (the bikes sample "
        f"looped, 640×272 JPEG); θ = {args.threshold}; a question every {args.ask_every:g} s per client; "
        f"reply cap {args.max_reply_tokens or 'model default'}",
        "- sessions: " + ("one per client" if not args.session_mean else
                          f"each ends after a random time (exponential, mean {args.session_mean:g} s), then the client "
                          f"reconnects; {100 * args.abrupt:g}% of the ends drop the TCP connection without a close "
                          "handshake"),
        f"- wall time {res['wall']:.0f} s; server CPU {res['cpu']:.0f} s ({res['cpu'] / res['wall']:.2f} cores)", "",
        "| metric | value |", "| --- | --- |",
        f"| frames sent / watched (in sessions closed gracefully) / dropped | {sent} / {watched} / {dropped} "
        f"({100 * dropped / max(1, sent):.1f}% dropped) |",
        f"| per-frame latency p50 / p90 / p99 / max | {ms(percentile(lat, 50))} / {ms(percentile(lat, 90))} / "
        f"{ms(percentile(lat, 99))} / {ms(max(lat) if lat else float('nan'))} |",
        f"| reply/answer latency p50 / p99 (frame sent → final text) | {ms(percentile(rlat, 50))} / "
        f"{ms(percentile(rlat, 99))} |",
        f"| replies / answers | {sum(s.replies for s in stats)} / {sum(s.answers for s in stats)} |",
        f"| error events / client failures | {len(errors)} / {len(res['failures'])} |",
        f"| server RSS: before clients / min / max / end of run / after all closed | {res['rss0']:.0f} / "
        f"{min(rss):.0f} / {max(rss):.0f} / {rss[-1]:.0f} / {res['rss_end']:.0f} MB |",
        f"| sessions open after the run | {res['sessions_after']} |",
        f"| sessions opened / closed gracefully (`closed` received) / dropped abruptly | "
        f"{sum(s.sessions for s in stats)} / {sum(s.completed for s in stats)} / {sum(s.abrupt for s in stats)} |",
        f"| server RSS at {res['baseline'][0]:.0f} s → end of run ({res['run_end'][0]:.0f} s) | "
        f"{res['baseline'][1]:.0f} → {res['run_end'][1]:.0f} MB: **{growth:+.1f} %** "
        f"({'under' if growth < 5 else 'NOT under'} the 5 % target) |", "",
        "Per minute (latency of the frames answered in that minute; RSS at its end):", "",
        "| minute | frames answered | latency p50 | latency p99 | RSS MB | open sessions |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    t0 = min((t for s in stats for t, _ in s.timeline), default=0.0)
    for minute in range(int(res["wall"] // 60) + 1):
        xs = [lat for s in stats for t, lat in s.timeline if minute * 60 <= t - t0 < (minute + 1) * 60]
        at = [m for m in mem if m[0] <= (minute + 1) * 60]
        if xs:
            lines.append(f"| {minute + 1} | {len(xs)} | {ms(percentile(xs, 50))} | {ms(percentile(xs, 99))} | "
                         f"{at[-1][1]:.0f} | {at[-1][2]} |")
    if errors or res["failures"]:
        lines += ["", "Errors (first 10):", ""] + [f"- {e}" for e in (errors + res["failures"])[:10]]
    return "\n".join(lines) + "\n"


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "livecue.cli", "serve", "--model", args.model, "--port", "0", "--max-sessions",
           str(args.clients + 8), "--log-level", "warning"] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(args.server_log, "w"), text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"livecue serve did not start: {line!r}")
    return proc, match.group(1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=600.0, help="seconds")
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--model", default="tiny")
    p.add_argument("--threshold", type=float, default=0.0, help="θ (the random tiny model speaks at any θ > 0.001, "
                                                                "so 0 = speak only when asked)")
    p.add_argument("--ask-every", type=float, default=6.0, help="seconds between questions of one client (0: none)")
    p.add_argument("--max-reply-tokens", type=int, default=None)
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    p.add_argument("--session-mean", type=float, default=0.0,
                   help="mean session length in seconds before a random disconnect/reconnect (0: one session)")
    p.add_argument("--abrupt", type=float, default=0.5,
                   help="share of session ends that drop the connection without a close handshake")
    p.add_argument("--baseline", type=float, default=120.0, help="RSS growth is measured from this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="model threads of the server it starts")
    p.add_argument("--server", default=None, help="use this running server instead of starting one")
    p.add_argument("--server-log", default="/tmp/livecue_soak_server.log")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_soak.md"))
    args = p.parse_args()
    command = "python benchmarks/serve_soak.py " + " ".join(sys.argv[1:])
    proc = None
    url = args.server
    if url is None:
        proc, url = start_server(args)
    try:
        time.sleep(1.0)
        res = asyncio.run(soak(url, proc.pid if proc else None, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
    text = report(res, args, command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

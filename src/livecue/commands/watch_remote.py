"""``livecue watch SOURCE --server URL``: feed any source to a remote ``livecue serve`` and print its events.

The model runs on the server; this side only decodes the source and sends JPEG frames. The stream options of the
command line (``--threshold``, ``--fps``, ``--system``, sampling ...) go to the server in ``open``, by the same
names; ``--memory`` is the server's own. A file or image folder is
sent with flow control (at most the server's queue size of frames in flight), so no frame is dropped and the run
goes as fast as the server allows, like local ``watch``; with ``--realtime`` a file is paced to its stream clock.
Live sources (webcam, RTSP, …) are sent as they are captured and the server drops frames if it falls behind.
Each ``--query`` is sent just before the first frame at or after its time (the server keeps only a few queries
waiting per session, ``max_pending_queries``); those after the last frame are sent before the close and answered
at it, as locally.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any, TextIO

from ..inference.options import StreamOptions
from ..inference.stats import StreamStats
from .display import format_event, format_summary
from .world_notice import notify_world_only


class _Flow:
    """Frames in flight: sent but not yet answered by an event at or after their time."""

    def __init__(self, window: int) -> None:
        self.window = max(1, window)
        self.sent: list[float] = []
        self.acked = float("-inf")
        self.changed = asyncio.Event()

    def ack(self, ev: dict[str, Any]) -> None:
        if ev.get("type") in ("silence", "reply", "answer", "dropped", "error") and ev.get("t") is not None:
            self.acked = max(self.acked, float(ev["t"]))
            self.sent = [t for t in self.sent if t > self.acked]
            self.changed.set()

    async def wait_room(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent) >= self.window and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break


async def _stream(args: argparse.Namespace, options: StreamOptions,
                  jsonl: TextIO | None) -> tuple[dict[str, Any] | None, int, str | None]:
    from ..client import LiveClient, ServerError
    from ..data.samples import resolve as resolve_sample
    from ..inference.sources import open_source

    client = LiveClient(args.server, token=args.token or os.environ.get("LIVECUE_TOKEN"))
    await client.connect()
    failure: str | None = None
    sent = 0
    try:
        try:
            ready = await client.open(**options.to_dict())
        except ServerError as e:
            raise ValueError(f"the server refused the session: {e}") from None
        fps = float(ready["fps"])
        source = open_source(resolve_sample(args.source), fps, max_frames=args.max_frames)
        live = bool(getattr(source, "live", False))
        print(f"watching {getattr(source, 'name', args.source)} at {fps:g} fps with {ready['model']} on {client.url} "
              f"(session {ready['session']}, θ = {ready['threshold']:g})"
              f"{' in real time' if args.realtime or live else ''}", flush=True)
        notify_world_only("livecue watch", str(ready["model"]), resolve_sample(args.source))
        queries = sorted(((args.at[i] if i < len(args.at) else 0.0, i, text) for i, text in enumerate(args.query)),
                         reverse=True)  # popped from the end: earliest first
        flow = _Flow(int(ready.get("queue_size", 4)))

        async def ask_until(t: float) -> None:
            while queries and queries[-1][0] <= t:
                at, _, text = queries.pop()
                await client.ask(text, at=at)

        async def send() -> None:
            nonlocal sent, failure
            frames = iter(source)
            start = time.monotonic()
            try:
                while (item := await asyncio.to_thread(next, frames, None)) is not None:
                    t, frame = item
                    if args.realtime and not live:
                        await asyncio.sleep(max(0.0, start + float(t) - time.monotonic()))
                    elif not live:
                        await flow.wait_room()
                    await ask_until(float(t))
                    flow.sent.append(float(t))
                    await client.send_frame(frame, float(t))
                    sent += 1
            except (ValueError, OSError) as e:  # the source failed mid-stream: close what was sent
                failure = str(e)
            finally:
                source.close()
                with contextlib.suppress(Exception):  # the server may already be gone
                    await ask_until(float("inf"))
                    await client.close()

        sender = asyncio.create_task(send())
        async for ev in client:
            flow.ack(ev)
            if jsonl is not None and ev["type"] not in ("reply_delta", "ready"):
                jsonl.write(json.dumps(ev, ensure_ascii=False) + "\n")
            line = format_event(ev)
            if line:
                print(line, flush=True)
            if ev["type"] == "closed":
                break
        await sender
    finally:
        await client.disconnect()
    return client.closed, sent, failure


def watch_remote(args: argparse.Namespace, options: StreamOptions, jsonl: TextIO | None) -> int:
    """Run ``livecue watch --server`` with the stream ``options`` (sent in ``open``); returns the exit code."""
    start = time.perf_counter()
    interrupted = False
    closed, sent, failure = None, 0, None
    try:
        closed, sent, failure = asyncio.run(_stream(args, options, jsonl))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if jsonl is not None:
            jsonl.close()
    stats = StreamStats.from_dict(closed or {}, started=start, ended=time.perf_counter())  # the server's counts
    print(format_summary(stats, interrupted=interrupted, sent=sent, jsonl=args.jsonl), flush=True)
    if failure is not None:
        print(f"livecue watch: error: {failure}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0

"""``livecue serve``: many live streams over WebSocket from one process and one model, plus a live web page.

Open http://HOST:PORT/ in a browser for the webcam page; programs use the WebSocket protocol (docs/protocol.md),
e.g. through ``livecue.client`` or ``livecue watch SOURCE --server URL``. Listening on an address other than
loopback needs a token (``--token`` or ``LIVECUE_TOKEN``).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys

from ._common import add_model_argument, load_from_args, parser, split_overrides


def build_parser() -> argparse.ArgumentParser:
    p = parser("serve", "Serve a model to many live streams (WebSocket protocol + a live web page).")
    add_model_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                                                       "only; any other address needs --token)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port; default: %(default)s)")
    p.add_argument("--token", default=os.environ.get("LIVECUE_TOKEN"),
                   help="clients must send this token (Authorization: Bearer, or ?token=); default $LIVECUE_TOKEN")
    p.add_argument("--max-sessions", type=int, default=16, help="streams open at once (default: %(default)s)")
    p.add_argument("--fps", type=float, default=None, help="default stream fps of a session (default: the model's)")
    p.add_argument("--queue-size", type=int, default=4,
                   help="frames waiting per session; when full the oldest is dropped (default: %(default)s)")
    p.add_argument("--max-frame-bytes", type=int, default=2 * 2**20, help="largest JPEG/PNG frame, bytes")
    p.add_argument("--max-pixels", type=int, default=1920 * 1080, help="largest frame, width x height")
    p.add_argument("--max-rate", type=float, default=50.0, help="messages per second per connection")
    p.add_argument("--max-session-frames", type=int, default=None, help="close a session after this many frames")
    p.add_argument("--max-context-tokens", type=int, default=None,
                   help="bound each stream's KV cache: attention sink + sliding window of this many tokens (about "
                        "11 per frame for live1+); default: unbounded (memory and per-frame cost grow with the stream)")
    p.add_argument("--temperature", type=float, default=0.0, help="reply sampling temperature (0 = greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads for the model worker (default on CPU: cores - 1, at least 1, leaving "
                        "a core to the network and frame decoding; oversubscribed cores slow every step)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = any free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str]) -> int:
    argv, overrides = split_overrides(argv)
    args = build_parser().parse_args(argv)
    if not is_loopback(args.host) and not args.token:
        raise ValueError(f"refusing to listen on {args.host!r} without a token: that address can be reached from "
                         f"other machines, which could then use the model. Pass --token SECRET (or set "
                         f"LIVECUE_TOKEN), or listen on 127.0.0.1")
    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be positive, got {args.fps}")
    try:
        import uvicorn
    except ImportError:
        raise ImportError("livecue serve needs the [serve] extra: pip install 'livecue[serve]'") from None

    from ..inference.decide import SamplingConfig
    from ..serve.app import create_app
    from ..serve.protocol import Limits

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads or str(args.device or "cpu").startswith("cpu"):
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    limits = Limits(max_frame_bytes=args.max_frame_bytes, max_message_bytes=max(3 * 2**20, args.max_frame_bytes * 2),
                    max_pixels=args.max_pixels, max_rate=args.max_rate, queue_size=args.queue_size,
                    max_session_frames=args.max_session_frames, max_burst=max(1, int(args.max_rate * 2)))
    model, tokenizer = load_from_args(args, overrides)
    memory = None
    if args.max_context_tokens is not None:
        from ..inference.memory import SinkWindow

        memory = SinkWindow(args.max_context_tokens, chunk=min(256, args.max_context_tokens // 4))
    app = create_app(model, tokenizer, max_sessions=args.max_sessions, token=args.token, limits=limits, fps=args.fps,
                     sampling=SamplingConfig(args.temperature, args.top_p), name=str(args.adapter or args.model),
                     memory=memory)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"livecue serve: {args.adapter or args.model} on http://{shown}:{port}/ (WebSocket /ws, at most "
          f"{args.max_sessions} sessions, {torch.get_num_threads()} model thread(s)"
          f"{', token required' if args.token else ''})",
          flush=True)
    # a message beyond the WebSocket size limit closes the connection (1009); below it the app answers `too_large`
    config = uvicorn.Config(app, log_level=args.log_level, ws_max_size=limits.max_message_bytes * 2,
                            ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

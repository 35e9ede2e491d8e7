"""``livecue serve``: many live streams over WebSocket from one process and one model, plus a live web page.

Open http://HOST:PORT/ in a browser for the webcam page; programs use the WebSocket protocol (docs/protocol.md),
e.g. through ``livecue.client`` or ``livecue watch SOURCE --server URL``. Listening on an address other than
loopback needs a token (``--token`` or ``LIVECUE_TOKEN``).

Every start option is checked before the model loads: numbers must be finite and in the range their help states
(``--fps nan``, ``--max-rate inf``, ``--max-pixels -1``, ``--queue-size 0`` are refused with one line naming the
option). The stream options (``--threshold``, ``--fps``, ``--system``, ``--max-reply-tokens``, sampling, ``--memory``)
are every front door's (:data:`~livecue.inference.options.OPTIONS`): here they are each session's defaults, which a
client's ``open`` overrides (all but ``--memory``, default ``sink:4096``). The defaults give exactly
:class:`~livecue.serve.protocol.Limits` and :class:`~livecue.serve.protocol.ServerLimits` (docs/protocol.md lists
them; a test keeps all three equal).

``--replicas N`` (or ``--address``, ``--autoscale``, ``--ray-config``) serves the same app from N Ray Serve replicas
instead (:mod:`livecue.commands.serve_cluster`, docs/cluster.md); Ray is imported only then.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import socket
import sys

from ..inference.options import OPTIONS, FastPath, StreamOptions
from ..serve.app import DEFAULT_MEMORY_SPEC
from ..serve.protocol import Limits, ServerLimits
from ..serve.security import check_origin, redact_logs
from . import serve_cluster
from ._common import (
    MAX_INT,
    add_model_argument,
    check_model_args,
    int_range,
    load_from_args,
    parser,
    positive_float,
    positive_int,
    split_overrides,
)

_L, _S = Limits(), ServerLimits()
MIN_MESSAGE_BYTES = _L.max_message_bytes  # 3 MiB: the message limit is never below this ...
# ... and always holds a base64 JSON frame of --max-frame-bytes (4/3 of it) plus room for its JSON
_CHECKS = {
    "port": int_range(0, 65535), "max_sessions": positive_int(4096),
    "queue_size": positive_int(256), "max_frame_bytes": positive_int(256 * 2**20),
    "max_message_bytes": positive_int(512 * 2**20), "max_pixels": positive_int(8192 * 8192),
    "max_rate": positive_float(10_000.0), "max_session_frames": positive_int(MAX_INT),
    "max_context_tokens": positive_int(2**24), "threads": positive_int(1024),
    "max_pending_queries": positive_int(1024), "max_query_tokens": positive_int(2**20),
    "query_token_rate": positive_float(100_000.0), "open_timeout": positive_float(3600.0),
    "idle_timeout": positive_float(7 * 24 * 3600.0), "header_timeout": positive_float(3600.0),
    "max_connections": positive_int(65535), "max_sockets": positive_int(65535), "decode_threads": positive_int(64),
}


def _num(p: argparse.ArgumentParser, flag: str, default: object, help_: str, **kw: object) -> None:
    dest = flag[2:].replace("-", "_")
    check = _CHECKS[dest]
    shown = "" if default is None else "; default: %(default)s"
    p.add_argument(flag, type=check, default=default, help=f"{help_} ({check.range}{shown})", **kw)


def build_parser() -> argparse.ArgumentParser:
    p = parser("serve", "Serve a model to many live streams (WebSocket protocol + a live web page).")
    add_model_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                                                       "only; any other address needs --token)")
    _num(p, "--port", 8000, "port (0: any free port)")
    p.add_argument("--token", default=os.environ.get("LIVECUE_TOKEN") or None,
                   help="clients must send this token (Authorization: Bearer, or the WebSocket subprotocol "
                        "livecue.token.TOKEN); default $LIVECUE_TOKEN")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a browser origin allowed to open /ws besides the server's own pages, e.g. "
                        "https://example.org (repeatable; '*' allows any)")
    _num(p, "--max-sessions", 16, "streams open at once")
    StreamOptions.add_arguments(p, defaults={"memory": DEFAULT_MEMORY_SPEC})
    FastPath.add_arguments(p)
    _num(p, "--queue-size", _L.queue_size, "frames waiting per session; when full the oldest is dropped")
    _num(p, "--max-frame-bytes", _L.max_frame_bytes, "largest JPEG/PNG/WebP frame, bytes")
    _num(p, "--max-message-bytes", None, "largest WebSocket message (default: the larger of 3 MiB and what a base64 "
                                         "JSON frame of --max-frame-bytes needs)")
    _num(p, "--max-pixels", _L.max_pixels, "largest frame, width x height")
    _num(p, "--max-rate", _L.max_rate, "messages per second per connection (burst: twice as many)")
    _num(p, "--max-session-frames", None, "close a session after this many frames (default: never)")
    _num(p, "--max-pending-queries", _L.max_pending_queries, "queries waiting per session")
    _num(p, "--max-query-tokens", _L.max_query_tokens, "query tokens one session may send at once")
    _num(p, "--query-token-rate", _L.query_token_rate, "query tokens per second per session, sustained")
    _num(p, "--max-context-tokens", None, "deprecated: --memory sink:N")
    _num(p, "--open-timeout", _L.open_timeout, "seconds a new WebSocket has to send 'open'")
    _num(p, "--idle-timeout", _L.idle_timeout, "close a session after this many seconds without a message")
    _num(p, "--header-timeout", _S.header_timeout, "seconds an HTTP connection has to send its request head")
    _num(p, "--max-connections", _S.max_connections, "WebSocket connections at once")
    _num(p, "--max-sockets", _S.max_sockets, "TCP connections at once; past it the longest-waiting connection "
                                             "without a complete request is dropped")
    _num(p, "--decode-threads", _S.decode_workers, "images decoded at once")
    _num(p, "--threads", None, "torch intra-op threads for the model worker (default on CPU: cores - 1, at least 1, "
                               "leaving a core to the network and frame decoding)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve_cluster.add_arguments(p)
    return p


def message_bytes(max_frame_bytes: int) -> int:
    """The default message limit for a frame limit: at least 3 MiB, and room for a base64 JSON frame of it."""
    return max(MIN_MESSAGE_BYTES, math.ceil(max_frame_bytes * 4 / 3) + 64 * 1024)


def limits_from_args(args: argparse.Namespace) -> tuple[Limits, ServerLimits]:
    """The server's limits from its options (the defaults give ``Limits()`` and ``ServerLimits()``)."""
    msg_bytes = args.max_message_bytes or message_bytes(args.max_frame_bytes)
    if msg_bytes < args.max_frame_bytes + 8:
        raise ValueError(f"--max-message-bytes {msg_bytes} cannot hold a frame of --max-frame-bytes "
                         f"{args.max_frame_bytes} (+ 8 bytes of time): raise it or lower --max-frame-bytes")
    limits = Limits(max_frame_bytes=args.max_frame_bytes, max_message_bytes=msg_bytes, max_pixels=args.max_pixels,
                    max_rate=args.max_rate, max_burst=max(1, int(args.max_rate * 2)), queue_size=args.queue_size,
                    max_session_frames=args.max_session_frames, max_pending_queries=args.max_pending_queries,
                    max_query_tokens=args.max_query_tokens, query_token_rate=args.query_token_rate,
                    open_timeout=args.open_timeout, idle_timeout=args.idle_timeout)
    server = ServerLimits(max_connections=args.max_connections, max_sockets=args.max_sockets,
                          header_timeout=args.header_timeout, decode_workers=args.decode_threads)
    return limits, server


def memory_from_args(args: argparse.Namespace):
    """The sessions' memory policy: ``--memory`` (default ``sink:4096``), or the deprecated ``--max-context-tokens
    N``, which stands for ``--memory sink:N`` (one warning line says so)."""
    if args.max_context_tokens is not None:
        if args.memory != DEFAULT_MEMORY_SPEC:
            raise ValueError("--memory and --max-context-tokens both set the memory policy: pass --memory only "
                             "(--max-context-tokens N is the deprecated spelling of --memory sink:N)")
        args.memory = OPTIONS["memory"].check(f"sink:{args.max_context_tokens}")
        args.max_context_tokens = None
        print(f"livecue serve: warning: --max-context-tokens is deprecated: use --memory {args.memory}",
              file=sys.stderr)
    return StreamOptions(memory=args.memory).memory_policy()


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
    except (OSError, OverflowError) as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def free_port(host: str, port: int) -> int:
    """``port`` if host:port can be listened on now (0: a free port), for a server that binds it itself (Ray Serve's
    proxy); OSError naming the address otherwise."""
    with bind(host, port) as sock:
        return sock.getsockname()[1]


def check_args(args: argparse.Namespace) -> None:
    """Cross-option checks (each value was range-checked by argparse); ValueError naming the option."""
    if not is_loopback(args.host) and not args.token:
        raise ValueError(f"refusing to listen on {args.host!r} without a token: that address can be reached from "
                         f"other machines, which could then use the model. Pass --token SECRET (or set "
                         f"LIVECUE_TOKEN), or listen on 127.0.0.1")
    if args.token is not None and (not args.token.strip() or any(c.isspace() or ord(c) < 32 for c in args.token)):
        raise ValueError("--token must be a non-empty string without spaces or control characters (e.g. "
                         "openssl rand -hex 16)")
    args.allow_origin = [check_origin(o) for o in args.allow_origin]


def parse(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace, list[str], Limits, ServerLimits,
                                   StreamOptions, FastPath]:
    """The command's options, checked (one line naming the option otherwise): ``(parser, args, overrides, limits,
    server limits, stream options, fast path)``."""
    argv, overrides = split_overrides(argv)
    p = build_parser()
    args = p.parse_args(argv)
    check_args(args)
    limits, server_limits = limits_from_args(args)
    if (over := limits.over_limit(StreamOptions.from_args(args))) is not None:  # a client's caps hold here too
        name, message = over
        p.error(f"{OPTIONS[name].flag} {message}")  # one line, exit 2, as argparse's own
    memory_from_args(args)  # the deprecated --max-context-tokens becomes --memory (with a warning)
    return p, args, overrides, limits, server_limits, StreamOptions.from_args(args), FastPath.from_args(args)


def cluster_app(builder_args: dict) -> object:
    """The Ray Serve application builder of ``livecue serve --ray-config`` files: ``args: {argv: [...]}`` holds
    ``livecue serve`` options (checked as on the command line; the token comes from ``LIVECUE_TOKEN``)."""
    from ..serve.cluster import application

    argv = builder_args.get("argv") if isinstance(builder_args, dict) else None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"the livecue builder takes args: {{argv: [livecue serve options]}}, got {builder_args!r}")
    p, args, overrides, limits, server_limits, options, fast = parse(argv)
    spec = serve_cluster.spec_from_args(args, overrides, options, fast, limits, server_limits,
                                        loopback_only=is_loopback(args.host))
    from ..serve.cluster_run import plan

    spec, cluster = plan(spec, serve_cluster.cluster_from_args(args), gpus_given=args.num_gpus_per_replica is not None,
                         resources=None)
    return application(spec, cluster)


def main(argv: list[str]) -> int:
    p, args, overrides, limits, server_limits, options, fast = parse(argv)
    if serve_cluster.wanted(args):
        return serve_cluster.run(p, args, overrides, options, fast, limits, server_limits, argv,
                                 loopback_only=is_loopback(args.host),
                                 free_port=lambda: free_port(args.host, args.port))
    check_model_args(args)  # --model path exists, --device available (auto resolved): before the model loads
    try:
        import uvicorn
    except ImportError:
        raise ImportError("livecue serve needs the [serve] extra: pip install 'livecue[serve]'") from None

    from ..serve.app import create_app
    from ..serve.net import ensure_file_limit, http_protocol_kwargs

    ensure_file_limit(server_limits.max_sockets)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads or args.device.startswith("cpu"):
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    sock = bind(args.host, args.port)
    model, tokenizer = load_from_args(args, overrides)
    app = create_app(model, tokenizer, options=options, max_sessions=args.max_sessions, token=args.token,
                     limits=limits, name=str(args.adapter or args.model), server_limits=server_limits,
                     loopback_only=is_loopback(args.host), allow_origins=args.allow_origin, fast=fast)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"livecue serve: {args.adapter or args.model} on http://{shown}:{port}/ (WebSocket /ws, at most "
          f"{args.max_sessions} sessions, {torch.get_num_threads()} model thread(s)"
          f"{', token required' if args.token else ''})",
          flush=True)
    # a message beyond the WebSocket size limit closes the connection (1009); below it the app answers `too_large`
    config = uvicorn.Config(app, log_level=args.log_level, ws_max_size=limits.max_message_bytes * 2,
                            ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=5,
                            **http_protocol_kwargs(server_limits.header_timeout, server_limits.max_sockets))
    redact_logs(args.token)  # uvicorn.Config has just configured its loggers
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

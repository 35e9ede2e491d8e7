"""The livecue server: one FastAPI app, one loaded model, many live streams.

Routes:

* ``GET /`` — the live web page (webcam or local video file → the model, replies on a timeline and over the video);
  ``/static/*`` its script and style.
* ``WS /ws`` — the streaming protocol (docs/protocol.md; :mod:`livecue.serve.protocol`).
* ``GET /health`` — liveness and load; ``GET /version`` — versions and protocol; ``GET /model`` — the model's
  layout and stream defaults; ``GET /sessions`` — the active sessions; ``GET /metrics`` — Prometheus metrics
  (:mod:`livecue.serve.metrics`).

With a ``token``, ``/ws``, ``/model``, ``/sessions`` and ``/metrics`` need it (``Authorization: Bearer TOKEN``, on
``/ws`` also the subprotocol ``livecue.token.TOKEN`` that browsers can send, or ``?token=TOKEN``; see
:mod:`livecue.serve.security`);
the page, ``/health`` and ``/version`` stay public. ``livecue serve`` refuses to listen on a non-loopback address
without a token. A loopback server answers only requests whose Host is a loopback name with its port, and ``/ws``
accepts browser pages of its own origin (plus ``allow_origins``) only. There is no ``/docs``, ``/redoc`` or
``/openapi.json``: docs/protocol.md is the reference.

The server's stream options (:class:`~livecue.inference.options.StreamOptions`: θ, fps, system prompt, reply cap,
sampling, memory) are every session's defaults; a client's ``open`` overrides them option by option, except the
memory policy, which is the server's. Every session's memory is bounded by default (:data:`DEFAULT_MEMORY`: an
attention sink + a sliding window of 4096 tokens); ``StreamOptions(memory="unbounded")`` keeps whole streams, as
upstream does.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations, whose types are imported locally

import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from ..inference.memory import parse_memory
from ..inference.options import FastPath, StreamOptions
from .protocol import PROTOCOL_VERSION, Limits, ServerLimits, error_event, event
from .security import SUBPROTOCOL, Guard, offered_subprotocols, redact_logs, token_ok

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MEMORY_SPEC = "sink:4096"  # about 6 minutes of a live1+ stream at 2 fps (11 tokens a frame)
DEFAULT_MEMORY = parse_memory(DEFAULT_MEMORY_SPEC)  # SinkWindow(4096, chunk=256)


def _vlm_info(cfg: Any) -> dict[str, Any]:
    """``GET /model``'s parts of a VLM base: the model (hub id / directory or random family) and its frame size."""
    name = cfg.vlm.name_or_path or f"random {cfg.vlm.family or (cfg.vlm.random_init or {}).get('model_type')}"
    return {"vlm": {"name": name, "family": cfg.vlm.family, "resolution": cfg.vlm.frame_resolution}}


def model_info(model: Any, name: str) -> dict[str, Any]:
    """What ``GET /model`` reports: the model's parts, layout and stream defaults."""
    cfg = model.cfg
    params = sum(p.numel() for p in model.parameters())
    return {
        "name": name,
        "config": cfg.name,
        "parameters": params,
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "architecture": cfg.architecture,
        **(_vlm_info(cfg) if cfg.is_vlm else {
            "lm": cfg.lm.name_or_path or (f"random {cfg.lm.random_init.get('model_type')}" if cfg.lm.random_init
                                          else None),
            "vision": {"kind": cfg.vision.kind, "name": cfg.vision.name_or_path, "resolution": cfg.vision.resolution}}),
        "frame_num_tokens": cfg.frame_num_tokens,
        "stream": {"fps": cfg.stream.fps, "threshold": cfg.stream.threshold,
                   "max_reply_tokens": cfg.stream.max_reply_tokens, "system_prompt": cfg.stream.system_prompt},
    }


def create_app(model: Any, tokenizer: Any, *, options: StreamOptions | None = None, max_sessions: int = 16,
               token: str | None = None, limits: Limits | None = None, fps: float | None = None,
               sampling: Any = None, name: str | None = None, max_batch: int = 16, memory: Any = None,
               server_limits: ServerLimits | None = None, loopback_only: bool = False,
               allow_origins: Iterable[str] = (), fast: FastPath | None = None, replica: str | None = None) -> Any:
    """Build the FastAPI app serving ``model`` to many streams.

    Args:
        model: a loaded :class:`~livecue.model.live.LiveModel` (shared by every session).
        tokenizer: its tokenizer.
        options: the server's stream options, every session's defaults (unset: the model's ``stream.*``, greedy
            replies, :data:`DEFAULT_MEMORY`); a client's ``open`` overrides all but ``memory``.
        max_sessions: sessions open at once; more are refused with a ``busy`` error.
        token: require this token on ``/ws``, ``/model``, ``/sessions``, ``/metrics`` (None: no auth; loopback
            only). A Prometheus scrape job sends it with ``authorization: {credentials: TOKEN}``.
        limits: per-connection limits and timeouts (:class:`~livecue.serve.protocol.Limits`).
        fps: the default stream fps (replaces ``options.fps``).
        sampling: reply decoding (a :class:`~livecue.inference.options.SamplingConfig`; replaces the sampling
            of ``options``).
        name: the model's name in ``/model`` and ``ready`` (default: its config name).
        max_batch: frames of at most this many sessions are stepped per scheduler round.
        memory: the sessions' memory policy object (replaces ``options.memory``; default :data:`DEFAULT_MEMORY`, a
            bounded sink + sliding window; ``Unbounded()`` keeps whole streams).
        server_limits: server-wide caps (:class:`~livecue.serve.protocol.ServerLimits`: WebSocket connections,
            decode workers; the socket cap and header timeout are the HTTP protocol's, see
            :mod:`livecue.serve.net`).
        loopback_only: answer only requests whose Host is a loopback name/address with the server's port (set it
            when listening on a loopback address).
        allow_origins: browser origins allowed on ``/ws`` besides the server's own (``"*"``: any).
        fast: the engine's fast path (``--compile``, ``--kv-pool``; :class:`~livecue.inference.options.FastPath`).
        replica: the replica's id (``livecue serve --replicas N``): a ``replica`` label on every metric.

    Returns:
        The app; ``app.state.scheduler`` is its :class:`~livecue.serve.scheduler.Scheduler`, ``app.state.metrics``
        its :class:`~livecue.serve.metrics.ServeMetrics`.
    """
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles

        from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"livecue serve needs the [serve] extra: pip install 'livecue[serve]' ({e})") from None

    from ..inference.engine import StreamEngine  # torch: loaded with the model, not with `livecue serve --help`
    from .connection import Connection
    from .images import DecodePool
    from .scheduler import Scheduler, describe_memory

    limits = limits or Limits()
    server_limits = server_limits or ServerLimits()
    name = name or model.cfg.name
    options = (options or StreamOptions()).merged(StreamOptions(fps=fps))
    if fast is not None and fast.pooled and fast.pool_slots == FastPath().pool_slots:
        fast = dataclasses.replace(fast, pool_slots=max_sessions)  # a slot per session: the pool never grows slots
    engine = StreamEngine(model, tokenizer, options, sampling=sampling,
                          memory=options.memory_policy(DEFAULT_MEMORY) if memory is None else memory, fast=fast)
    scheduler = Scheduler(engine, limits=limits, max_sessions=max_sessions, max_batch=max_batch)
    decoder = DecodePool(server_limits.decode_workers)
    info = model_info(model, name)
    redact_logs(token)
    connections: set[Any] = set()
    metrics = ServeMetrics(scheduler, connections, replica=replica)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        redact_logs(token)  # again: the server's logging setup may have replaced the loggers' configuration
        scheduler.start()
        log.info("serving %s to at most %d sessions", name, max_sessions)
        yield
        scheduler.stop()
        decoder.close()

    app = FastAPI(title="livecue", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Online video LLM server (docs/protocol.md).")
    app.state.scheduler = scheduler
    app.state.limits = limits
    app.state.server_limits = server_limits
    app.state.decoder = decoder
    app.state.connections = connections
    app.state.metrics = metrics
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Guard, loopback_only=loopback_only, allow_origins=list(allow_origins))

    def unauthorized() -> Any:
        return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN'"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(scheduler.sessions), "max_sessions": max_sessions,
                "connections": len(connections), "max_connections": server_limits.max_connections}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        import fastapi
        import torch
        import transformers

        return {"livecue": __version__, "protocol": PROTOCOL_VERSION, "torch": torch.__version__,
                "transformers": transformers.__version__, "fastapi": fastapi.__version__}

    @app.get("/model")
    async def model_route(request: Request) -> Any:
        if not token_ok(token, request.headers, request.query_params):
            return unauthorized()
        return {**info, "default_fps": scheduler.fps, "memory": describe_memory(engine.memory), "auth": bool(token)}

    @app.get("/sessions")
    async def sessions(request: Request) -> Any:
        if not token_ok(token, request.headers, request.query_params):
            return unauthorized()
        return {"count": len(scheduler.sessions), "max_sessions": max_sessions, "sessions": scheduler.snapshot()}

    @app.get("/metrics")
    async def metrics_route(request: Request) -> Any:
        if not token_ok(token, request.headers, request.query_params):
            return unauthorized()
        peers = await metrics.peers() if metrics.peers is not None else None  # --replicas: the others' too
        return Response(metrics.render(peers), media_type=CONTENT_TYPE_LATEST)

    @app.websocket("/ws")
    async def ws_route(ws: WebSocket) -> None:
        # never echo the token subprotocol: select plain "livecue" when offered (browsers need one selected)
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(ws.headers) else None)
        if len(connections) >= server_limits.max_connections:
            metrics.error("busy")
            await _refuse(ws, "busy", f"the server is full: {len(connections)} connections are open (the limit is "
                                      f"{server_limits.max_connections}); try again later", 1013)
            return
        if not token_ok(token, ws.headers, ws.query_params):
            metrics.error("unauthorized")
            await _refuse(ws, "unauthorized", "missing or wrong token: send an 'Authorization: Bearer TOKEN' header "
                                              "or the WebSocket subprotocol 'livecue.token.TOKEN'", 4401)
            return
        scheduler.start()
        connection = Connection(ws, scheduler, limits, name, decoder, metrics)
        connections.add(connection)
        try:
            await connection.run()
        finally:
            connections.discard(connection)

    return app


async def _refuse(ws: Any, code: str, message: str, close_code: int) -> None:
    """An ``error`` event, ``closed``, then close the WebSocket with ``close_code``."""
    with contextlib.suppress(Exception):  # the client may be gone already
        await ws.send_json(error_event(code, message))
        await ws.send_json(event("closed", None, reason=code))
        await ws.close(code=close_code, reason=code)

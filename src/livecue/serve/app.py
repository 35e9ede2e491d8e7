"""The livecue server: one FastAPI app, one loaded model, many live streams.

Routes:

* ``GET /`` — the live web page (webcam or local video file → the model, replies on a timeline and over the video);
  ``/static/*`` its script and style.
* ``WS /ws`` — the streaming protocol (docs/protocol.md; :mod:`livecue.serve.protocol`).
* ``GET /health`` — liveness and load; ``GET /version`` — versions and protocol; ``GET /model`` — the model's
  layout and stream defaults; ``GET /sessions`` — the active sessions.

With a ``token``, ``/ws``, ``/model`` and ``/sessions`` need it (``Authorization: Bearer TOKEN`` or ``?token=TOKEN``;
browsers cannot set WebSocket headers, so the page passes ``?token=``); the page, ``/health`` and ``/version`` stay
public. ``livecue serve`` refuses to listen on a non-loopback address without a token.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations, whose types are imported locally

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .protocol import PROTOCOL_VERSION, Limits, error_event, event

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def _check_token(expected: str | None, headers: Any, query: Any) -> bool:
    """Whether a request carries the server token (always true when the server has none)."""
    if not expected:
        return True
    given = query.get("token")
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


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
        "lm": cfg.lm.name_or_path or (f"random {cfg.lm.random_init.get('model_type')}" if cfg.lm.random_init
                                      else None),
        "vision": {"kind": cfg.vision.kind, "name": cfg.vision.name_or_path, "resolution": cfg.vision.resolution},
        "frame_num_tokens": cfg.frame_num_tokens,
        "stream": {"fps": cfg.stream.fps, "threshold": cfg.stream.threshold,
                   "max_reply_tokens": cfg.stream.max_reply_tokens, "system_prompt": cfg.stream.system_prompt},
    }


def create_app(model: Any, tokenizer: Any, *, max_sessions: int = 16, token: str | None = None,
               limits: Limits | None = None, fps: float | None = None, sampling: Any = None,
               name: str | None = None, max_batch: int = 16, memory: Any = None) -> Any:
    """Build the FastAPI app serving ``model`` to many streams.

    Args:
        model: a loaded :class:`~livecue.model.live.LiveModel` (shared by every session).
        tokenizer: its tokenizer.
        max_sessions: sessions open at once; more are refused with a ``busy`` error.
        token: require this token on ``/ws``, ``/model``, ``/sessions`` (None: no auth; loopback only).
        limits: message limits (:class:`~livecue.serve.protocol.Limits`).
        fps: the default stream fps (default: the model's).
        sampling: reply decoding (:class:`~livecue.inference.decide.SamplingConfig`; default greedy).
        name: the model's name in ``/model`` and ``ready`` (default: its config name).
        max_batch: frames of at most this many sessions are stepped per scheduler round.
        memory: the sessions' memory policy (:mod:`livecue.inference.memory`; default unbounded, e.g.
            ``SinkWindow(4096)`` to bound each stream's KV cache).

    Returns:
        The app; ``app.state.scheduler`` is its :class:`~livecue.serve.scheduler.Scheduler`.
    """
    try:
        from fastapi import FastAPI, Request, WebSocket
        from fastapi.responses import FileResponse, JSONResponse
        from fastapi.staticfiles import StaticFiles
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"livecue serve needs the [serve] extra: pip install 'livecue[serve]' ({e})") from None

    from .. import __version__
    from ..inference.engine import StreamEngine
    from .connection import Connection
    from .scheduler import Scheduler, describe_memory

    limits = limits or Limits()
    name = name or model.cfg.name
    engine = StreamEngine(model, tokenizer, sampling=sampling, memory=memory)
    scheduler = Scheduler(engine, limits=limits, max_sessions=max_sessions, fps=fps, max_batch=max_batch)
    info = model_info(model, name)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        scheduler.start()
        log.info("serving %s to at most %d sessions", name, max_sessions)
        yield
        scheduler.stop()

    app = FastAPI(title="livecue", version=__version__, lifespan=lifespan,
                  description="Online video LLM server: many live streams, one model (docs/protocol.md).")
    app.state.scheduler = scheduler
    app.state.limits = limits
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def unauthorized() -> Any:
        return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer TOKEN' or ?token=TOKEN"},
                            status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "sessions": len(scheduler.sessions), "max_sessions": max_sessions}

    @app.get("/version")
    async def version() -> dict[str, Any]:
        import fastapi
        import torch
        import transformers

        return {"livecue": __version__, "protocol": PROTOCOL_VERSION, "torch": torch.__version__,
                "transformers": transformers.__version__, "fastapi": fastapi.__version__}

    @app.get("/model")
    async def model_route(request: Request) -> Any:
        if not _check_token(token, request.headers, request.query_params):
            return unauthorized()
        return {**info, "default_fps": scheduler.fps, "memory": describe_memory(engine.memory), "auth": bool(token)}

    @app.get("/sessions")
    async def sessions(request: Request) -> Any:
        if not _check_token(token, request.headers, request.query_params):
            return unauthorized()
        return {"count": len(scheduler.sessions), "max_sessions": max_sessions, "sessions": scheduler.snapshot()}

    @app.websocket("/ws")
    async def ws_route(ws: WebSocket) -> None:
        await ws.accept()
        if not _check_token(token, ws.headers, ws.query_params):
            await ws.send_json(error_event("unauthorized", "missing or wrong token: pass ?token=TOKEN in the URL or "
                                                           "an 'Authorization: Bearer TOKEN' header"))
            await ws.send_json(event("closed", None, reason="unauthorized"))
            await ws.close(code=4401, reason="unauthorized")
            return
        scheduler.start()
        await Connection(ws, scheduler, limits, name).run()

    return app

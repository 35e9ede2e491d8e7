"""Ray Serve's HTTP proxy, made to say why a session ended when its replica died.

With ``livecue serve --replicas N`` every WebSocket goes client → Ray Serve's proxy → one replica. When that
replica's process dies mid-session (a crash, an out-of-memory kill, a node lost, a replica stopped after its drain
timeout), the proxy's request to it fails and the proxy returns without closing the WebSocket: the client would see
the TCP connection drop (close code 1006) and nothing else. :class:`ReplicaLossGuard` wraps the proxy's ASGI app and,
for a ``/ws`` connection that was accepted, not closed by the replica and not left by the client, sends what a
livecue server sends when it ends a session itself:

1. an ``error`` event, code :data:`REPLICA_LOST` (the message says the session's state is lost and how to go on);
2. ``closed`` with that reason;
3. the WebSocket close, code 1011 (internal error).

Ray reads the proxy's middlewares from a function named by the environment variable
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` in the proxy's process: :func:`proxy_middlewares`
(:data:`PROXY_CALLBACK`). ``livecue serve --replicas`` sets it for the local Ray instance it starts; on an existing
cluster each node's ``ray start`` needs it (docs/cluster.md). Only the standard library and Starlette are imported
here: this module is loaded by every proxy.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "livecue.serve.cluster_proxy:proxy_middlewares"
REPLICA_LOST = "replica_lost"  # the error code a session gets when its replica dies
REPLICA_LOST_CLOSE_CODE = 1011  # WebSocket "internal error"
REPLICA_LOST_MESSAGE = ("the replica serving this session stopped (its process died or it was shut down): the "
                        "session's state (its memory of the stream, queued frames, pending questions) is lost; "
                        "open a new session to go on")


def replica_lost_events() -> list[str]:
    """The JSON texts a client receives when its replica is lost: ``error`` then ``closed``."""
    return [json.dumps({"type": "error", "t": None, "code": REPLICA_LOST, "message": REPLICA_LOST_MESSAGE}),
            json.dumps({"type": "closed", "t": None, "reason": REPLICA_LOST})]


class ReplicaLossGuard:
    """ASGI middleware for the proxy: end a ``/ws`` session whose replica is gone with an ``error`` event.

    A WebSocket counts as ended by the replica when the replica sent ``websocket.close``, and by the client when the
    client's ``websocket.disconnect`` came through; anything else after ``websocket.accept`` means the replica is
    gone. Other routes and other apps' paths (not ending in ``/ws``) pass through untouched.

    Args:
        app: the proxy's ASGI app.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or not scope.get("path", "").rstrip("/").endswith("/ws"):
            await self.app(scope, receive, send)
            return
        state = {"accepted": False, "closed": False, "left": False}

        async def watch_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                state["left"] = True
            return message

        async def watch_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.accept":
                state["accepted"] = True
            elif message["type"] == "websocket.close":
                state["closed"] = True
            await send(message)

        try:
            await self.app(scope, watch_receive, watch_send)
        finally:
            if state["accepted"] and not state["closed"] and not state["left"]:
                await self._end(send, scope)

    @staticmethod
    async def _end(send: Any, scope: dict[str, Any]) -> None:
        log.warning("the replica of a session on %s is gone: ending it with '%s'", scope.get("path"), REPLICA_LOST)
        try:
            for text in replica_lost_events():
                await send({"type": "websocket.send", "text": text})
            await send({"type": "websocket.close", "code": REPLICA_LOST_CLOSE_CODE, "reason": REPLICA_LOST})
        except Exception:  # noqa: BLE001 - the client may be gone as well: nothing left to tell
            log.debug("could not tell the client that its replica is gone", exc_info=True)


def proxy_middlewares() -> list[Any]:
    """The middlewares Ray Serve's proxy applies (named by :data:`PROXY_CALLBACK_ENV`): :class:`ReplicaLossGuard`."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLossGuard)]

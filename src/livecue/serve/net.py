"""HTTP connection hygiene below the app: a request-head timeout and a socket cap (slowloris, half-open sockets).

uvicorn's h11 protocol waits for a request head for ever: a client that connects and sends nothing, or half a
request, holds a file descriptor until it goes away, so a few hundred such sockets exhaust a 1024-file limit and
lock ``/health`` and new sessions out. :func:`guarded_http_protocol` returns uvicorn's h11 protocol with two guards:

* a connection that has not sent a complete request head ``header_timeout`` seconds after it connected (or after
  its previous response) is closed;
* when ``max_sockets`` connections (HTTP and WebSocket) are open, a new connection closes the one that has waited
  longest without sending a complete request head to make room, or, if none is waiting, is itself closed at once.

WebSocket connections are upgraded out of this protocol; their own timeouts (``open``, idle, pings) are the app's
and uvicorn's. asyncio accepts up to uvicorn's ``backlog`` connections in one go before any of them is guarded, so
the server accepts in batches of ``ACCEPT_BATCH`` and keeps that many file descriptors free beyond ``max_sockets``
(:func:`ensure_file_limit`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
ACCEPT_BATCH = 64  # connections asyncio accepts in one go (uvicorn's `backlog`) before any of them is guarded ...
FD_RESERVE = ACCEPT_BATCH + 64  # ... so that many file descriptors, plus some for model files, logs and pipes, are
# kept free beyond `max_sockets`: accepting never fails for want of a file descriptor


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head timeout and a socket cap (set by :func:`guarded_http_protocol`)."""

    header_timeout: float = 10.0
    max_sockets: int = 512
    dropped = 0  # connections closed by the guards (all instances)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._waiting_since: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_sockets and not self._make_room():
            self._drop("the server is at its socket limit")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a complete request head arrived
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # waiting for the next request on a keep-alive connection

    # ---- guards ---------------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._waiting_since = self.loop.time()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timeout)

    def _disarm(self) -> None:
        self._waiting_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self in self.connections and self.conn.their_state is h11.IDLE and self.cycle_idle():
            self._drop(f"no complete request within {self.header_timeout:g} s")

    def cycle_idle(self) -> bool:
        """Whether no request is being answered on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> bool:
        waiting = [c for c in self.connections if isinstance(c, GuardedH11Protocol) and c is not self
                   and c._waiting_since is not None and c.conn.their_state is h11.IDLE and c.cycle_idle()]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since)._drop("the server is at its socket limit")
        return True

    def _drop(self, why: str) -> None:
        GuardedH11Protocol.dropped += 1
        log.debug("closing a connection from %s: %s", self.client, why)
        self._disarm()
        self.connections.discard(self)
        if not self.transport.is_closing():
            self.transport.abort()


def guarded_http_protocol(header_timeout: float, max_sockets: int) -> type[GuardedH11Protocol]:
    """The h11 protocol class for ``uvicorn.Config(http=...)`` with these guards."""
    return type("LivecueH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": float(header_timeout), "max_sockets": int(max_sockets)})


def ensure_file_limit(max_sockets: int) -> int:
    """Make sure the process may open ``max_sockets`` sockets plus a reserve: raise the soft file limit up to the hard
    one if needed. Returns the soft limit; ValueError naming ``--max-sockets`` when even the hard limit is too low."""
    need = max_sockets + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard == resource.RLIM_INFINITY or hard >= need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            return need
        raise ValueError(f"--max-sockets {max_sockets} needs {need} file descriptors but this process may open at most "
                         f"{hard} (ulimit -n); pass --max-sockets {max(1, hard - FD_RESERVE)} or less")
    return soft


def http_protocol_kwargs(header_timeout: float, max_sockets: int) -> dict[str, Any]:
    """``uvicorn.Config`` arguments for the guarded protocol."""
    return {"http": guarded_http_protocol(header_timeout, max_sockets), "timeout_keep_alive": 5,
            "backlog": ACCEPT_BATCH}

"""``/health`` across the replicas: each replica posts its load to a small shared board; any replica's ``/health``
adds the board to its own answer.

A request to ``/health`` reaches one replica (whichever the router picks), so the replicas share their loads through
one Ray actor per application, :class:`LoadBoard` (no CPU reserved; its state is a dict of at most one entry per
replica). Each replica posts ``sessions``, ``connections``, their limits and its queued frames every
:data:`POST_PERIOD_S` seconds from a daemon thread (:class:`BoardPoster`); entries older than :data:`STALE_S`
seconds are left out, so a dead replica drops out within seconds. The board is owned by the replica that created it:
if that replica dies the board goes with it and the next post of any replica creates a new one.

The aggregated answer keeps the single-process fields (this replica's own) and adds::

    "replica": "u2oajn82",
    "replicas": {"u2oajn82": {"sessions": 3, "max_sessions": 16, "connections": 3, "max_connections": 64,
                              "queued_frames": 1}, "8euookuc": {...}},
    "cluster": {"replicas": 2, "sessions": 5, "max_sessions": 32, "connections": 6, "max_connections": 128}

The same board carries each replica's latest ``/metrics`` text (posted with its load), so that any replica's
``/metrics`` also shows the other replicas' samples, each with its ``replica`` label (:mod:`~livecue.serve.metrics`).

Ray is imported inside the functions (only replicas use this module).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
POST_PERIOD_S = 1.0   # a replica posts its load this often ...
STALE_S = 5.0         # ... and an entry older than this is left out (its replica is gone or stuck)
READ_TIMEOUT_S = 2.0  # /health answers without the board rather than wait longer for it
TOTALS = ("sessions", "max_sessions", "connections", "max_connections")


class LoadBoard:
    """The replicas' loads (a Ray actor: ``ray.remote(LoadBoard)``)."""

    def __init__(self) -> None:
        self._loads: dict[str, tuple[float, dict[str, int]]] = {}
        self._metrics: dict[str, tuple[float, str]] = {}  # each replica's latest /metrics text

    def post(self, replica: str, load: dict[str, int]) -> None:
        """Record ``replica``'s load now."""
        self._loads[replica] = (time.monotonic(), dict(load))

    def post_metrics(self, replica: str, text: str) -> None:
        """Record ``replica``'s Prometheus text now."""
        self._metrics[replica] = (time.monotonic(), text)

    def remove(self, replica: str) -> None:
        """Forget ``replica`` (it is shutting down)."""
        self._loads.pop(replica, None)
        self._metrics.pop(replica, None)

    def read_metrics(self, max_age: float = STALE_S) -> dict[str, str]:
        """The Prometheus texts posted within ``max_age`` seconds, by replica."""
        now = time.monotonic()
        for replica in [r for r, (at, _) in self._metrics.items() if now - at > max_age]:
            del self._metrics[replica]
        return {replica: text for replica, (_, text) in sorted(self._metrics.items())}

    def read(self, max_age: float = STALE_S) -> dict[str, dict[str, int]]:
        """The loads posted within ``max_age`` seconds, by replica."""
        now = time.monotonic()
        for replica in [r for r, (at, _) in self._loads.items() if now - at > max_age]:
            del self._loads[replica]
        return {replica: load for replica, (_, load) in sorted(self._loads.items())}


def summary(loads: dict[str, dict[str, int]]) -> dict[str, int]:
    """The ``cluster`` totals of the replicas' loads."""
    return {"replicas": len(loads), **{key: sum(int(load.get(key, 0)) for load in loads.values()) for key in TOTALS}}


class BoardPoster:
    """One replica's side of the board: post its load periodically, read everyone's for ``/health``.

    Args:
        board_name: the board actor's name (one per application).
        replica: this replica's id.
        load: returns this replica's load now.
        metrics: returns this replica's ``/metrics`` text now (None: no metrics are shared).
    """

    def __init__(self, board_name: str, replica: str, load: Callable[[], dict[str, int]],
                 metrics: Callable[[], str] | None = None) -> None:
        self.board_name = board_name
        self.replica = replica
        self.load = load
        self.metrics = metrics
        self._board: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livecue-load-board", daemon=True)

    def board(self) -> Any:
        """The board's actor handle, created if no replica has created it yet (or its owner died)."""
        import ray

        with self._lock:
            if self._board is None:
                actor = ray.remote(num_cpus=0, max_concurrency=4)(LoadBoard)
                self._board = actor.options(name=self.board_name, get_if_exists=True).remote()
            return self._board

    def _forget(self) -> None:
        with self._lock:
            self._board = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop posting and take this replica off the board."""
        import ray

        self._stop.set()
        try:
            ray.get(self.board().remove.remote(self.replica), timeout=READ_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - shutting down: the entry goes stale anyway
            log.debug("could not take replica %s off the load board", self.replica, exc_info=True)

    def _run(self) -> None:
        import ray

        while not self._stop.is_set():
            try:
                board = self.board()
                posts = [board.post.remote(self.replica, self.load())]
                if self.metrics is not None:
                    posts.append(board.post_metrics.remote(self.replica, self.metrics()))
                ray.get(posts, timeout=READ_TIMEOUT_S * 2)
            except Exception:  # noqa: BLE001 - the board's owner died (or is slow): make or find another one
                log.debug("posting to the load board failed", exc_info=True)
                self._forget()
            self._stop.wait(POST_PERIOD_S)

    async def read(self, own: dict[str, int]) -> dict[str, Any]:
        """``replica``, ``replicas`` and ``cluster`` for ``/health`` (``own``: this replica's load now, which replaces
        its posted one)."""
        try:
            loads = await asyncio.wait_for(asyncio.wrap_future(self.board().read.remote().future()),
                                           READ_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - /health must answer: with this replica alone
            log.debug("reading the load board failed", exc_info=True)
            self._forget()
            loads = {}
        loads = {**loads, self.replica: own}
        return {"replica": self.replica, "replicas": dict(sorted(loads.items())), "cluster": summary(loads)}

    async def read_metrics(self) -> dict[str, str]:
        """The other replicas' latest ``/metrics`` texts, by replica (none when the board cannot be read in time)."""
        try:
            texts = await asyncio.wait_for(asyncio.wrap_future(self.board().read_metrics.remote().future()),
                                           READ_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - /metrics must answer: with this replica alone
            log.debug("reading the metrics board failed", exc_info=True)
            self._forget()
            return {}
        return {replica: text for replica, text in texts.items() if replica != self.replica}

"""``livecue serve --replicas N``: the same app on N Ray Serve replicas behind Ray Serve's HTTP proxy.

Each replica is one process with its own model on its own device and its own continuous batch: it runs
:func:`~livecue.serve.app.create_app` unchanged (the protocol, the page, ``/health``, the token, the Origin and Host
checks and every limit are the single-process server's; ``--max-sessions`` and ``--max-connections`` hold per
replica). Ray places the replicas (``num_cpus``/``num_gpus`` each), restarts a replica whose process dies, drains
one that is removed and, when asked, scales their number on sessions per replica.

* **Routing**: a WebSocket is one Ray Serve request for its whole life, so it stays on the replica it was routed to
  (the proxy holds that one request; nothing re-routes a message), and a replica's ongoing requests are its
  sessions. New sessions go to the replica with the fewest (:mod:`~livecue.serve.cluster_router`).
* **Failure**: a replica whose process dies ends its sessions; the proxy (:mod:`~livecue.serve.cluster_proxy`)
  tells each of their clients with an ``error`` event (``replica_lost``), ``closed``, close code 1011. Ray starts a
  new replica; the other replicas' sessions go on untouched.
* **Draining**: a replica being removed (scale-down, redeploy, ``serve delete``) gets no new sessions and is stopped
  once its sessions have ended, or after ``drain_timeout`` seconds (``graceful_shutdown_timeout_s``).

Every response of a replica carries the header ``X-Livecue-Replica`` (the replica's id): the WebSocket handshake's
too, so a client can tell which replica its session lives on. ``GET /health`` adds every replica's load and the
totals (:mod:`~livecue.serve.cluster_health`); ``GET /metrics`` has every replica's samples, each labelled with its
``replica`` (posted on the same board, at most a second or two old for the other replicas). The driver side
(start, stop, the config file) is :mod:`~livecue.serve.cluster_run`. Ray is imported inside the functions that
need it (the ``[cluster]`` extra).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..inference.options import FastPath, StreamOptions
from .protocol import Limits, ServerLimits

log = logging.getLogger(__name__)
APP_NAME = "livecue"         # the Ray Serve application ...
DEPLOYMENT_NAME = "livecue"  # ... and its one deployment
REPLICA_HEADER = "x-livecue-replica"
HTTP_HEADROOM = 16           # ongoing requests a replica takes beyond its WebSockets: page, /health, /model ...
CLUSTER_EXTRA = "pip install 'livecue[cluster]'"
BOARD_PREFIX = "LIVECUE_LOAD_BOARD::"  # + the application's name: the replicas' load board (cluster_health)


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything a replica needs to load its model and build the app (picklable: Ray ships it to each replica).

    Attributes:
        model, adapter, base, vision, dtype, quantize: what to load (the ``--model`` options of ``livecue serve``).
        device: ``cpu``, ``cuda`` (the replica's own GPU: Ray sets ``CUDA_VISIBLE_DEVICES``), ``mps`` or ``auto``.
        overrides: ``--section.key=value`` config overrides.
        threads: torch intra-op threads in the replica.
        name: the model's name in ``/model`` and ``ready``.
        options, fast, max_sessions, token, limits, server_limits, loopback_only, allow_origins: the arguments of
            :func:`~livecue.serve.app.create_app`.
        log_level: the replica's logging level.
    """

    model: str
    adapter: str | None = None
    base: str | None = None
    vision: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    device: str = "cpu"
    overrides: tuple[str, ...] = ()
    threads: int = 1
    name: str | None = None
    options: StreamOptions = field(default_factory=StreamOptions)
    fast: FastPath | None = None
    max_sessions: int = 16
    token: str | None = field(default=None, repr=False)
    limits: Limits = field(default_factory=Limits)
    server_limits: ServerLimits = field(default_factory=ServerLimits)
    loopback_only: bool = False
    allow_origins: tuple[str, ...] = ()
    log_level: str = "info"


@dataclass(frozen=True)
class ClusterConfig:
    """How the replicas are run (the Ray Serve deployment's options).

    Attributes:
        replicas: replicas to start (with ``autoscale``: the initial number, default its minimum).
        autoscale: ``(min_replicas, max_replicas)``, or None for a fixed number.
        target_sessions: with ``autoscale``, the sessions per replica Ray aims at (``target_ongoing_requests``);
            default: half of ``max_sessions``, rounded up.
        num_cpus, num_gpus: Ray resources of one replica (fractions allowed).
        drain_timeout: seconds a replica being removed may take to finish its sessions.
        address: the Ray cluster to join (None: start a local Ray instance, stopped with the command).
    """

    replicas: int | None = 1
    autoscale: tuple[int, int] | None = None
    target_sessions: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    drain_timeout: float = 300.0
    address: str | None = None

    def __post_init__(self) -> None:
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 1 <= low <= high:
                raise ValueError(f"--autoscale MIN:MAX needs 1 <= MIN <= MAX, got {low}:{high}")
            if self.replicas is not None and not low <= self.replicas <= high:
                raise ValueError(f"--replicas {self.replicas} is outside --autoscale {low}:{high}")
        elif self.target_sessions is not None:
            raise ValueError("--target-sessions needs --autoscale MIN:MAX (it is the autoscaler's target)")
        if self.replicas is not None and self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        for name in ("num_cpus", "num_gpus", "drain_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def initial_replicas(self) -> int:
        """Replicas at start."""
        if self.replicas is not None:
            return self.replicas
        return self.autoscale[0] if self.autoscale else 1


def deployment_options(spec: ReplicaSpec, cluster: ClusterConfig) -> dict[str, Any]:
    """The Ray Serve deployment options (``serve.deployment(**options)``, or a config file's ``deployments`` entry)
    for these replicas."""
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        # every WebSocket the app may hold (it refuses more itself: `busy`), plus room for short HTTP requests
        "max_ongoing_requests": spec.server_limits.max_connections + HTTP_HEADROOM,
        "ray_actor_options": {"num_cpus": cluster.num_cpus, "num_gpus": cluster.num_gpus},
        "graceful_shutdown_timeout_s": cluster.drain_timeout,
        "graceful_shutdown_wait_loop_s": 2.0,
        "health_check_period_s": 5.0,
        "request_router_config": {"request_router_class": "livecue.serve.cluster_router:LeastSessionsRouter",
                                  "request_routing_stats_period_s": 2.0},
    }
    if cluster.autoscale is None:
        options["num_replicas"] = cluster.initial_replicas()
    else:
        low, high = cluster.autoscale
        target = cluster.target_sessions or max(1, math.ceil(spec.max_sessions / 2))
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high,
                                         "initial_replicas": cluster.initial_replicas(),
                                         "target_ongoing_requests": target}
    return options


class ReplicaApp:
    """The app of one replica: :func:`~livecue.serve.app.create_app`'s app, each response tagged with the replica,
    ``GET /health`` extended with every replica's load (:mod:`~livecue.serve.cluster_health`).

    Args:
        app: the livecue app.
        replica: the replica's id (the ``X-Livecue-Replica`` header).
        board: the replicas' load board (None: ``/health`` is this replica's alone).
        load: this replica's load now (with ``board``).
    """

    def __init__(self, app: Any, replica: str, board: Any = None, load: Callable[[], dict[str, int]] | None = None
                 ) -> None:
        self.app = app
        self.replica = replica
        self.state = app.state
        self.board = board
        self.load = load
        self._header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def tagged(message: dict[str, Any]) -> None:
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", []), self._header]}
            await send(message)

        if self.board is not None and scope["type"] == "http" and scope.get("path") == "/health":
            await self._health(scope, receive, tagged)
        else:
            await self.app(scope, receive, tagged)

    async def _health(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The app's own ``/health`` answer, plus the board's (unless the app refused the request, e.g. 403)."""
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        payload = b"".join(body)
        if start.get("status") == 200:
            answer = json.loads(payload)
            answer.update(await self.board.read(self.load()))
            payload = json.dumps(answer).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


class LivecueReplica:
    """One replica (a Ray Serve deployment class once :func:`application` has wrapped it): loads the model, builds
    the app, shares its load with the other replicas.

    Args:
        spec: what to load and serve.
    """

    def __init__(self, spec: ReplicaSpec) -> None:
        import torch
        from ray import serve

        from ..model.devices import resolve_device
        from ..model.load import load_model
        from .app import create_app
        from .cluster_health import BoardPoster

        logging.basicConfig(level=spec.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        torch.set_num_threads(spec.threads)
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.spec = spec
        device = resolve_device(spec.device, option="--device")
        model, tokenizer = load_model(spec.adapter or spec.model, device=device, dtype=spec.dtype,
                                      overrides=list(spec.overrides) or None, base=spec.base, vision=spec.vision,
                                      quantize=spec.quantize)
        self.livecue = create_app(model, tokenizer, options=spec.options, max_sessions=spec.max_sessions,
                                  token=spec.token, limits=spec.limits, name=spec.name or spec.model,
                                  server_limits=spec.server_limits, loopback_only=spec.loopback_only,
                                  allow_origins=spec.allow_origins, fast=spec.fast, replica=self.replica)
        metrics = self.livecue.state.metrics
        self.board = BoardPoster(f"{BOARD_PREFIX}{context.app_name}", self.replica, self.load,
                                 lambda: metrics.render().decode())
        metrics.peers = self.board.read_metrics  # any replica's /metrics shows every replica
        self.board.start()
        log.info("replica %s: %s on %s, at most %d sessions", self.replica, spec.name or spec.model, device,
                 spec.max_sessions)

    def __serve_build_asgi_app__(self) -> ReplicaApp:
        """The ASGI app Ray Serve runs in this replica (its lifespan starts the model worker)."""
        return ReplicaApp(self.livecue, self.replica, self.board, self.load)

    def load(self) -> dict[str, int]:
        """This replica's load: sessions, connections, their limits, frames waiting in the session queues."""
        sessions = self.livecue.state.scheduler.snapshot()
        return {"sessions": len(sessions), "max_sessions": self.spec.max_sessions,
                "connections": len(self.livecue.state.connections),
                "max_connections": self.spec.server_limits.max_connections,
                "queued_frames": sum(int(s.get("queued", 0)) for s in sessions)}

    def record_routing_stats(self) -> dict[str, int]:
        """What the router reads between two requests (:mod:`~livecue.serve.cluster_router`)."""
        return self.load()

    def __del__(self) -> None:
        board = getattr(self, "board", None)
        if board is not None:
            board.stop()


def application(spec: ReplicaSpec, cluster: ClusterConfig) -> Any:
    """The Ray Serve application (``serve.run`` it, or return it from a config file's builder)."""
    from ray import serve

    # a model that cannot load fails the start after 3 tries (Ray's default is 20)
    deployment = serve.deployment(serve.ingress()(LivecueReplica), max_constructor_retry_count=3,
                                  **deployment_options(spec, cluster))
    return deployment.bind(spec)

"""The driver side of ``livecue serve --replicas N``: start or join Ray, deploy the replicas, stop; and the same
deployment as a Ray Serve config file (``serve deploy``).

* :func:`init_ray` starts a local Ray instance (stopped with the command) or joins a cluster (``--address``);
* :func:`plan` settles the device and the GPUs per replica against the cluster's resources, refusing in one line
  what cannot run (``--device cuda`` on a cluster without GPUs, more GPUs or CPUs than a local instance has);
* :func:`start_serving` starts Ray Serve's proxy on ``host:port`` with :mod:`~livecue.serve.cluster_proxy`'s
  middleware (through the Serve controller's environment, which its proxies inherit) and deploys the replicas,
  returning once they all serve;
* :func:`stop_serving` removes them (a joined cluster drains them) and leaves Ray;
* :func:`serve_config` is the ``serve deploy``-able config (a dict; the command writes it as YAML).

Ray is imported inside the functions (the ``[cluster]`` extra): :func:`import_ray` names the extra when it is
missing.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .cluster import APP_NAME, CLUSTER_EXTRA, ClusterConfig, ReplicaSpec, application, deployment_options
from .cluster_proxy import PROXY_CALLBACK, PROXY_CALLBACK_ENV

log = logging.getLogger(__name__)
PROXY_ENV = {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
KEEP_ALIVE_S = 5  # idle keep-alive HTTP connections are closed after this long, as by the single-process server
CONTROLLER_OPTIONS = {"runtime_env": {"env_vars": PROXY_ENV}}  # the Serve controller's; its proxies inherit it


def import_ray() -> tuple[Any, Any]:
    """``(ray, ray.serve)``; ImportError naming the ``[cluster]`` extra when Ray Serve is not installed."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ImportError(f"livecue serve --replicas/--address runs on Ray Serve, which is not installed: "
                          f"{CLUSTER_EXTRA}") from None
    return ray, serve


def init_ray(address: str | None = None, **kwargs: Any) -> bool:
    """Join the Ray cluster at ``address``, or start a local Ray instance (no dashboard unless ``kwargs`` ask for
    it); nothing when this process is connected already. ``kwargs`` go to ``ray.init`` (``num_cpus=4``...).

    Returns:
        Whether this call connected (so the caller disconnects).
    """
    ray, _ = import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"--address {address}: cannot join the Ray cluster: {e}") from None
    return True


def plan(spec: ReplicaSpec, cluster: ClusterConfig, *, gpus_given: bool,
         resources: dict[str, float] | None) -> tuple[ReplicaSpec, ClusterConfig]:
    """The device and GPUs per replica settled, checked against the cluster's ``resources``.

    ``--device auto`` becomes ``cuda`` where the cluster has GPUs (``resources``; None: unknown, as when writing a
    config file) and ``cpu`` elsewhere; ``cuda`` replicas get one GPU each unless ``--num-gpus-per-replica`` was
    given (``gpus_given``). ValueError (one line) for what cannot run.
    """
    device = spec.device
    if ":" in device:
        raise ValueError(f"--device {device}: with --replicas each replica uses the GPU(s) Ray gives it (Ray sets "
                         f"its CUDA_VISIBLE_DEVICES): pass --device cuda, and --num-gpus-per-replica")
    has_gpus = bool(resources and resources.get("GPU", 0) > 0)
    gpus = cluster.num_gpus
    if device == "auto":
        device = "cuda" if (gpus > 0 if gpus_given else has_gpus) else "cpu"
    if not gpus_given:
        gpus = 1.0 if device == "cuda" else 0.0
    if device == "cuda" and gpus <= 0:
        raise ValueError("--device cuda with --num-gpus-per-replica 0: the replicas would use GPUs Ray has not "
                         "given them; pass --num-gpus-per-replica 1 (or a fraction, to share a GPU)")
    if device != "cuda" and gpus > 0:
        raise ValueError(f"--num-gpus-per-replica {gpus:g} with --device {device}: the replicas would hold GPUs "
                         f"they do not use; pass --device cuda")
    if device == "cuda" and resources is not None and not has_gpus:
        raise ValueError("--device cuda: the Ray cluster has no GPU (ray.cluster_resources() lists none); pass "
                         "--device cpu, or join a cluster with GPUs (--address)")
    return dataclasses.replace(spec, device=device), dataclasses.replace(cluster, num_gpus=gpus)


def missing_resources(cluster: ClusterConfig, resources: dict[str, float]) -> str | None:
    """What the replicas need at start beyond ``resources`` (one line), or None when they fit."""
    n = cluster.initial_replicas()
    for key, each, flag in (("CPU", cluster.num_cpus, "--num-cpus-per-replica"),
                            ("GPU", cluster.num_gpus, "--num-gpus-per-replica")):
        have = resources.get(key, 0.0)
        if n * each > have + 1e-9:
            return (f"{n} replica(s) x {flag} {each:g} need {n * each:g} {key}s but the Ray cluster has {have:g}: "
                    f"lower --replicas or {flag}")
    return None


def start_serving(spec: ReplicaSpec, cluster: ClusterConfig, host: str, port: int, *,
                  log_level: str = "info") -> bool:
    """Start Ray Serve's proxy on ``host:port`` (unless Serve already runs on this cluster) and deploy the replicas;
    returns once every replica serves (RuntimeError naming the cause when they cannot start).

    Returns:
        Whether Serve was already running (its proxies then keep their own address and middleware).
    """
    ray, serve = import_ray()
    running = any(a.get("name") == "SERVE_CONTROLLER_ACTOR"
                  for a in ray.util.list_named_actors(all_namespaces=True))
    logging_config = {"log_level": log_level.upper()}  # Serve's own logs (controller, proxies, replicas' access logs)
    serve.start(http_options={"host": host, "port": port, "keep_alive_timeout_s": KEEP_ALIVE_S},
                controller_options=CONTROLLER_OPTIONS, logging_config=logging_config)
    try:
        serve.run(application(spec, cluster), name=APP_NAME, route_prefix="/", logging_config=logging_config)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        cause = next((line for line in reversed(lines) if "Error:" in line), lines[-1] if lines else str(e))
        raise RuntimeError(f"the replicas could not start (the replica's log is above): {cause}") from None
    return running


def stop_serving(*, local: bool) -> None:
    """Remove the replicas and leave Ray: a local instance stops at once (its sessions end with it); on a joined
    cluster the application is deleted in the background (each replica drains its sessions first)."""
    ray, serve = import_ray()
    if not ray.is_initialized():
        return
    if not local:
        try:
            serve.delete(APP_NAME, _blocking=False)
        except Exception as e:  # noqa: BLE001 - leaving anyway: say what was left behind
            log.warning("could not delete the application %r: %s", APP_NAME, e)
    ray.shutdown()


def serve_config(spec: ReplicaSpec, cluster: ClusterConfig, *, host: str, port: int, import_path: str,
                 args: dict[str, Any]) -> dict[str, Any]:
    """A Ray Serve config file (``serve deploy FILE``) for these replicas.

    Args:
        spec, cluster: the replicas (their deployment options become the ``deployments`` entry, which Ray applies
            over what the builder sets).
        host, port: the proxies' address.
        import_path: the application builder (``module:function``), called with ``args`` on the cluster.
        args: the builder's arguments.
    """
    options = deployment_options(spec, cluster)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port, "keep_alive_timeout_s": KEEP_ALIVE_S},
        "controller_options": CONTROLLER_OPTIONS,
        "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": import_path, "args": args,
                          "deployments": [options]}],
    }

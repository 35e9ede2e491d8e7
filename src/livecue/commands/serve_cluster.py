"""``livecue serve --replicas N`` (and ``--address``, ``--autoscale``, ``--ray-config``): the options and the run.

Without these options ``livecue serve`` is the single-process server and never imports Ray. With them, the same
app runs on N Ray Serve replicas behind Ray Serve's HTTP proxy (:mod:`livecue.serve.cluster`; docs/cluster.md):
``--max-sessions``, ``--max-connections``, ``--threads`` and ``--decode-threads`` hold per replica; the socket
guards of the single process (``--max-sockets``, ``--header-timeout``) have no counterpart in Ray's proxy and are
refused. ``--ray-config [FILE]`` writes the equivalent Ray Serve config file (``serve deploy FILE``) instead of
serving; the builder it names is :func:`livecue.commands.serve.cluster_app`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from ..inference.options import FastPath, StreamOptions
from ..serve.protocol import Limits, ServerLimits
from ._common import (
    announce_random,
    check_model_source,
    nonnegative_float,
    positive_float,
    positive_int,
    source_random_parts,
)

MAX_REPLICAS = 4096
SINGLE_PROCESS_ONLY = ("--max-sockets", "--header-timeout")  # socket guards of the single-process server's uvicorn
NOT_IN_CONFIG = ("token", "address", "ray_config")  # never written to a config file's builder arguments
BUILDER = "livecue.commands.serve:cluster_app"
_REPLICAS, _GPUS = positive_int(MAX_REPLICAS), nonnegative_float(1024.0)
_CPUS, _DRAIN = nonnegative_float(1024.0), positive_float(7 * 24 * 3600.0)


def replica_range(text: str) -> tuple[int, int]:
    """``--autoscale MIN:MAX`` (argparse type): ``(min, max)`` with ``1 <= MIN <= MAX``."""
    low, sep, high = text.partition(":")
    try:
        pair = (int(low), int(high)) if sep else None
    except ValueError:
        pair = None
    if pair is None or not 1 <= pair[0] <= pair[1] <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"must be MIN:MAX replicas with 1 <= MIN <= MAX <= {MAX_REPLICAS} (e.g. "
                                         f"1:4), got {text!r}")
    return pair


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The scale-out options of ``livecue serve``."""
    g = p.add_argument_group("scale-out on Ray Serve (the [cluster] extra; docs/cluster.md)")
    g.add_argument("--replicas", type=_REPLICAS, default=None, metavar="N",
                   help=f"serve from N Ray Serve replicas, each with its own model and device, behind one HTTP "
                        f"proxy ({_REPLICAS.range}; default: one process, no Ray)")
    g.add_argument("--address", default=None,
                   help="join this Ray cluster (ray.init(address=...), e.g. auto or ray://head:10001) instead of "
                        "starting a local Ray instance")
    g.add_argument("--num-cpus-per-replica", type=_CPUS, default=1.0, metavar="CPUS",
                   help=f"Ray CPUs of each replica ({_CPUS.range}; default: %(default)s; also its torch threads "
                        f"unless --threads)")
    g.add_argument("--num-gpus-per-replica", type=_GPUS, default=None, metavar="GPUS",
                   help=f"Ray GPUs of each replica, fractions share a GPU ({_GPUS.range}; default: 1 with --device "
                        f"cuda, or auto on a cluster with GPUs, else 0)")
    g.add_argument("--autoscale", type=replica_range, default=None, metavar="MIN:MAX",
                   help="let Ray scale the replicas between MIN and MAX on sessions per replica (default: off)")
    g.add_argument("--target-sessions", type=_REPLICAS, default=None, metavar="K",
                   help="with --autoscale: the sessions per replica the autoscaler aims at (default: half of "
                        "--max-sessions)")
    g.add_argument("--drain-timeout", type=_DRAIN, default=300.0, metavar="SECONDS",
                   help=f"a replica being removed takes no new sessions and is stopped when its sessions end or "
                        f"after this many seconds ({_DRAIN.range}; default: %(default)s)")
    g.add_argument("--ray-config", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the Ray Serve config file of these options (serve deploy FILE) to FILE, or stdout "
                        "without one, and exit")


def wanted(args: argparse.Namespace) -> bool:
    """Whether the options ask for Ray Serve replicas."""
    return any(getattr(args, k) is not None for k in ("replicas", "address", "autoscale", "ray_config"))


def spec_from_args(args: argparse.Namespace, overrides: list[str], options: StreamOptions, fast: FastPath | None,
                   limits: Limits, server_limits: ServerLimits, *, loopback_only: bool) -> Any:
    """The replicas' :class:`~livecue.serve.cluster.ReplicaSpec` from the command's options."""
    from ..serve.cluster import ReplicaSpec

    return ReplicaSpec(model=args.model, adapter=args.adapter, base=args.base, vision=args.vision, dtype=args.dtype,
                       quantize=args.quantize, device=args.device.strip(), overrides=tuple(overrides),
                       threads=args.threads or max(1, int(args.num_cpus_per_replica)),
                       name=str(args.adapter or args.model), options=options, fast=fast,
                       max_sessions=args.max_sessions, token=args.token, limits=limits, server_limits=server_limits,
                       loopback_only=loopback_only, allow_origins=tuple(args.allow_origin),
                       log_level=args.log_level)


def cluster_from_args(args: argparse.Namespace) -> Any:
    """The deployment's :class:`~livecue.serve.cluster.ClusterConfig` from the command's options."""
    from ..serve.cluster import ClusterConfig

    return ClusterConfig(replicas=args.replicas, autoscale=args.autoscale, target_sessions=args.target_sessions,
                         num_cpus=args.num_cpus_per_replica, num_gpus=args.num_gpus_per_replica or 0.0,
                         drain_timeout=args.drain_timeout, address=args.address)


def builder_argv(p: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str]) -> list[str]:
    """The command line of these options, less the token and the options that only concern this command (what a
    config file's builder is given): every option whose value is not its default, then the config overrides."""
    argv: list[str] = []
    for action in p._actions:  # argparse has no public list of its actions
        if not action.option_strings or action.dest in NOT_IN_CONFIG or action.default == argparse.SUPPRESS:
            continue
        value, flag = getattr(args, action.dest), action.option_strings[-1]
        if value == action.default or value is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, tuple):  # --autoscale MIN:MAX
            argv += [flag, ":".join(str(v) for v in value)]
        else:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv + [f"--{o}" for o in overrides]


def write_config(config: dict[str, Any], target: str, *, token: bool) -> None:
    """Write the Ray Serve config as YAML to ``target`` (``-``: stdout)."""
    import yaml

    head = ["# livecue serve on Ray Serve: serve deploy THIS_FILE (docs/cluster.md). The `deployments` entry is",
            "# applied over what the builder derives from `args.argv`: edit replicas, autoscaling and resources there."]
    if token:
        head.append("# The token is not written here: set LIVECUE_TOKEN in the application's runtime_env env_vars.")
    text = "\n".join(head) + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    if target == "-":
        sys.stdout.write(text)
        return
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"livecue serve: wrote the Ray Serve config to {target} (serve deploy {target})", file=sys.stderr)


def run(p: argparse.ArgumentParser, args: argparse.Namespace, overrides: list[str], options: StreamOptions,
        fast: FastPath | None, limits: Limits, server_limits: ServerLimits, argv: list[str], *, loopback_only: bool,
        free_port: Callable[[], int]) -> int:
    """Serve from Ray Serve replicas until interrupted (or write ``--ray-config``). ``free_port()``: the port to
    serve on, checked free (OSError naming the address otherwise)."""
    given = [flag for flag in SINGLE_PROCESS_ONLY if any(a == flag or a.startswith(flag + "=") for a in argv)]
    if given:
        raise ValueError(f"{given[0]} guards the single-process server's sockets; Ray Serve's proxy has no such "
                         f"guard: drop it with --replicas, and put a reverse proxy in front (docs/cluster.md)")
    for option in ("adapter", "base", "vision"):
        if getattr(args, option) is not None:
            check_model_source(getattr(args, option), f"--{option}", "directory")
    if args.adapter is None:
        check_model_source(args.model)
    from ..serve import cluster_run

    spec = spec_from_args(args, overrides, options, fast, limits, server_limits, loopback_only=loopback_only)
    cluster = cluster_from_args(args)
    gpus_given = args.num_gpus_per_replica is not None
    if args.ray_config is not None:
        spec, cluster = cluster_run.plan(spec, cluster, gpus_given=gpus_given, resources=None)
        config = cluster_run.serve_config(spec, cluster, host=args.host, port=args.port, import_path=BUILDER,
                                          args={"argv": builder_argv(p, args, overrides)})
        write_config(config, args.ray_config, token=bool(args.token))
        return 0
    ray, _ = cluster_run.import_ray()
    port = free_port()
    local = args.address is None
    cluster_run.init_ray(args.address)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        resources = ray.cluster_resources()
        spec, cluster = cluster_run.plan(spec, cluster, gpus_given=gpus_given, resources=resources)
        if (missing := cluster_run.missing_resources(cluster, resources)) is not None:
            if local:
                raise ValueError(missing)
            print(f"livecue serve: warning: {missing} (now; the replicas wait until it has them)", file=sys.stderr)
        source = args.adapter or args.model
        with announce_random(args.command, source, parts=source_random_parts(source, overrides) or None):
            pass  # the replicas load the model: say here, once, whether it has random weights
        n = cluster.initial_replicas()
        print(f"livecue serve: starting {n} replica(s) on {'a local Ray instance' if local else args.address}...",
              file=sys.stderr, flush=True)
        running = cluster_run.start_serving(spec, cluster, args.host, port, log_level=args.log_level)
        shown = f"[{args.host}]" if ":" in args.host else args.host
        scale = f"{cluster.autoscale[0]}-{cluster.autoscale[1]}" if cluster.autoscale else str(n)
        print(f"livecue serve: {source} on http://{shown}:{port}/ (WebSocket /ws, {scale} Ray Serve replica(s) "
              f"on {spec.device}, at most {spec.max_sessions} sessions each{', token required' if spec.token else ''})"
              + (" - Serve was already running on this cluster: its proxies keep their address" if running else ""),
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("livecue serve: stopping the replicas", file=sys.stderr, flush=True)
        return 0
    finally:
        cluster_run.stop_serving(local=local)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt

"""Prometheus metrics of one server (``GET /metrics``): sessions, frames, latencies, drops, queues, KV tokens, errors.

Every app has its own :class:`ServeMetrics` with a private ``CollectorRegistry`` (never the process-wide default:
several apps in one process, e.g. tests, keep their own values). Two kinds of values:

* **events**, recorded by each :class:`~livecue.serve.connection.Connection` on the event loop as it sends them:
  frame latency (a frame's arrival at the server → the ``silence``/``reply``/``answer`` event of its time sent to the
  client), the ``latency`` field of ``reply``/``answer`` events, replies, answers, dropped frames (``dropped``
  events' ``count``) and errors by code (``error`` events);
* **state**, read at scrape time from the scheduler: sessions open, connections, frames waiting in the session
  queues, cached (KV) tokens of every session (the numbers ``GET /sessions`` reports), and frames processed (the
  sessions' own ``frames`` counters, plus those of the sessions that have ended).

With a ``replica`` (``livecue serve --replicas N``) every sample carries the label ``replica="<id>"``, and
:meth:`ServeMetrics.render` can add the other replicas' latest exposition (``peers``, posted on the replicas' shared
board: :mod:`~livecue.serve.cluster_health`), so that any replica's ``/metrics`` shows every replica; sum over
``replica`` for the totals.

Metric names (the Prometheus text format; ``_total``, ``_bucket``/``_sum``/``_count`` suffixes as usual)::

    livecue_sessions                  gauge      sessions open
    livecue_max_sessions              gauge      the server's session limit
    livecue_connections               gauge      WebSocket connections open
    livecue_queued_frames             gauge      decoded frames waiting for the model, over all sessions
    livecue_kv_tokens                 gauge      tokens in the sessions' KV caches (context), over all sessions
    livecue_frames_total              counter    frames the model has processed (frames/s: rate() of it)
    livecue_frame_latency_seconds     histogram  frame arrival → its events sent
    livecue_reply_latency_seconds     histogram  a reply's/answer's decoding time (label kind=reply|answer)
    livecue_replies_total             counter    replies the model chose to give
    livecue_answers_total             counter    answers to queries
    livecue_dropped_frames_total      counter    frames dropped or skipped (as reported in ``dropped`` events)
    livecue_errors_total              counter    ``error`` events sent, by ``code``
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "FRAME_BUCKETS", "REPLY_BUCKETS", "ServeMetrics"]
# seconds; a 2-fps stream must keep up within 0.5 s (docs/serving: capacity planning)
FRAME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
REPLY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class _StateCollector(Collector):
    """The scrape-time values: read from the scheduler and the open connections when ``/metrics`` is asked."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        names, values = m.label_names, m.label_values
        sessions = m.scheduler.snapshot()  # what GET /sessions reports (approximate: read beside the worker)
        gauges = (
            ("livecue_sessions", "Sessions open.", len(sessions)),
            ("livecue_max_sessions", "Sessions the server takes at most.", m.scheduler.max_sessions),
            ("livecue_connections", "WebSocket connections open.", len(m.connections)),
            ("livecue_queued_frames", "Decoded frames waiting for the model, over all sessions.",
             sum(int(s.get("queued") or 0) for s in sessions)),
            ("livecue_kv_tokens", "Tokens in the sessions' KV caches (context), over all sessions.",
             sum(int(s.get("context_tokens") or 0) for s in sessions)),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, value)
            yield family
        frames = CounterMetricFamily("livecue_frames", "Frames the model has processed.", labels=names)
        frames.add_metric(values, m.frames_processed())
        yield frames


class ServeMetrics:
    """The metrics of one app (its own registry).

    Args:
        scheduler: the app's :class:`~livecue.serve.scheduler.Scheduler` (read at scrape time, never changed).
        connections: the app's set of open connections (its size is a gauge).
        replica: the replica's id, a ``replica`` label on every sample (None: no label, the single-process server).
    """

    def __init__(self, scheduler: Any, connections: set[Any] | None = None, replica: str | None = None) -> None:
        self.scheduler = scheduler
        self.connections: set[Any] = connections if connections is not None else set()
        self.replica = replica
        self.label_names: list[str] = ["replica"] if replica is not None else []
        self.label_values: list[str] = [replica] if replica is not None else []
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._live: set[Any] = set()  # sessions of open connections (their frames count until they end)
        self._ended_frames = 0        # frames of sessions that have ended
        # the other replicas' latest exposition text, by replica (set by the cluster replica; None: this one only)
        self.peers: Callable[[], Awaitable[dict[str, str]]] | None = None
        labels = self.label_names
        self._frame_latency = Histogram("livecue_frame_latency_seconds", "Seconds from a frame's arrival at the "
                                        "server to its events being sent.", labels, registry=self.registry,
                                        buckets=FRAME_BUCKETS)
        self._reply_latency = Histogram("livecue_reply_latency_seconds", "Seconds the model spent decoding a reply "
                                        "or an answer (the events' latency field).", [*labels, "kind"],
                                        registry=self.registry, buckets=REPLY_BUCKETS)
        self._replies = Counter("livecue_replies", "Replies the model chose to give.", labels,
                                registry=self.registry)
        self._answers = Counter("livecue_answers", "Answers to queries.", labels, registry=self.registry)
        self._dropped = Counter("livecue_dropped_frames", "Frames dropped or skipped (dropped events).", labels,
                                registry=self.registry)
        self._errors = Counter("livecue_errors", "Error events sent, by code.", [*labels, "code"],
                               registry=self.registry)
        self.registry.register(_StateCollector(self))
        # the label-less children exist from the start: a scrape shows 0, not nothing
        for metric in (self._frame_latency, self._replies, self._answers, self._dropped):
            self._child(metric)

    def _child(self, metric: Any, *extra: str) -> Any:
        values = [*self.label_values, *extra]
        return metric.labels(*values) if values else metric

    # ---- recorded by the connections (event loop) -----------------------------------------------------------------
    def frame_done(self, seconds: float) -> None:
        """A frame's events were sent ``seconds`` after the frame arrived."""
        self._child(self._frame_latency).observe(max(0.0, seconds))

    def sent(self, ev: dict[str, Any]) -> None:
        """Count an event sent to a client (replies, answers and their latency, drops, errors)."""
        kind = ev.get("type")
        if kind in ("reply", "answer"):
            self._child(self._replies if kind == "reply" else self._answers).inc()
            latency = ev.get("latency")
            if isinstance(latency, int | float) and latency >= 0:
                self._child(self._reply_latency, kind).observe(latency)
        elif kind == "dropped":
            self._child(self._dropped).inc(max(0, int(ev.get("count") or 0)))
        elif kind == "error":
            self.error(str(ev.get("code") or "unknown"))

    def error(self, code: str) -> None:
        """Count an ``error`` event of ``code`` (also those sent before a connection has a session, e.g. ``busy``)."""
        self._child(self._errors, code).inc()

    def session_opened(self, session: Any) -> None:
        """A connection's session is open: its ``stats.frames`` count from now on."""
        with self._lock:
            self._live.add(session)

    def session_ended(self, session: Any) -> None:
        """A connection is over: keep its session's processed frames in the total (once)."""
        with self._lock:
            if session in self._live:
                self._live.discard(session)
                self._ended_frames += int(session.stats.frames)

    def frames_processed(self) -> int:
        """Frames processed: those of the ended sessions plus the open ones' (never decreases)."""
        with self._lock:
            return self._ended_frames + sum(int(s.stats.frames) for s in self._live)

    # ---- scraping -------------------------------------------------------------------------------------------------
    def render(self, peers: dict[str, str] | None = None) -> bytes:
        """The Prometheus text exposition of every metric now; with ``peers`` (other replicas' expositions, by
        replica), their samples too, in the same families (a family is written once)."""
        own = generate_latest(self.registry)
        if not peers:
            return own
        return generate_latest(_Merged([own.decode(), *(text for r, text in peers.items() if r != self.replica)]))


class _Merged:
    """Several expositions as one collector: each family once, with every exposition's samples."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def collect(self) -> Iterator[Any]:
        families: dict[str, Any] = {}
        for text in self.texts:
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:  # a peer's text that does not parse is left out, never breaks the scrape
                continue
            for family in parsed:
                if family.name not in families:
                    families[family.name] = family
                elif families[family.name].type == family.type:
                    families[family.name].samples.extend(family.samples)
        yield from families.values()

"""Where a new session goes: the replica with the fewest sessions (a Ray Serve request router).

Every ``/ws`` connection is one Ray Serve request that lasts as long as the connection, so a replica's *ongoing
requests* are its sessions (plus the odd page or ``/health`` request, which lasts milliseconds). Ray Serve's default
router picks two replicas at random and takes the one with fewer ongoing requests ("power of two choices"); with two
replicas that is the least-loaded one, with more only close to it, and a burst of sessions arriving at once can land
on one replica: the routing of each is decided before the count of the previous ones reaches Ray's cache.

:class:`LeastSessionsRouter` sends each new session to the replica with the fewest, counting:

1. its ongoing requests as Ray's router knows them (its queue-length cache: updated by every request sent and
   finished, and by the replica's own count in each answer); when that entry has expired (10 s without traffic),
   the sessions the replica last reported (``record_routing_stats``, every 2 s);
2. plus the sessions this router has just routed there that Ray has not counted yet (a burst), for at most
   :data:`PICK_TTL_S` seconds.

Ties go to the replica with the fewest frames waiting in its session queues (as last reported), then at random. If
that replica is full (``max_ongoing_requests``) or does not answer, the others follow in the same order.

A connection stays on its replica for its whole life: the proxy holds one request to one replica for it (nothing
routes its messages one by one).

This module imports Ray at the top: Ray Serve imports it by name (:data:`ROUTER_CLASS`) in its own processes;
livecue's code never imports it.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

ROUTER_CLASS = "livecue.serve.cluster_router:LeastSessionsRouter"
PICK_TTL_S = 2.0  # a routing decision not yet counted by Ray is counted here for at most this long


def reported(replica: RunningReplica, key: str) -> int:
    """A count ``replica`` last reported (``sessions`` or ``queued_frames``; 0 before its first report)."""
    value = (replica.routing_stats or {}).get(key, 0)
    return value if isinstance(value, int) else 0


class LeastSessionsRouter(FIFOMixin, RequestRouter):
    """Send each new request (session) to the replica with the fewest ongoing requests (sessions)."""

    def initialize_state(self, **kwargs: Any) -> None:
        """Called by Ray with the router's kwargs (none)."""
        self._picks: dict[ReplicaID, collections.deque[float]] = collections.defaultdict(collections.deque)

    def _pending(self, replica_id: ReplicaID, now: float) -> int:
        picks = self._picks.get(replica_id)
        while picks and now - picks[0] > PICK_TTL_S:
            picks.popleft()
        return len(picks) if picks else 0

    def load(self, replica: RunningReplica, now: float) -> int:
        """The sessions ``replica`` has, as far as this router knows, counting its picks Ray has not counted."""
        known = self.replica_queue_len_cache.get(replica.replica_id)
        return (reported(replica, "sessions") if known is None else known) + self._pending(replica.replica_id, now)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        """The least-loaded replica first (alone), then the others in the same order."""
        if not candidate_replicas:
            return []
        now = time.monotonic()
        ranked = list(candidate_replicas)
        random.shuffle(ranked)
        ranked.sort(key=lambda r: (self.load(r, now), reported(r, "queued_frames")))  # stable: the shuffle breaks ties
        self._picks[ranked[0].replica_id].append(now)
        return [[ranked[0]], ranked[1:]] if len(ranked) > 1 else [ranked]

    def on_send_request(self, replica_id: ReplicaID) -> None:
        """Ray has counted a request sent to ``replica_id``: one pick of it is no longer pending."""
        super().on_send_request(replica_id)
        picks = self._picks.get(replica_id)
        if picks:
            picks.popleft()

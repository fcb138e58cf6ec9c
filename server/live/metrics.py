"""The process's Prometheus metrics: counters, gauges, and the latency of pushes and of
store round trips, as `/metrics` shows them.

The hot path stays as it was: an ordinary event still only bumps the hub's plain
`counts`, which `sync` copies into the Prometheus counter once a second (and at each
scrape); histograms are observed once per push written on a socket and once per store
round trip, never per event.

Several workers (`popin serve --workers N`) share one scrape: the supervisor sets
PROMETHEUS_MULTIPROC_DIR before starting them, so every worker's values live in files
there (prometheus-client's multiprocess mode) and any worker answers with the sum of all.
A worker's counters and histograms outlive it (totals never go back); its gauges leave
with it (`mark_process_dead`). Another worker's figures are at most one second old."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Seconds. A push on the socket's own process takes well under a millisecond; one relayed
# through Redis, a few; a store round trip under load, up to a second or more.
BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
           2.5, 5.0, 10.0)
# How a push reached its socket: decided by the visitor's own session (an event or a
# timer), posted to this process's API, or posted to another process's API and relayed.
PUSH_PATHS = ("session", "api", "relay")

# The `_created` series double every counter for a timestamp nobody graphs.
disable_created_metrics()


class Metrics:
    """One per process; its own registry, so that apps made in one test process do not
    add up."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events = Counter("popin_events", "Things that happened, by kind (the hub's "
                              "counts: pop-ins shown, refusals, errors, relayed pushes...)",
                              ["kind"], registry=registry)
        # Levels of live processes add up across workers; the rules are every worker's.
        summed = {"live_sockets": "Widget sockets open",
                  "live_sessions": "Sessions in memory, live or resumable",
                  "pending_writes": "Write-behind writes waiting for the next flush",
                  "pending_pushes": "Outbox changes (pushes queued or acknowledged) waiting "
                                    "for the next flush"}
        highest = {"write_behind_failing": "1 while the write-behind flushes fail",
                   "rules": "Rules in force",
                   "rule_errors": "Rule files refused at the last reload"}
        self._gauges = {
            **{name: Gauge(f"popin_{name}", what, multiprocess_mode="livesum",
                           registry=registry) for name, what in summed.items()},
            **{name: Gauge(f"popin_{name}", what, multiprocess_mode="livemax",
                           registry=registry) for name, what in highest.items()}}
        self.push_seconds = Histogram(
            "popin_push_latency_seconds", "From a push decided (or its business event "
            "received by the API) to its frame written on the visitor's socket",
            ["path"], buckets=BUCKETS, registry=registry)
        self.store_seconds = Histogram(
            "popin_store_round_trip_seconds", "One store operation (a batched flush's writes "
            "count one each), by operation", ["operation"], buckets=BUCKETS,
            registry=registry)
        self.profile_merges = Counter(
            "popin_profile_merges", "Profile writes that lost a compare-and-set to another "
            "process's write and were merged with it (Redis; a steady rise means several "
            "processes write the same visitors)", registry=registry)
        self._merges_synced = 0
        self._paths = {path: self.push_seconds.labels(path) for path in PUSH_PATHS}
        self._operations: dict[str, Any] = {}
        self._synced: dict[str, int] = {}

    @staticmethod
    def now() -> float:
        """Wall-clock seconds: a relayed push is timed from another process's clock."""
        return time.time()

    def pushed(self, path: str, since: float, messages: Iterable[Mapping[str, Any]]) -> None:
        """Frames were written on a socket; each pop-in among them is timed from `since`."""
        elapsed = max(0.0, time.time() - since)
        histogram = self._paths[path]
        for message in messages:
            if message.get("type") == "show":
                histogram.observe(elapsed)

    def round_trip(self, operation: str, seconds: float) -> None:
        child = self._operations.get(operation)
        if child is None:
            child = self._operations[operation] = self.store_seconds.labels(operation)
        child.observe(seconds)

    def sync(self, counts: Mapping[str, int], **gauges: float) -> None:
        """Copy what the hub counted since the last call, and set the gauges named."""
        synced = self._synced
        for kind, count in counts.items():
            behind = count - synced.get(kind, 0)
            if behind > 0:
                self.events.labels(kind).inc(behind)
                synced[kind] = count
        for name, value in gauges.items():
            self._gauges[name].set(value)

    def merged(self, total: int) -> None:
        """The store's count of merged profile writes, as it stands now."""
        if total > self._merges_synced:
            self.profile_merges.inc(total - self._merges_synced)
            self._merges_synced = total

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's, summed, when there are several."""
        folder = os.environ.get(MULTIPROCESS_VARIABLE)
        if not folder:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, folder)
        return generate_latest(registry)

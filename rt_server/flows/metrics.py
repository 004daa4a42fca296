"""The district server's Prometheus metrics: the one place the flows and servicers report to.

Each server has its own ``CollectorRegistry`` (never the process-wide
default), so several servers in one process keep their figures apart. Labels
are low-cardinality words (a status, a kind, a method name): never a
student, a request or transfer id, or a district code. Counts that live in the
database (requests by status, outbox depth) and figures that age (certificate
expiry, directory cache age) are read when Prometheus scrapes, not kept here.
The server serves ``registry`` on ``[metrics] listen`` (``rt_client._metrics_http``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rt_client.errors import PeerUnavailable, RetrySoon
from rt_server.store import gauges
from rt_server.store.units import Database, DatabaseFailure

__all__ = ["DistrictMetrics", "ScrapeSources", "retry_reason"]

log = logging.getLogger("rt_server.metrics")

# From a one-student transfer on loopback (tens of ms) to a million rows (tens of s).
_SECONDS_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
)  # fmt: skip


def retry_reason(exc: BaseException) -> str:
    """The label of a retry's reason: a word, never the message (it may name a district)."""
    if isinstance(exc, RetrySoon):
        return "peer_busy"
    if isinstance(exc, PeerUnavailable):
        return "peer_unavailable"
    if isinstance(exc, DatabaseFailure):
        return "database"
    return "internal"


@dataclass(frozen=True)
class ScrapeSources:
    """Where the figures read at scrape time come from (the server wires them)."""

    engine: Database
    clock: Callable[[], datetime]
    # certificate name -> when it expires
    certificates: dict[str, datetime]
    # seconds since the oldest cached directory entry was verified (None: none cached)
    directory_cache_age: Callable[[], float | None]


class DistrictMetrics:
    """Counters and histograms of one district server, and its registry to serve."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._rpcs = Counter(
            "rt_rpcs",
            "Calls this server answered, by server (peer, registrar), method and gRPC status code",
            ["server", "method", "code"],
            registry=r,
        )
        self._transfers = Counter(
            "rt_transfers",
            "Transfers by what happened: delivered (sent, receipt verified), received "
            "(verified and stored), imported, refused (an incoming one that did not "
            "verify), failed (an outgoing one given up)",
            ["status"],
            registry=r,
        )
        self._delivery_seconds = Histogram(
            "rt_delivery_seconds",
            "Duration of a delivery: sender from sealing to the verified receipt, receiver "
            "from the first frame to the receipt",
            ["role"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self._import_seconds = Histogram(
            "rt_import_seconds",
            "Duration of an import of received records, decryption to commit",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self._bytes = Counter(
            "rt_transfer_bytes",
            "Ciphertext bytes streamed in deliveries, by direction (sent, received)",
            ["direction"],
            registry=r,
        )
        self._rows = Counter(
            "rt_transfer_rows",
            "Record rows moved, by direction (sent, received, imported)",
            ["direction"],
            registry=r,
        )
        self._retries = Counter(
            "rt_outbox_retries",
            "Outbox sends that failed and were rescheduled, by kind and reason "
            "(peer_unavailable, peer_busy, database, internal)",
            ["kind", "reason"],
            registry=r,
        )

    def watch(self, sources: ScrapeSources) -> None:
        """Add the figures read at scrape time (once, when the server starts)."""
        self.registry.register(_ScrapeCollector(sources))

    # --- what the flows and servicers report ---------------------------------

    def rpc(self, server: str, method: str, code: str) -> None:
        self._rpcs.labels(server, method.rsplit("/", 1)[-1], code).inc()

    def delivered(self, *, sent_bytes: int, rows: int, started: float) -> None:
        self._transfers.labels("delivered").inc()
        self._bytes.labels("sent").inc(sent_bytes)
        self._rows.labels("sent").inc(rows)
        self._delivery_seconds.labels("sender").observe(time.monotonic() - started)

    def received(self, *, received_bytes: int, rows: int, started: float) -> None:
        self._transfers.labels("received").inc()
        self._bytes.labels("received").inc(received_bytes)
        self._rows.labels("received").inc(rows)
        self._delivery_seconds.labels("receiver").observe(time.monotonic() - started)

    def imported(self, *, rows: int, started: float) -> None:
        self._transfers.labels("imported").inc()
        self._rows.labels("imported").inc(rows)
        self._import_seconds.observe(time.monotonic() - started)

    def refused(self) -> None:
        self._transfers.labels("refused").inc()

    def outbox_retry(self, kind: str, reason: str) -> None:
        self._retries.labels(kind, reason).inc()

    def outbox_failed(self, kind: str) -> None:
        if kind == "delivery":
            self._transfers.labels("failed").inc()


class _ScrapeCollector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self._sources = sources

    def describe(self) -> list[Metric]:
        return []  # read from the database: nothing to collect at registration

    def collect(self) -> Iterator[Metric]:
        s = self._sources
        now = s.clock()
        expiry = GaugeMetricFamily(
            "rt_certificate_expiry_seconds",
            "Seconds until the certificate expires (negative: expired)",
            labels=["certificate"],
        )
        for name, not_after in s.certificates.items():
            expiry.add_metric([name], (not_after - now).total_seconds())
        yield expiry
        age = s.directory_cache_age()
        cache = GaugeMetricFamily(
            "rt_directory_cache_age_seconds",
            "Seconds since the oldest cached directory entry was verified with the registry",
        )
        if age is not None:
            cache.add_metric([], age)
        yield cache
        try:
            requests = gauges.request_counts(s.engine)
            outbox = gauges.outbox_counts(s.engine, now)
        except DatabaseFailure as exc:
            # The rest still answers; the gap in these series is the signal.
            log.warning("metrics: the database could not be read: %s", exc.orig)
            return
        by_status = GaugeMetricFamily(
            "rt_requests",
            "Requests this district holds, by direction (OUTBOUND: we asked, INBOUND: we "
            "were asked) and status",
            labels=["direction", "status"],
        )
        for (direction, status), count in sorted(requests.items()):
            by_status.add_metric([direction, status], count)
        yield by_status
        depth = GaugeMetricFamily(
            "rt_outbox_depth",
            "Outbox items not yet sent, by kind and state (due, waiting for a retry, failed)",
            labels=["kind", "state"],
        )
        for (kind, state), count in sorted(outbox.items()):
            depth.add_metric([kind, state], count)
        yield depth

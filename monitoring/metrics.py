"""Ballast's Prometheus metrics, in one place.

They work in prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before Python
starts): every process — web, qcluster, its forked workers — writes its own files and /metrics
adds them up. Gauges therefore say how processes combine (multiprocess_mode). Custom collectors
do not work in that mode, so figures read at scrape time (the ledger, the database pool, the
machine) are set by monitoring.views.metrics_view in the serving process just before the export.
"""

import itertools
import os
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # read once, as prometheus_client does at import
cpu_percent = Gauge("ballast_cpu_percent", "Machine (container) CPU use, percent", multiprocess_mode="mostrecent")
memory_percent = Gauge("ballast_memory_percent", "Memory use of the effective limit, percent", multiprocess_mode="mostrecent")
rss_bytes = Gauge("ballast_rss_bytes", "Resident memory of Ballast's live processes", multiprocess_mode="livesum")
concurrency = Gauge("ballast_concurrency", "Work allowed at once now, per route", ["route"], multiprocess_mode="livesum")
batch_size = Gauge("ballast_batch_size", "Current batch size, per route", ["route"], multiprocess_mode="mostrecent")
throttle_events = Counter("ballast_throttle_events", "Governor events", ["kind", "route"])
sync_runs = Counter("ballast_sync_runs", "Sync runs finished, by status", ["status"])
sync_rows = Counter("ballast_sync_rows", "Records handled by sync steps", ["step", "outcome"])
sync_duration = Histogram(
    "ballast_sync_duration_seconds", "Duration of sync steps", ["step"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
)
allocations = Gauge("ballast_allocations", "Ledger allocations, by resource and state", ["resource", "state"], multiprocess_mode="mostrecent")
ratelimit_denied = Counter("ballast_ratelimit_denied", "API requests refused by the rate limit", ["tenant"])
db_pool = Gauge("ballast_db_pool", "Database connection pool of the serving process", ["state"], multiprocess_mode="mostrecent")
changes_lag = Gauge("ballast_changes_lag_seconds", "Age of a tenant's changes cursor: how far its token feed is behind", ["tenant"],
                    multiprocess_mode="mostrecent")
provider_calls = Counter("ballast_provider_calls", "Calls to identity providers", ["provider", "status"])


def forget_series(metric) -> None:
    """Drop every series of a labelled metric, where the client can: in one process. In
    multiprocess mode the series live in the processes' files, which prometheus_client cannot
    clear (it warns at each try), until the directory is emptied at the next start."""
    if not MULTIPROCESS:
        metric.clear()


def start_at_zero(metric, **label_values: Iterable[str]) -> None:
    """Make every combination of the known label values, at zero: a labelled series appears only
    once made, and a quiet process's dashboards and alerts would read "no data" rather than 0
    (Prometheus' instrumentation practices: avoid missing metrics)."""
    names = list(label_values)
    for values in itertools.product(*label_values.values()):
        metric.labels(**dict(zip(names, values)))


def observe_reading(reading, pressure_memory: float | None = None) -> None:
    cpu_percent.set(reading.cpu_percent)
    memory_percent.set(reading.memory_percent if pressure_memory is None else pressure_memory)
    rss_bytes.set(reading.rss_bytes)

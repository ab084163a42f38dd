"""monitoring.metrics: what the module itself decides about its series."""

import warnings

from monitoring import metrics


def series(metric) -> set[tuple[str, ...]]:
    return {tuple(sample.labels.values()) for family in metric.collect() for sample in family.samples}


def test_series_are_forgotten_in_one_process_and_kept_without_a_warning_in_multiprocess_mode(monkeypatch):
    """/metrics warned at every scrape in multiprocess mode: prometheus_client cannot clear
    labels there, and it said so for each clear() the changes lag made."""
    metrics.changes_lag.labels(tenant="gone").set(5)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")  # what prometheus_client's clear() looks at
    monkeypatch.setattr(metrics, "MULTIPROCESS", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.forget_series(metrics.changes_lag)
    assert ("gone",) in series(metrics.changes_lag)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    monkeypatch.setattr(metrics, "MULTIPROCESS", False)
    metrics.forget_series(metrics.changes_lag)
    assert series(metrics.changes_lag) == set()

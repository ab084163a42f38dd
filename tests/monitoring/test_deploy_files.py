"""The shipped alert rules and Grafana dashboard speak of metrics that exist."""

import json
import re

from monitoring import metrics

from ..conftest import ROOT

SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def exported_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and hasattr(value, "_name"):
            for family in describe():
                names.add(family.name)
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_alert_rules_and_dashboard_use_real_metrics():
    known = exported_names()
    alerts = (ROOT / "deploy/prometheus/ballast-alerts.yml").read_text()
    dashboard = json.loads((ROOT / "deploy/grafana/ballast-dashboard.json").read_text())
    expressions = alerts + " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {base(name) for name in re.findall(r"ballast_[a-z_]+", expressions)}
    assert used and used <= known, used - known
    assert {"BallastCpuCeilingBreached", "BallastEmergencyBrakes", "BallastRateLimitDenials"} <= set(re.findall(r"alert: (\w+)", alerts))

import json
import re
import tracemalloc
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from monitoring.models import ThrottleEvent

pytestmark = pytest.mark.django_db
LEAKED: list = []


def leaky_work():
    """Keeps something on every call: the leak the command must find."""
    LEAKED.append(bytearray(64 * 1024))


def resources(*args) -> str:
    out = StringIO()
    call_command("resources", *args, stdout=out)
    return out.getvalue()


def test_report_counts_what_happened():
    ThrottleEvent.objects.create(owner="run-1", route="users", kind="brake", cpu_percent=90, memory_percent=10, rss_bytes=1)
    report = json.loads(resources("report", "--json", "--hours", "1"))
    assert report["throttle_events"] == {"brake": 1} and report["hours"] == 1
    assert set(report) >= {"resources", "runs", "ledger_events", "allocations_now", "rate_limit_denials"}
    assert "  throttle events: 1 brake\n" in resources("report")


def test_health_gc_connections():
    assert resources("health", "-v").startswith("ready; resources ")
    assert "RSS " in resources("gc") and "objects collected" in resources("gc")
    report = json.loads(resources("connections", "--json"))
    assert report["database"]["vendor"] in {"sqlite", "postgresql"} and report["database"]["connected"] is True
    assert resources("connections").startswith(f"database  {report['database']['vendor']}, reachable; ")


def test_snapshot_and_leaks(tmp_path):
    resources("snapshot", "-o", str(tmp_path / "heap.snap"), "--work", "tests.monitoring.management.commands.test_resources.leaky_work")
    assert tracemalloc.Snapshot.load(str(tmp_path / "heap.snap")).statistics("lineno")
    found = resources("leaks", "--rounds", "3", "--work", "tests.monitoring.management.commands.test_resources.leaky_work")
    assert "test_resources.py" in found.splitlines()[0]  # the site that grew every round comes first
    with pytest.raises(CommandError, match="--work"):
        resources("leaks", "--work", "no.such.thing")


def test_profile_and_monitor(tmp_path):
    resources("profile", "-d", "0.6", "--interval", "0.2", "-o", str(tmp_path / "p.json"))
    profile = json.loads((tmp_path / "p.json").read_text())
    assert len(profile["samples"]) >= 2 and {"cpu_percent", "memory_percent", "rss_bytes", "status"} <= set(profile["samples"][0])
    screen = resources("monitor", "--interval", "0.05", "--frames", "2")
    assert screen.count("Ballast resources") == 2 and "memory  [" in screen


@pytest.mark.parametrize("percent, ceiling, bar", [
    (0, 80, "[........................|.....]"),
    (50, 80, "[###############.........|.....]"),
    (100, 80, "[########################|#####]"),
    (10, 100, "[###..........................|]"),
])
def test_monitor_bars_mark_the_ceiling(percent, ceiling, bar):
    from monitoring.management.commands.resources import _bar

    assert _bar(percent, ceiling) == bar


def test_monitor_names_each_ceiling(settings):
    settings.BALLAST_GOVERNOR = {"max_cpu_percent": 60.0, "max_memory_percent": 70.0}
    screen = resources("monitor", "--interval", "0.01", "--frames", "1")
    assert re.search(r"  CPU     \[[#.|]{30}\] +[\d.]+% of 60%", screen) and re.search(r"  memory  \[[#.|]{30}\] +[\d.]+% of 70%", screen)


def test_resources_cleanup_reports_what_it_reclaimed():
    out = StringIO()
    call_command("resources", "cleanup", stdout=out)
    assert "0 allocation(s) reclaimed." in out.getvalue()

import json
from io import StringIO

import psutil
import pytest
from django.core.management import CommandError, call_command


def stress(*args) -> dict:
    out = StringIO()
    call_command("stress", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture(autouse=True)
def own_cpu_only(settings):
    """The load's own CPU is measured for real, on an injected quiet two-core machine: neither the
    machine's cores nor its neighbours' work change what the test sees, except to slow the load."""
    settings.BALLAST_READER = "monitoring.governor.readings.fake.OwnCpuReader"


def test_cpu_load_is_held_at_the_ceiling(settings):
    settings.BALLAST_GOVERNOR = {"max_cpu_percent": 40}
    report = stress("--cpu", "--seconds", "3")
    assert report["cpu"]["ceiling"] == 40
    assert report["work_units"] > 0
    assert report["cpu"]["p95"] <= 40 * 1.15  # duty-cycling holds it (an upper bound: a busy machine only lowers it)


def test_memory_is_held_under_the_rss_ceiling(settings):
    rss_mb = psutil.Process().memory_info().rss / 2**20
    limit = rss_mb + 80
    settings.BALLAST_GOVERNOR = {"rss_limit_mb": limit}
    report = stress("--memory", "400", "--seconds", "2")
    assert report["memory_held_mb"] > 0  # it held what fitted…
    assert report["rss_mb"]["peak"] <= limit  # …and never went over the ceiling


def test_it_needs_a_load():
    with pytest.raises(CommandError, match="give --cpu, --memory MB or both"):
        call_command("stress")
    with pytest.raises(CommandError, match="--seconds more than 0"):
        call_command("stress", "--cpu", "--seconds", "0")

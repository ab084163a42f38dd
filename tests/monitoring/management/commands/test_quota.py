import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from monitoring.models import TenantQuota

from ....factories import TenantFactory

pytestmark = pytest.mark.django_db


def quota(*args) -> str:
    out = StringIO()
    call_command("quota", *args, stdout=out)
    return out.getvalue()


def test_quota_shows_defaults_and_sets_values():
    TenantFactory(slug="acme")
    shown = json.loads(quota("acme", "--json"))
    assert shown["max_concurrent_runs"] == 1 and "burst" in shown["defaults"]
    quota("acme", "--requests-per-minute", "60", "--burst", "0", "--provider-calls-per-second", "2.5")
    shown = json.loads(quota("acme", "--json"))
    assert (shown["requests_per_minute"], shown["burst"], shown["provider_calls_per_second"]) == (60, 0, 2.5)
    assert "burst" not in shown["defaults"]
    assert "requests per minute        60\n" in quota("acme")


@pytest.mark.parametrize("args, message", [
    (["--burst", "-1"], "--burst: Ensure this value is greater than or equal to 0."),
    (["--max-concurrent-runs", "0"], "--max-concurrent-runs: Ensure this value is greater than or equal to 1."),
    (["--provider-calls-per-second", "0"], "--provider-calls-per-second: Ensure this value is greater than or equal to 0.1."),
])
def test_bad_quota_values_are_refused_and_nothing_changes(args, message):
    TenantFactory(slug="acme")
    with pytest.raises(CommandError, match=message):
        quota("acme", *args)
    assert not TenantQuota.objects.exists()


def test_unknown_tenant():
    with pytest.raises(CommandError, match="no tenant 'nope'"):
        quota("nope")

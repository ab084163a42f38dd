import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from monitoring.ledger import allocate
from monitoring.models import RateLimitDenial, ThrottleEvent
from syncapp.runs import start_run

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_staff_see_the_machine_runs_events_ledger_and_tenants(admin_client):
    tenant = TenantFactory(slug="acme")
    run = start_run(tenant=tenant, trigger="api", enqueue=False)
    allocate("run_slot", owner=f"run-{run.pk}", tenant_id=tenant.pk)
    ThrottleEvent.objects.create(owner=f"run-{run.pk}", route="tokens", kind="brake", cpu_percent=91, memory_percent=20, rss_bytes=1, detail="emergency brake #1")
    RateLimitDenial.objects.create(tenant=tenant, day=timezone.localdate(), count=4)
    page = admin_client.get("/admin/dashboard/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "<svg" in text and 'id="ballast-dashboard"' in text and "monitoring/dashboard.js" in text
    assert "RSS % of ceiling" in text  # CPU, memory and RSS over the last minutes
    assert f"#{run.pk}</a>" in text and 'class="progress-bar"' in text  # the active run, with its bar
    assert "emergency brake #1" in text and f"run-{run.pk}" in text
    assert "<td>acme</td><td>0</td><td>120</td><td>4</td>" in text  # requests this minute, limit, denied today
    fragment = admin_client.get("/admin/dashboard/", {"fragment": 1}).content.decode()
    assert "<html" not in fragment and "Active runs" in fragment  # what the script swaps in


def test_others_are_refused(client):
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")
    User.objects.create_user("visitor", password="pw")
    client.login(username="visitor", password="pw")
    assert client.get("/admin/dashboard/").status_code == 302  # logged in, but not staff

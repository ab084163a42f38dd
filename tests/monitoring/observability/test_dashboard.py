import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from monitoring.ledger.allocations import allocate
from monitoring.models import RateLimitDenial, ResourceSample, ThrottleEvent
from syncapp.models import SyncRun
from syncapp.runs import start_run

from ...factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_staff_see_the_machine_runs_events_ledger_and_tenants(admin_client):
    tenant = TenantFactory(slug="acme")
    run = start_run(tenant=tenant, trigger="api", enqueue=False)
    allocate("run_slot", owner=f"run-{run.pk}", tenant_id=tenant.pk)
    ThrottleEvent.objects.create(owner=f"run-{run.pk}", route="tokens", kind="brake", cpu_percent=91, memory_percent=20, rss_bytes=1, detail="emergency brake #1")
    RateLimitDenial.objects.create(tenant=tenant, day=timezone.localdate(), count=4)
    ResourceSample.objects.create(owner=f"run-{run.pk}", route="users", at=timezone.now() - timedelta(minutes=5), cpu_percent=40,
                                  process_cpu_percent=20, memory_percent=30, rss_bytes=10**8, concurrency=2, batch_size=100)
    page = admin_client.get("/admin/dashboard/")
    text = page.content.decode()
    assert page.status_code == 200
    assert "<svg" in text and 'id="ballast-dashboard"' in text and "monitoring/refresh.js" in text
    assert "RSS % of ceiling" in text  # CPU, memory and RSS over the last minutes
    assert f"#{run.pk}</a>" in text and 'class="progress-bar"' in text  # the active run, with its bar
    assert "emergency brake #1" in text
    run_link = f'<a href="/admin/syncapp/syncrun/{run.pk}/change/">run-{run.pk}</a>'
    assert text.count(run_link) == 2 and "<td>1 run slot</td>" in text  # the event's owner and the slot's, linked
    assert "<td>acme</td><td>not scheduled</td><td>0</td><td>120</td><td>4</td>" in text  # schedules, requests this minute, limit, denied today
    fragment = admin_client.get("/admin/dashboard/", {"fragment": 1}).content.decode()
    assert "<html" not in fragment and "Active runs" in fragment  # what the script swaps in


def test_others_are_refused(client):
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")
    User.objects.create_user("visitor", password="pw")
    client.login(username="visitor", password="pw")
    assert client.get("/admin/dashboard/").status_code == 302  # logged in, but not staff


def test_a_running_runs_eta_comes_from_its_rate_and_the_work_left(admin_client):
    run = start_run(tenant=TenantFactory(slug="acme"), trigger="api", enqueue=False)
    started = timezone.now() - timedelta(seconds=10)
    SyncRun.objects.filter(pk=run.pk).update(status="running", started_at=started)
    # users: 250 of 1,000 in 10 s → 30 s left; tokens: 100 of 200 in 10 s → 10 s left. Side by side: 30 s.
    run.step_records.filter(name="users").update(status="running", started_at=started, done=250, expected=1000)
    run.step_records.filter(name="tokens").update(status="running", started_at=started, done=100, expected=200)
    fragment = admin_client.get("/admin/dashboard/", {"fragment": 1}).content.decode()
    assert re.search(r"<td>3[01] s then relations<br><small>users, tokens</small></td>", fragment), fragment  # relations never ran here


def test_a_runs_eta_reckons_with_the_recent_rate_and_the_steps_to_come(admin_client):
    """users: 250 of 1,000 in 10 s, but 10 a second lately → 75 s; then relations, 12 s last time."""
    tenant = TenantFactory(slug="acme")
    earlier = start_run(tenant=tenant, trigger="api", enqueue=False)
    ago = timezone.now() - timedelta(hours=1)
    SyncRun.objects.filter(pk=earlier.pk).update(status="completed", started_at=ago, finished_at=ago + timedelta(seconds=30))
    earlier.step_records.update(status="completed", started_at=ago, finished_at=ago + timedelta(seconds=12))
    run = start_run(tenant=tenant, trigger="api", enqueue=False)
    started = timezone.now() - timedelta(seconds=10)
    SyncRun.objects.filter(pk=run.pk).update(status="running", started_at=started)
    run.step_records.filter(name="users").update(status="running", started_at=started, done=250, expected=1000, recent_rate=10.0)
    run.step_records.filter(name="tokens").update(status="running", started_at=started, done=100, expected=200, recent_rate=10.0)
    fragment = admin_client.get("/admin/dashboard/", {"fragment": 1}).content.decode()
    assert re.search(r"<td>1 min 2[67] s<br><small>users, tokens</small></td>", fragment), fragment  # 75 s + 12 s


def test_the_dashboard_keeps_the_admins_header_and_user_links(admin_client):
    text = admin_client.get("/admin/dashboard/").content.decode()
    assert 'id="user-tools"' in text and 'id="logout-form"' in text and "Change password" in text
    assert 'id="nav-sidebar"' in text  # the admin's navigation, as on every admin page


def test_after_a_restart_the_chart_shows_what_the_samples_table_holds(admin_client, monkeypatch):
    """A web process that just started has one reading of its own; the runs' samples of the last
    minutes fill the chart before it, and with neither it says so rather than drawing an empty axis."""
    from monitoring.governor.readings.fake import CalmReader
    from monitoring.governor.sampler import Sampler
    from monitoring.observability import dashboard

    monkeypatch.setattr(dashboard, "get_sampler", lambda: Sampler(CalmReader(), 0.5))  # fresh: one reading
    empty = admin_client.get("/admin/dashboard/").content.decode()
    assert "ballast-chart" not in empty and "No readings before this moment" in empty
    run = start_run(tenant=TenantFactory(), trigger="api", enqueue=False)
    for minutes, cpu in ((6, 35.0), (4, 72.0)):
        ResourceSample.objects.create(owner=f"run-{run.pk}", route="tokens", at=timezone.now() - timedelta(minutes=minutes), cpu_percent=cpu,
                                      cpu_peak_percent=cpu + 10, process_cpu_percent=20, memory_percent=30, rss_bytes=10**8,
                                      concurrency=4, batch_size=100)
    drawn = admin_client.get("/admin/dashboard/").content.decode()
    assert "ballast-chart" in drawn and "peak 82%" in drawn  # the samples' readings, the peak kept

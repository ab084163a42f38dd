import re

import pytest
from django_q.models import Schedule

from syncapp.models import SyncRun
from syncapp.schedules import schedule_name
from syncapp.tasks import scheduled_sync_task

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_a_tenant_schedule_follows_its_interval():
    tenant = TenantFactory(sync_every_minutes=30)
    schedule = Schedule.objects.get(name=schedule_name(tenant.pk))
    assert (schedule.func, schedule.args, schedule.schedule_type, schedule.minutes) == (
        "syncapp.tasks.scheduled_sync_task", repr(tenant.pk), Schedule.MINUTES, 30
    )
    tenant.sync_every_minutes = 5
    tenant.save()
    assert Schedule.objects.get(name=schedule_name(tenant.pk)).minutes == 5
    tenant.active = False
    tenant.save()
    assert not Schedule.objects.filter(name=schedule_name(tenant.pk)).exists()


def test_no_interval_no_schedule_and_deleting_the_tenant_removes_it():
    assert not Schedule.objects.filter(name=schedule_name(TenantFactory().pk)).exists()
    tenant = TenantFactory(sync_every_minutes=60)
    name = schedule_name(tenant.pk)
    tenant.delete()
    assert not Schedule.objects.filter(name=name).exists()
    assert Schedule.objects.filter(name="ballast reclaim dead allocations", func="monitoring.tasks.reclaim_task").exists()


def test_the_scheduled_task_queues_a_run(django_capture_on_commit_callbacks):
    tenant = TenantFactory(sync_every_minutes=60)
    with django_capture_on_commit_callbacks():
        run_id = scheduled_sync_task(tenant.pk)
    run = SyncRun.objects.get(pk=run_id)
    assert (run.trigger, run.status, run.step_names) == ("schedule", "queued", ["users", "tokens", "relations"])
    tenant.active = False
    tenant.save()
    assert scheduled_sync_task(tenant.pk) is None


def test_a_changes_schedule_beside_the_full_sync_and_its_task_waits_for_a_cursor(django_capture_on_commit_callbacks):
    from django.utils import timezone

    from syncapp.tasks import scheduled_changes_task

    tenant = TenantFactory(provider="google", provider_config={"access_token": "x"}, sync_every_minutes=1440, changes_every_minutes=5)
    changes = Schedule.objects.get(name=schedule_name(tenant.pk, "changes"))
    assert (changes.func, changes.minutes) == ("syncapp.tasks.scheduled_changes_task", 5)
    assert Schedule.objects.get(name=schedule_name(tenant.pk)).minutes == 1440
    assert scheduled_changes_task(tenant.pk) is None  # no cursor: no run that could only fail
    tenant.changes_cursor = timezone.now()
    tenant.save()
    with django_capture_on_commit_callbacks():
        run = SyncRun.objects.get(pk=scheduled_changes_task(tenant.pk))
    assert (run.trigger, run.step_names) == ("schedule", ["changes"])
    tenant.changes_every_minutes = None
    tenant.save()
    assert not Schedule.objects.filter(name=schedule_name(tenant.pk, "changes")).exists()
    tenant.changes_every_minutes = 10
    tenant.save()
    tenant.delete()
    assert not Schedule.objects.filter(name__startswith="ballast changes tenant").exists()


@pytest.mark.parametrize("window, at, inside", [
    ("01:00-05:00", "01:00", True), ("01:00-05:00", "04:59", True), ("01:00-05:00", "05:00", False), ("01:00-05:00", "00:59", False),
    ("22:00-02:00", "23:30", True), ("22:00-02:00", "01:59", True), ("22:00-02:00", "02:00", False), ("22:00-02:00", "12:00", False),
])
def test_windows_of_local_time_may_pass_midnight(window, at, inside):
    from datetime import time

    from syncapp.schedules import in_window

    assert in_window(window, time.fromisoformat(at)) is inside


def test_scheduled_full_syncs_keep_to_their_window_with_a_profile_inside_and_outside(django_capture_on_commit_callbacks):
    from datetime import datetime

    tenant = TenantFactory(sync_every_minutes=60, sync_window="01:00-05:00", window_profile="fast")
    night, noon = datetime(2026, 11, 24, 2, 30), datetime(2026, 11, 24, 12, 0)
    with django_capture_on_commit_callbacks():
        inside = SyncRun.objects.get(pk=scheduled_sync_task(tenant.pk, now=night))
    assert inside.profile == "fast"
    assert scheduled_sync_task(tenant.pk, now=noon) is None  # no profile outside: no full sync there
    tenant.outside_window_profile = "background"
    tenant.save()
    with django_capture_on_commit_callbacks():
        outside = SyncRun.objects.get(pk=scheduled_sync_task(tenant.pk, now=noon))
    assert outside.profile == "background"


@pytest.mark.parametrize("fields, field, words", [
    ({"sync_window": "1:00-5:00"}, "sync_window", "HH:MM-HH:MM"),
    ({"sync_window": "03:00-03:00"}, "sync_window", "same time"),
    ({"window_profile": "fast"}, "sync_window", "need a window"),
    ({"changes_every_minutes": 5}, "changes_every_minutes", "the demo provider has no feed of token changes"),
    ({"changes_every_minutes": 0}, "changes_every_minutes", "greater than or equal to 1"),
])
def test_bad_schedule_settings_are_refused_naming_the_field(fields, field, words):
    from syncapp.forms import TenantForm

    data = {"slug": "acme", "name": "Acme", "provider": "demo", "provider_config": "{}", "active": True, "governor_settings": "{}", **fields}
    form = TenantForm(data)
    assert not form.is_valid()
    assert words in " ".join(form.errors[field])


def test_the_feeds_lag_shows_on_the_tenant_page_the_dashboard_and_metrics(admin_client):
    from datetime import timedelta

    from django.urls import reverse
    from django.utils import timezone

    tenant = TenantFactory(slug="acme", provider="google", provider_config={"access_token": "x"}, sync_every_minutes=1440,
                           changes_every_minutes=5, sync_window="01:00-05:00", window_profile="fast")
    TenantFactory(slug="quiet")  # no feed: no lag to report
    page = admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    assert "full sync every 1440 min (01:00-05:00, fast; not outside it) · changes every 5 min, no cursor until a full sync completes" in page
    tenant.changes_cursor = timezone.now() - timedelta(minutes=10)
    tenant.save()
    page = admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    assert re.search(r"changes every 5 min, feed 10 min \d\d s behind", page)
    dashboard = admin_client.get(reverse("ballast-dashboard")).content.decode()
    assert re.search(r"feed 10 min \d\d s behind", dashboard) and "not scheduled" in dashboard  # quiet's row
    metrics = admin_client.get("/metrics").content.decode()
    [lag] = [line for line in metrics.splitlines() if line.startswith("ballast_changes_lag_seconds{")]
    assert lag.startswith('ballast_changes_lag_seconds{tenant="acme"}') and 595 < float(lag.split()[-1]) < 700


def test_tenant_add_takes_both_schedules_and_a_window_and_names_a_bad_flag():
    from io import StringIO

    from django.core.management import CommandError, call_command

    from syncapp.models import Tenant

    call_command("tenant", "add", "night", "--provider", "google", "--config", '{"access_token": "x"}', "--every-minutes", "1440",
                 "--changes-every-minutes", "5", "--window", "01:00-05:00", "--window-profile", "fast",
                 "--outside-window-profile", "background", stdout=StringIO())
    tenant = Tenant.objects.get(slug="night")
    assert (tenant.changes_every_minutes, tenant.sync_window, tenant.window_profile, tenant.outside_window_profile) == (5, "01:00-05:00", "fast", "background")
    assert Schedule.objects.filter(name=schedule_name(tenant.pk, "changes")).exists()
    with pytest.raises(CommandError, match="--window: Enter a local-time window as HH:MM-HH:MM"):
        call_command("tenant", "add", "bad", "--provider", "demo", "--window", "1-5", stdout=StringIO())

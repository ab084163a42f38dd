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

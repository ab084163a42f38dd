"""Keep each tenant's django-q2 Schedule in step with its sync_every_minutes."""

from django_q.models import Schedule

from .models import Tenant


def schedule_name(tenant_id: int) -> str:
    return f"ballast sync tenant {tenant_id}"


def sync_schedule(tenant: Tenant) -> Schedule | None:
    """Create, update or remove the tenant's periodic sync; return the schedule if there is one."""
    name = schedule_name(tenant.pk)
    if not (tenant.active and tenant.sync_every_minutes):
        Schedule.objects.filter(name=name).delete()
        return None
    schedule, _ = Schedule.objects.update_or_create(
        name=name,
        defaults={
            "func": "syncapp.tasks.scheduled_sync_task",
            "args": repr(tenant.pk),
            "schedule_type": Schedule.MINUTES,
            "minutes": tenant.sync_every_minutes,
            "repeats": -1,
        },
    )
    return schedule

"""Keep each tenant's django-q2 Schedules in step with its settings: a full sync every
sync_every_minutes, the token feed (a changes run) every changes_every_minutes; and the window of
local time that scheduled full syncs keep to, with a profile inside it and another (or none) outside."""

from datetime import datetime, time

from django.utils import timezone
from django_q.models import Schedule

from monitoring import metrics
from monitoring.observability.eta import duration_words

from .models import Tenant

KINDS = {"sync": ("sync_every_minutes", "syncapp.tasks.scheduled_sync_task"),
         "changes": ("changes_every_minutes", "syncapp.tasks.scheduled_changes_task")}


def schedule_name(tenant_id: int, kind: str = "sync") -> str:
    return f"ballast sync tenant {tenant_id}" if kind == "sync" else f"ballast {kind} tenant {tenant_id}"


def sync_schedule(tenant: Tenant) -> Schedule | None:
    """Create, update or remove the tenant's periodic full sync and changes runs; return the full
    sync's schedule if there is one."""
    made = {}
    for kind, (field, func) in KINDS.items():
        name, minutes = schedule_name(tenant.pk, kind), getattr(tenant, field)
        if not (tenant.active and minutes):
            Schedule.objects.filter(name=name).delete()
            made[kind] = None
            continue
        made[kind], _ = Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "args": repr(tenant.pk), "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
    return made["sync"]


def remove_schedules(tenant_id: int) -> None:
    Schedule.objects.filter(name__in=[schedule_name(tenant_id, kind) for kind in KINDS]).delete()


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def in_window(window: str, moment: time) -> bool:
    """Whether a local time falls in "HH:MM-HH:MM" (start included, end not; it may pass midnight)."""
    start, end = (_clock(part) for part in window.split("-"))
    if start <= end:
        return start <= moment < end
    return moment >= start or moment < end


def scheduled_profile(tenant: Tenant, now: datetime) -> tuple[bool, str]:
    """Whether a scheduled full sync runs now (local time), and under which profile ("" = the
    tenant's): inside the window with window_profile, outside it only with outside_window_profile."""
    if not tenant.sync_window:
        return True, ""
    if in_window(tenant.sync_window, now.time()):
        return True, tenant.window_profile
    return bool(tenant.outside_window_profile), tenant.outside_window_profile


def feed_lag_s(tenant: Tenant, now: datetime) -> float | None:
    """How far the tenant's token feed is behind: the age of its changes cursor (None: no cursor yet)."""
    return (now - tenant.changes_cursor).total_seconds() if tenant.changes_cursor else None


def schedule_words(tenant: Tenant, now: datetime | None = None) -> str:
    """Both schedules and the feed's lag in a line, for the admin and the dashboard."""
    now = now or timezone.now()
    parts = []
    if tenant.sync_every_minutes:
        window = ""
        if tenant.sync_window:
            inside = f", {tenant.window_profile}" if tenant.window_profile else ""
            outside = f"; {tenant.outside_window_profile} outside" if tenant.outside_window_profile else "; not outside it"
            window = f" ({tenant.sync_window}{inside}{outside})"
        parts.append(f"full sync every {tenant.sync_every_minutes} min{window}")
    if tenant.changes_every_minutes:
        lag = feed_lag_s(tenant, now)
        behind = "no cursor until a full sync completes" if lag is None else f"feed {duration_words(lag)} behind"
        parts.append(f"changes every {tenant.changes_every_minutes} min, {behind}")
    elif tenant.changes_cursor:
        parts.append(f"changes cursor {duration_words(feed_lag_s(tenant, now))} old")
    return " · ".join(parts) or "not scheduled"


def observe_changes_lag() -> None:
    """ballast_changes_lag_seconds{tenant} for every tenant whose feed is scheduled (set at scrape time)."""
    now = timezone.now()
    metrics.forget_series(metrics.changes_lag)  # a tenant no longer scheduled has no lag
    for tenant in Tenant.objects.filter(active=True, changes_every_minutes__isnull=False, changes_cursor__isnull=False):
        metrics.changes_lag.labels(tenant=tenant.slug).set(feed_lag_s(tenant, now))

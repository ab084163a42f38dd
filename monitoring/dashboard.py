"""The staff dashboard: the machine over the last minutes, active runs, governor events, the
ledger, each tenant's request rate and denials, the database pool. Server-rendered; a small
script of the project's own refreshes the fragment (no CDN, works offline)."""

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.shortcuts import render
from django.utils import timezone

from .charts import Mark, Point, resource_chart
from .health import resource_status
from .models import Allocation, RateLimitDenial, ThrottleEvent
from .profiles import route_policy
from .quotas import limits_for
from .ratelimit import requests_in_window
from .reports import connection_report
from .sampler import get_sampler
from .tenants import tenant_model

EVENT_MINUTES = 30


def _machine_chart():
    sampler = get_sampler()
    history = list(sampler.history)
    start = history[0].at
    policy = route_policy("run")
    rss_ceiling = (policy.rss_limit_mb or 0) * 2**20 or history[-1].memory_limit_bytes  # its own, else the memory limit
    points = [Point(r.at - start, r.cpu_percent, r.memory_percent, rss=100 * r.rss_bytes / rss_ceiling) for r in history]
    since = timezone.now() - timedelta(seconds=history[-1].at - start)
    events = ThrottleEvent.objects.filter(created_at__gte=since).order_by("created_at")[:200]
    marks = [Mark(max((e.created_at - since).total_seconds(), 0), e.kind, f"{e.owner} {e.route}: {e.detail}") for e in events]
    return resource_chart(points, marks, cpu_ceiling=policy.max_cpu_percent, memory_ceiling=policy.max_memory_percent)


def _active_runs() -> list[dict]:
    if not getattr(settings, "BALLAST_RUN_MODEL", None):
        return []
    run_model = apps.get_model(settings.BALLAST_RUN_MODEL)
    rows = []
    for run in run_model.objects.filter(status__in=["queued", "running"]).select_related("tenant").prefetch_related("step_records")[:50]:
        steps = list(run.step_records.all())
        done = sum(s.received for s in steps)
        seconds = run.duration_s or 0
        ended = sum(1 for s in steps if s.ended)
        rows.append({
            "run": run, "done": done, "rate": done / seconds if seconds else 0.0,
            "steps_ended": ended, "steps": len(steps), "percent": int(100 * ended / len(steps)) if steps else 0,
            # Sources do not say how many records they hold: the ETA comes from the steps left.
            "eta_s": seconds / ended * (len(steps) - ended) if ended and ended < len(steps) else None,
        })
    return rows


def _tenants() -> list[dict]:
    today = timezone.localdate()
    denials = dict(RateLimitDenial.objects.filter(day=today).values_list("tenant_id", "count"))
    slug = getattr(settings, "BALLAST_TENANT_SLUG_FIELD", "slug")
    rows = []
    for tenant in tenant_model().objects.all()[:100]:
        limit = limits_for(tenant.pk).requests_per_minute
        rows.append({"slug": getattr(tenant, slug), "last_minute": requests_in_window(f"tenant:{tenant.pk}"), "limit": limit,
                     "denied_today": denials.get(tenant.pk, 0)})
    return rows


def dashboard_view(request):
    reading = get_sampler().latest()
    context = {
        "title": "Ballast dashboard",
        "resources": resource_status(reading),
        "rss_mb": reading.rss_bytes / 2**20,
        "chart": _machine_chart(),
        "runs": _active_runs(),
        "events": ThrottleEvent.objects.filter(created_at__gte=timezone.now() - timedelta(minutes=EVENT_MINUTES)).order_by("-id")[:30],
        "allocations": Allocation.objects.filter(state__in=["waiting", "granted"]).select_related("tenant").order_by("state", "requested_at")[:50],
        "tenants": _tenants(),
        "pool": connection_report()["database"],
        "event_minutes": EVENT_MINUTES,
    }
    template = "monitoring/dashboard_fragment.html" if request.GET.get("fragment") else "monitoring/dashboard.html"
    return render(request, template, context)

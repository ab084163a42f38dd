"""The staff dashboard: the machine over the last minutes, active runs, governor events, the
ledger, each tenant's request rate and denials, the database pool. Server-rendered; a small
script of the project's own refreshes the fragment (no CDN, works offline)."""

from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.db.models import Q
from django.shortcuts import render
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.safestring import mark_safe

from monitoring.governor.policy import Ewma
from monitoring.governor.profiles import route_policy
from monitoring.governor.sampler import get_sampler
from monitoring.ledger.quotas import limits_for
from monitoring.models import Allocation, RateLimitDenial, ResourceSample, ThrottleEvent
from monitoring.ratelimit.sliding_window import requests_in_window, tenant_scope
from monitoring.tenants import tenant_model

from .alerts import CPU_AVERAGE_S
from .charts import Band, Mark, Point, resource_chart
from .eta import duration_words, estimate, remaining_s
from .health import resource_status
from .reports import connection_report

EVENT_MINUTES = 30


def averaged_cpu(history: list) -> list[float]:
    """Each reading's CPU averaged over the seconds before it, as the memory manager's alerts and
    /readyz see it (0.5 s readings jump too much to read)."""
    average = Ewma(CPU_AVERAGE_S)
    return [average.add(r.cpu_percent, r.window_s) for r in history]


CHART_MINUTES = 10


def _machine_chart(history: list, cpu: list[float]):
    """The machine over the last minutes: this process's own readings, and before them (after a
    restart, say) what the runs' samples recorded of it."""
    now, latest = timezone.now(), history[-1].at
    policy = route_policy("run")
    rss_ceiling = (policy.rss_limit_mb or 0) * 2**20 or history[-1].memory_limit_bytes  # its own, else the memory limit
    read_since = now - timedelta(seconds=latest - history[0].at)  # readings carry monotonic times
    window = now - timedelta(minutes=CHART_MINUTES)
    recorded = ResourceSample.objects.filter(at__gte=window, at__lt=read_since).order_by("at").values_list("at", "cpu_percent", "cpu_peak_percent", "memory_percent")
    start = min([read_since] + [at for at, *_ in recorded[:1]])
    points = [Point((at - start).total_seconds(), c, m, cpu_peak=peak) for at, c, peak, m in recorded]
    points += [Point((read_since - start).total_seconds() + r.at - history[0].at, c, r.memory_percent, rss=100 * r.rss_bytes / rss_ceiling)
               for r, c in zip(history, cpu)]
    if (now - start).total_seconds() < 1.0:
        return mark_safe(f'<p class="help">No readings before this moment: the chart fills in as the machine is read (every '
                         f'{get_sampler().interval:g} s) and as runs record their samples.</p>')
    events = ThrottleEvent.objects.filter(Q(created_at__gte=start) | Q(ended_at__isnull=True, duration_s__isnull=False, updated_at__gte=start))
    marks, bands = [], []
    for e in events.order_by("created_at")[:200]:
        t, text = (e.created_at - start).total_seconds(), f"{e.owner} {e.route}: {e.detail}"
        if e.is_episode:
            bands.append(Band(max(t, 0), t + e.duration_s, e.kind, text))
        else:
            marks.append(Mark(max(t, 0), e.kind, text))
    return resource_chart(
        points, marks, bands=bands, cpu_ceiling=policy.max_cpu_percent, memory_ceiling=policy.max_memory_percent,
        label=f"The machine over the last minutes (CPU averaged over {CPU_AVERAGE_S:.0f} s)",
        start=timezone.localtime(start), span=(now - start).total_seconds(),
    )


def _eta_words(run, steps) -> str:
    """The run's ETA in the host project's words (BALLAST_RUN_ETA_WORDS: a dotted path, given the
    run), else its running steps' from their recent rates (monitoring.observability.eta, as on the terminal)."""
    if getattr(settings, "BALLAST_RUN_ETA_WORDS", ""):
        return import_string(settings.BALLAST_RUN_ETA_WORDS)(run)
    running = [estimate(done=s.done, expected=s.expected, elapsed_s=s.duration_s, ended=False, recent_rate=getattr(s, "recent_rate", None))
               for s in steps if s.status == "running"]
    eta = remaining_s(running)
    return duration_words(eta) if eta is not None else ""


def _active_runs() -> list[dict]:
    if not getattr(settings, "BALLAST_RUN_MODEL", None):
        return []
    run_model = apps.get_model(settings.BALLAST_RUN_MODEL)
    runs = list(run_model.objects.filter(status__in=["queued", "running"]).select_related("tenant").prefetch_related("step_records")[:50])
    holding = ThrottleEvent.objects.holding(run.owner for run in runs)
    rows = []
    for run in runs:
        steps = list(run.step_records.all())
        done = sum(s.received for s in steps)
        seconds = run.duration_s or 0
        ended = sum(1 for s in steps if s.ended)
        rows.append({
            "run": run, "done": done, "rate": done / seconds if seconds else 0.0,
            "steps_ended": ended, "steps": len(steps), "percent": int(100 * ended / len(steps)) if steps else 0,
            "eta_words": _eta_words(run, steps), "eta_steps": ", ".join(s.name for s in steps if s.status == "running"),
            "held_by": holding.get(run.owner, []),  # why it is slow right now
        })
    return rows


def _tenants() -> list[dict]:
    today = timezone.localdate()
    denials = dict(RateLimitDenial.objects.filter(day=today).values_list("tenant_id", "count"))
    slug = getattr(settings, "BALLAST_TENANT_SLUG_FIELD", "slug")
    # The host project's words for a tenant's schedules (BALLAST_TENANT_SCHEDULE_WORDS: a dotted path).
    words = import_string(settings.BALLAST_TENANT_SCHEDULE_WORDS) if getattr(settings, "BALLAST_TENANT_SCHEDULE_WORDS", "") else None
    rows = []
    for tenant in tenant_model().objects.all()[:100]:
        limit = limits_for(tenant.pk).requests_per_minute
        rows.append({"slug": getattr(tenant, slug), "last_minute": requests_in_window(tenant_scope(tenant.pk)), "limit": limit,
                     "denied_today": denials.get(tenant.pk, 0), "schedule": words(tenant) if words else ""})
    return rows


def dashboard_view(request):
    history = list(get_sampler().history)
    cpu = averaged_cpu(history)
    reading = history[-1]
    context = {
        **admin.site.each_context(request),  # the admin's header: user links, theme toggle
        "title": "Ballast dashboard",
        "resources": resource_status(reading, cpu=cpu[-1]),
        "average_s": CPU_AVERAGE_S,
        "rss_mb": reading.rss_bytes / 2**20,
        "chart": _machine_chart(history, cpu),
        "runs": _active_runs(),
        "events": ThrottleEvent.objects.filter(created_at__gte=timezone.now() - timedelta(minutes=EVENT_MINUTES)).order_by("-id")[:30],
        "allocations": Allocation.objects.live().select_related("tenant").prefetch_related("holders").order_by("state", "requested_at")[:50],
        "tenants": _tenants(),
        "pool": connection_report()["database"],
        "event_minutes": EVENT_MINUTES,
    }
    template = "monitoring/dashboard_fragment.html" if request.GET.get("fragment") else "monitoring/dashboard.html"
    return render(request, template, context)

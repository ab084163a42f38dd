"""What the monitoring URLs answer: /healthz, /readyz and /metrics."""

import hmac

from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView

from . import metrics
from .governor.sampler import get_sampler
from .models import Allocation
from .observability.health import readiness
from .tenants import tenant_model


@never_cache
def healthz(request):
    """Alive: the process answers. Nothing else is checked."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    ready, body = readiness()
    return JsonResponse(body, status=200 if ready else 503)


def refresh_metrics() -> None:
    """Set the figures that are read, not counted: the ledger, the pool, this machine, and the
    host project's own (BALLAST_METRICS_REFRESH: functions by dotted path)."""
    metrics.observe_reading(get_sampler().latest())
    slug_field = getattr(settings, "BALLAST_TENANT_SLUG_FIELD", "slug")
    metrics.start_at_zero(metrics.ratelimit_denied, tenant=tenant_model().objects.values_list(slug_field, flat=True))
    for path in getattr(settings, "BALLAST_METRICS_REFRESH", []):
        import_string(path)()
    live = {(r, s): 0 for r in Allocation.Resource.values for s in (Allocation.State.WAITING, Allocation.State.GRANTED)}
    for row in Allocation.objects.live().values_list("resource", "state"):
        live[row] = live.get(row, 0) + 1
    for (resource, state), count in live.items():
        metrics.allocations.labels(resource=resource, state=state).set(count)
    pool = getattr(connections["default"], "pool", None) if connections["default"].vendor == "postgresql" else None
    if pool is not None:
        stats = pool.get_stats()
        metrics.db_pool.labels(state="size").set(stats.get("pool_size", 0))
        metrics.db_pool.labels(state="available").set(stats.get("pool_available", 0))
        metrics.db_pool.labels(state="waiting").set(stats.get("requests_waiting", 0))


def metrics_view(request):
    """Open by default (Prometheus' convention); with METRICS_TOKEN set, only for that bearer token."""
    token = getattr(settings, "BALLAST_METRICS_TOKEN", "")
    if token:
        scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
            response = JsonResponse({"error": {"code": "unauthorized", "message": "send Authorization: Bearer <METRICS_TOKEN>"}}, status=401)
            response["WWW-Authenticate"] = "Bearer"
            return response
    refresh_metrics()
    return ExportToDjangoView(request)

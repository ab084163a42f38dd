"""Reads behind `manage.py resources`: usage, runs, throttles and allocations over a period;
connection pools; a garbage collection with its effect."""

import gc
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connections
from django.db.models import Avg, Count, Max
from django.utils import timezone

from monitoring.governor.memory import malloc_trim
from monitoring.governor.readings import SystemReader
from monitoring.models import Allocation, AllocationEvent, RateLimitDenial, ResourceSample, ThrottleEvent


def usage_report(hours: float = 24.0) -> dict:
    since = timezone.now() - timedelta(hours=hours)
    samples = ResourceSample.objects.filter(at__gte=since).aggregate(
        samples=Count("id"), mean_cpu=Avg("cpu_percent"), peak_cpu=Max("cpu_percent"),
        mean_memory=Avg("memory_percent"), peak_memory=Max("memory_percent"), peak_rss=Max("rss_bytes"),
    )
    runs = {}
    if getattr(settings, "BALLAST_RUN_MODEL", None):  # runs are the using app's: named in settings
        run_model = apps.get_model(settings.BALLAST_RUN_MODEL)
        runs = dict(run_model.objects.filter(queued_at__gte=since).values_list("status").annotate(n=Count("id")))
    return {
        "hours": hours,
        "resources": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in samples.items()},
        "runs": runs,
        "throttle_events": dict(ThrottleEvent.objects.filter(created_at__gte=since).values_list("kind").annotate(n=Count("id"))),
        "ledger_events": dict(AllocationEvent.objects.filter(at__gte=since).values_list("kind").annotate(n=Count("id"))),
        "allocations_now": dict(Allocation.objects.live().values_list("state").annotate(n=Count("id"))),
        "rate_limit_denials": sum(RateLimitDenial.objects.filter(day__gte=since.date()).values_list("count", flat=True)),
    }


def connection_report() -> dict:
    """The database connection (and its pool, if any) and the Redis pool of the cache and broker."""
    connection = connections["default"]
    try:
        connection.ensure_connection()  # "connected" answers whether it can be, not whether it was yet
        database = {"vendor": connection.vendor, "connected": True}
    except DatabaseError as exc:
        database = {"vendor": connection.vendor, "connected": False, "error": str(exc).strip()[:200]}
    pool = getattr(connection, "pool", None) if connection.vendor == "postgresql" else None
    database["pool"] = pool.get_stats() if pool is not None else None
    redis_info = None
    if getattr(settings, "REDIS_URL", None):
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1)
        try:
            info = client.info("clients")
            redis_info = {"reachable": True, "connected_clients": info.get("connected_clients"), "blocked_clients": info.get("blocked_clients")}
        except redis.RedisError as exc:
            redis_info = {"reachable": False, "error": str(exc)}
        pool_ = client.connection_pool
        redis_info["this_process_pool"] = {"created": pool_._created_connections, "available": len(pool_._available_connections)}
    return {"database": database, "redis": redis_info}


def collect_garbage() -> dict:
    reader = SystemReader()
    before = reader.read().rss_bytes
    collected = gc.collect()
    trimmed = malloc_trim()
    after = reader.read().rss_bytes
    return {"rss_before": before, "rss_after": after, "objects_collected": collected, "malloc_trim": trimmed}

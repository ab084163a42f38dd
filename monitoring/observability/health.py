"""Liveness and readiness: what /healthz and /readyz answer."""

import time

from django.db import connections

from monitoring.governor.memory import pressure_level
from monitoring.governor.sampler import get_sampler

from .alerts import resource_alerts


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check() or {}
        ok = True
    except Exception as exc:  # any failure is the answer
        detail, ok = {"error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}, False
    return {"ok": ok, "ms": round((time.perf_counter() - started) * 1000, 1), **detail}


def _database():
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _broker():
    from django_q.brokers import get_broker

    broker = get_broker()
    if not broker.ping():
        raise RuntimeError("broker did not answer")
    return {"broker": broker.info()}


def running_clusters() -> list:
    """django-q2 clusters sharing our broker that reported themselves in the last few seconds."""
    from django_q.status import Stat

    return [stat for stat in Stat.get_all() if str(stat.status) != "Stopped"]


def cluster_is_running() -> bool:
    """True when a qcluster sharing our broker reported itself in the last few seconds."""
    try:
        return bool(running_clusters())
    except Exception:  # broker unreachable: no cluster we could use either
        return False


def _cluster():
    clusters = running_clusters()
    return {"clusters": len(clusters), "workers": sum(len(s.workers) for s in clusters)}


def resource_status(reading=None, cpu: float | None = None) -> dict:
    """ok | warning | critical from memory and CPU (warning 70%, critical 85%). `cpu`: the CPU
    averaged over the last seconds, when known (the governor holds the machine at its ceiling,
    so one 0.5 s reading over 85% is no crisis); else the reading's."""
    reading = reading or get_sampler().latest()
    cpu = reading.cpu_percent if cpu is None else cpu
    return {
        "status": pressure_level(max(reading.memory_percent, cpu)), "source": reading.source, "cpu_percent": round(cpu, 1),
        "memory_percent": round(reading.memory_percent, 1), "rss_bytes": reading.rss_bytes,
        "cpu_capacity": reading.cpu_capacity, "cpu_scope": reading.cpu_scope,
    }


def readiness() -> tuple[bool, dict]:
    """Ready when the database and the broker answer and resources are not critical.
    The cluster is reported (a web process can serve without one)."""
    checks = {"database": _timed(_database), "broker": _timed(_broker), "cluster": _timed(_cluster)}
    checks["cluster"]["ok"] = checks["cluster"]["ok"] and checks["cluster"].get("clusters", 0) > 0
    resources = resource_status(cpu=resource_alerts.cpu.value)  # averaged as the alerts see it
    ready = checks["database"]["ok"] and checks["broker"]["ok"] and resources["status"] != "critical"
    return ready, {"status": "ready" if ready else "not ready", "checks": checks, "resources": resources}

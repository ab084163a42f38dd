"""Overhead of the rate-limit middleware per request, with Redis, against the same view without it,
measured side by side in one run (in-process WSGI requests through Django's test client).

    REDIS_URL=redis://127.0.0.1:6379/15 DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast \
        .venv/bin/python bench/middleware.py [--requests 3000]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402

from monitoring.models import TenantQuota  # noqa: E402
from monitoring.ratelimit.middleware import RateLimitMiddleware  # noqa: E402
from syncapp.apikeys import create_key  # noqa: E402
from syncapp.models import Tenant  # noqa: E402


def view(request):
    return HttpResponse("ok")


def timings(handler, request, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        handler(request)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    Tenant.objects.filter(slug="bench-api").delete()
    tenant = Tenant.objects.create(slug="bench-api", name="bench", provider="demo")
    TenantQuota.objects.create(tenant=tenant, requests_per_minute=10**6)
    _, key = create_key(tenant)
    request = RequestFactory().get("/api/v1/runs/", HTTP_AUTHORIZATION=f"Bearer {key}")
    limited = RateLimitMiddleware(view)
    try:
        for handler in (view, limited):  # warm up: imports, the key cache, the Lua script
            timings(handler, request, 200)
        rounds = {"without": [], "with": []}
        for _ in range(5):  # interleaved, so both see the same machine
            rounds["without"] += timings(view, request, args.requests // 5)
            rounds["with"] += timings(limited, request, args.requests // 5)
    finally:
        tenant.delete()

    def p(values, q):
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1]

    store = "Redis" if getattr(settings, "REDIS_URL", None) else "Django cache"
    print(f"rate-limit middleware, {store}, {args.requests:,} requests each, times in ms")
    for name, values in rounds.items():
        print(f"{name:<8} p50 {p(values, 50):.3f}  p99 {p(values, 99):.3f}")
    print(f"overhead p50 {p(rounds['with'], 50) - p(rounds['without'], 50):.3f} ms, p99 {p(rounds['with'], 99) - p(rounds['without'], 99):.3f} ms")


if __name__ == "__main__":
    main()

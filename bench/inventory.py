"""The inventory a security team reads, at scale, in one run (PostgreSQL):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/inventory.py [--users 100000]

A demo tenant of --users users (about 3.4 tokens each) is synced once (its seconds are printed:
the grant timeline's trigger writes a row per token granted). Then, through Django's test client
logged in as a superuser, each page is fetched REPEAT times and its median reported: the
Applications list (riskiest first, and ordered by users), the Tokens list filtered by one
whole scope, searched by part of one, filtered by "not used in 90 days", and the API's tokens
filtered by scope. Last, `manage.py export SLUG tokens` writes every token to a file in a
process of its own, beside the same export of a tenant of about 10,000 tokens: seconds, rows/s
and peak RSS of each. Goal (issue 22): the big export's peak RSS ≤ 1.2× the small one's.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import fresh_tenant, timed_run  # noqa: I001  (sets Django up)
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from syncapp.apikeys import create_key
from syncapp.models import Token

ROOT = Path(__file__).resolve().parent.parent
REPEAT = 5
SMALL_USERS = 3_000  # about 10,000 tokens


def sync(slug: str, users: int):
    tenant = fresh_tenant(slug, provider="demo", provider_config={"users": users, "apps": 60, "seed": 22},
                          governor_settings={"max_cpu_percent": 100})
    run, seconds = timed_run(tenant, "users,tokens,relations")
    assert run.status == "completed", run.error
    return tenant, seconds


def median_ms(client: Client, url: str, params: dict, **headers) -> tuple[float, int]:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        response = client.get(url, params, **headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(times), len(response.content)


def export(slug: str, path: str) -> tuple[float, int, int]:
    """(seconds, rows, peak RSS bytes) of `manage.py export SLUG tokens --output path`, run as a
    process of its own (a forked child would start with this one's memory)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "manage.py", "export", slug, "tokens", "--output", path], cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    assert os.waitstatus_to_exitcode(status) == 0, f"export of {slug} failed"
    with open(path) as file:
        rows = sum(1 for _ in file) - 1
    return seconds, rows, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    args = parser.parse_args()
    big, seconds = sync("bench-inventory", args.users)
    tokens = Token.objects.filter(tenant=big).count()
    print(f"sync of {args.users:,} users, {tokens:,} tokens: {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s)")
    small, _ = sync("bench-inventory-small", SMALL_USERS)

    admin = get_user_model().objects.filter(username="bench-admin").first() or get_user_model().objects.create_superuser(
        "bench-admin", "bench@example.org", "bench")
    client = Client(HTTP_HOST="localhost")  # an allowed host of the default settings
    client.force_login(admin)
    scope = "https://www.googleapis.com/auth/drive.readonly"
    _, key = create_key(big, "bench")
    pages = [
        ("applications, riskiest first", reverse("admin:syncapp_application_changelist"), {"tenant__id__exact": big.pk}, {}),
        ("applications by users", reverse("admin:syncapp_application_changelist"), {"tenant__id__exact": big.pk, "o": "-3"}, {}),
        ("tokens with one scope", reverse("admin:syncapp_token_changelist"), {"tenant__id__exact": big.pk, "scope": scope}, {}),
        ("tokens searched 'drive'", reverse("admin:syncapp_token_changelist"), {"tenant__id__exact": big.pk, "q": "drive"}, {}),
        ("tokens not used in 90 days", reverse("admin:syncapp_token_changelist"), {"tenant__id__exact": big.pk, "unused": "yes"}, {}),
        ("API tokens?scope=", "/api/v1/tokens/", {"scope": scope, "page_size": 200}, {"HTTP_AUTHORIZATION": f"Bearer {key}"}),
        ("API applications?order=risk", "/api/v1/applications/", {"order": "risk"}, {"HTTP_AUTHORIZATION": f"Bearer {key}"}),
    ]
    print(f"\n{'page':32} {'median ms':>10} {'bytes':>10}")
    for name, url, params, headers in pages:
        ms, size = median_ms(client, url, params, **headers)
        print(f"{name:32} {ms:10.1f} {size:10,}")

    print(f"\n{'export':12} {'tokens':>9} {'seconds':>8} {'rows/s':>9} {'peak RSS MB':>12}")
    peaks = {}
    for tenant in (small, big):
        seconds, rows, peak = export(tenant.slug, f"/tmp/ballast-export-{tenant.slug}.csv")
        peaks[tenant.slug] = peak
        print(f"{tenant.slug:12.12} {rows:9,} {seconds:8.1f} {rows / seconds:9,.0f} {peak / 2**20:12.1f}")
    print(f"peak RSS, {tokens:,}-token export / small export: {peaks[big.slug] / peaks[small.slug]:.2f}× (goal ≤ 1.2×)")


if __name__ == "__main__":
    main()

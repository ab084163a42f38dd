"""Rows per second of each sync step next to a plain bulk_create of the same rows, in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/sync_throughput.py [--users 10000]

Uses its own tenants (bench-sync, bench-plain) and removes them afterwards. The demo
provider runs with latency_ms=0 so both sides measure Python and the database.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from monitoring.governor.profiles import route_policy  # noqa: E402
from syncapp.models import Application, DirectoryUser, SyncRun, Tenant, Token, UserAppRelation  # noqa: E402
from syncapp.providers.demo import DemoProvider  # noqa: E402
from syncapp.records import parse_token, parse_user  # noqa: E402
from syncapp.runs import start_run  # noqa: E402
from syncapp.tasks import run_in_process  # noqa: E402


def plain_bulk_create(tenant: Tenant, config: dict, batch: int) -> dict[str, tuple[int, float]]:
    """The same rows, written with bulk_create into an empty tenant: no compare, no counters, no checkpoints."""
    provider = DemoProvider(config)
    records = [parse_user(r) for page in provider.user_pages() for r in page.records]
    grants = {r["external_id"]: [parse_token(t) for t in provider.user_tokens(r["external_id"])] for r in records}
    now = timezone.now()
    results = {}

    started = time.perf_counter()
    DirectoryUser.objects.bulk_create(
        [DirectoryUser(tenant=tenant, first_seen=now, last_seen=now, **r) for r in records], batch_size=batch
    )
    results["users"] = (len(records), time.perf_counter() - started)

    started = time.perf_counter()
    apps = {g["client_id"]: g for gs in grants.values() for g in gs}
    Application.objects.bulk_create(
        [Application(tenant=tenant, client_id=c, display_name=g["display_name"], native_app=g["native_app"], first_seen=now, last_seen=now) for c, g in apps.items()],
        batch_size=batch,
    )
    app_ids = dict(Application.objects.filter(tenant=tenant).values_list("client_id", "pk"))
    user_ids = dict(DirectoryUser.objects.filter(tenant=tenant).values_list("external_id", "pk"))
    tokens = [
        Token(tenant=tenant, user_id=user_ids[u], application_id=app_ids[g["client_id"]], scopes=g["scopes"],
              anonymous=g["anonymous"], native_app=g["native_app"], first_seen=now, last_seen=now)
        for u, gs in grants.items() for g in gs
    ]
    Token.objects.bulk_create(tokens, batch_size=batch)
    results["tokens"] = (len(tokens), time.perf_counter() - started)

    started = time.perf_counter()
    relations = [
        UserAppRelation(tenant=tenant, user_id=t.user_id, application_id=t.application_id, scopes=t.scopes, first_seen=now, last_seen=now)
        for t in Token.objects.filter(tenant=tenant).only("user_id", "application_id", "scopes").iterator(chunk_size=2000)
    ]
    UserAppRelation.objects.bulk_create(relations, batch_size=batch)
    results["relations"] = (len(relations), time.perf_counter() - started)
    return results


def plain_copy(tenant: Tenant) -> dict[str, tuple[int, float]]:
    """Each table's rows of the synced tenant, COPied (binary) into an empty scratch table: what
    PostgreSQL takes when nothing is compared or counted (the sync's own writer stages by COPY too)."""
    results = {}
    with connection.cursor() as cursor:
        for step, model in (("users", DirectoryUser), ("tokens", Token), ("relations", UserAppRelation)):
            table = model._meta.db_table
            cursor.execute(f"SELECT * FROM {table} WHERE tenant_id = %s", [tenant.pk])
            rows = cursor.fetchall()
            cursor.execute(f"CREATE TEMP TABLE bench_copy AS SELECT * FROM {table} WITH NO DATA")
            started = time.perf_counter()
            with cursor.copy("COPY bench_copy FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            results[step] = (len(rows), time.perf_counter() - started)
            cursor.execute("DROP TABLE bench_copy")
    return results


def synced(tenant: Tenant) -> dict[str, tuple[int, float]]:
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, enqueue=False)
    run_in_process(run.pk)
    run.refresh_from_db()
    assert run.status == "completed", run.status
    return {s.name: (s.created + s.updated + s.unchanged, s.duration_s) for s in run.step_records.all()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    config = {"users": args.users, "apps": 40, "seed": 11, "latency_ms": 0}
    batch = route_policy("users").batch_size
    Tenant.objects.filter(slug__in=["bench-sync", "bench-plain"]).delete()
    sync_tenant = Tenant.objects.create(slug="bench-sync", name="bench", provider="demo", provider_config=config)
    plain_tenant = Tenant.objects.create(slug="bench-plain", name="bench", provider="demo", provider_config=config)
    try:
        first = synced(sync_tenant)
        second = synced(sync_tenant)
        plain = plain_bulk_create(plain_tenant, config, batch)
        copied = plain_copy(sync_tenant) if connection.vendor == "postgresql" else None
    finally:
        Tenant.objects.filter(pk__in=[sync_tenant.pk, plain_tenant.pk]).delete()

    print(f"{connection.vendor}, {args.users:,} demo users, profile {settings.BALLAST_SYNC_PROFILE}, batch size {batch}")
    print(f"{'step':<10}{'rows':>8}{'first sync r/s':>16}{'second sync r/s':>17}{'bulk_create r/s':>17}{'first/bulk':>12}"
          + (f"{'raw COPY r/s':>14}{'first/COPY':>12}" if copied else ""))
    for step in ("users", "tokens", "relations"):
        rows, seconds = first[step]
        rate = rows / seconds
        again = second[step][0] / second[step][1]
        base = plain[step][0] / plain[step][1]
        line = f"{step:<10}{rows:>8,}{rate:>16,.0f}{again:>17,.0f}{base:>17,.0f}{rate / base:>12.2f}"
        if copied:
            raw = copied[step][0] / copied[step][1]
            line += f"{raw:>14,.0f}{rate / raw:>12.2f}"
        print(line)
    print("first sync: empty tenant (inserts); second sync: same data (compare + stamp); bulk_create: rows prepared "
          "beforehand; raw COPY: the synced rows into an empty scratch table (PostgreSQL)")


if __name__ == "__main__":
    main()

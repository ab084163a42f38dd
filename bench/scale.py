"""Full first and second syncs of demo organisations of growing size, next to raw COPY and
bulk_create of as many token rows, in one run (PostgreSQL):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/scale.py --users 20000,100000

Per size: rows/s of each step, the whole sync's seconds, the peak RSS of the process that ran
both syncs (each size runs in a child process of its own, so one size's peak is not another's),
and the rows PostgreSQL read for it (pg_stat_user_tables: sequential + index fetches). The
baselines write as many token rows as the first sync did, up to BASELINE_ROWS, in a child too. The governor runs
uncapped (max_cpu_percent 100) and the provider without latency, so Python and the database are
what is measured. Goals (issue 11): 100k ≤ 5.5× the 20k time, 1M ≤ 11× the 100k time; first-sync
tokens ≥ 50% of raw COPY's rows/s; an unchanged second sync ≥ 30,000 rows/s; peak RSS ≤ 256 MB at 1M.
"""

import argparse
import resource
import time

from common import drop_tenant, fresh_tenant, in_child, timed_run  # noqa: I001  (sets Django up)
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from syncapp.models import Application, DirectoryUser, Tenant, Token
from syncapp.writers import upsert_rows

TABLES = ("syncapp_directoryuser", "syncapp_application", "syncapp_token", "syncapp_userapprelation")


def rows_read() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0) FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            [list(TABLES)],
        )
        return int(cursor.fetchone()[0])


def stats_settle() -> None:
    """The statistics collector reports a little late: let the figures of the last run arrive."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(tenant) -> dict:
    stats_settle()
    before = rows_read()
    run, seconds = timed_run(tenant, "users,tokens,relations")
    assert run.status == "completed", (run.status, run.error)
    stats_settle()
    steps = {s.name: s for s in run.step_records.all()}
    return {
        "seconds": seconds,
        "rates": {name: (s.created + s.updated + s.unchanged) / s.duration_s for name, s in steps.items()},
        "rows": sum(s.created + s.updated + s.unchanged for s in steps.values()),
        "tokens": steps["tokens"].created + steps["tokens"].updated + steps["tokens"].unchanged,
        "read": rows_read() - before,
        "rss": peak_rss_mb(),
    }


TOKEN_COLUMNS = "tenant_id, user_id, application_id, scopes, anonymous, native_app, first_seen, last_seen"
TOKEN_TYPES = ["int8", "int8", "int8", "jsonb", "bool", "bool", "timestamptz", "timestamptz"]
BATCH = 1000  # rows per transaction: the tokens step's COPY batch at the default batch size (100 × 10)


def _copy(cursor, table: str, rows) -> None:
    with cursor.copy(f"COPY {table} ({TOKEN_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(TOKEN_TYPES)
        for row in rows:
            copy.write_row(row)


def baselines(source, tokens: int) -> dict:
    """Rows/s of `tokens` token rows written four ways:
    - copy: raw COPY, one statement, into an unlogged table without indexes (the wire's ceiling);
    - copy_batched: COPY in the step's batches, a transaction each, into a logged table with
      syncapp_token's indexes (what PostgreSQL takes for these rows as a sync commits them);
    - writer: Ballast's writer alone (upsert_rows, same batches), rows built beforehand;
    - bulk_create: Django's, batch_size 1000, into a scratch tenant."""
    users = list(DirectoryUser.objects.filter(tenant=source).values_list("pk", flat=True)[:tokens])
    apps = list(Application.objects.filter(tenant=source).values_list("pk", flat=True))
    pairs = [(users[i % len(users)], apps[i // len(users) % len(apps)]) for i in range(tokens)]
    now = timezone.now()
    rates = {}
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_copy")
        cursor.execute("CREATE UNLOGGED TABLE bench_copy AS SELECT * FROM syncapp_token WITH NO DATA")
        started = time.perf_counter()
        _copy(cursor, "bench_copy", ((source.pk, u, a, ["openid", "email"], False, False, now, now) for u, a in pairs))
        rates["copy"] = tokens / (time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_copy")
        cursor.execute("CREATE TABLE bench_copy (LIKE syncapp_token INCLUDING ALL)")
        started = time.perf_counter()
        for start in range(0, tokens, BATCH):
            with transaction.atomic():
                _copy(cursor, "bench_copy", ((source.pk, u, a, ["openid", "email"], False, False, now, now) for u, a in pairs[start : start + BATCH]))
        rates["copy_batched"] = tokens / (time.perf_counter() - started)
        cursor.execute("DROP TABLE bench_copy")
    scratch = fresh_tenant("bench-scale-plain")
    rows = [{"user_id": u, "application_id": a, "scopes": ["openid", "email"], "anonymous": False, "native_app": False, "revoked_at": None}
            for u, a in pairs]
    started = time.perf_counter()
    for start in range(0, tokens, BATCH):
        with transaction.atomic():
            upsert_rows(Token, tenant_id=scratch.pk, rows=rows[start : start + BATCH], key=("user_id", "application_id"),
                        compare=("scopes", "anonymous", "native_app", "revoked_at"), now=now)
    rates["writer"] = tokens / (time.perf_counter() - started)
    drop_tenant(scratch)
    scratch = fresh_tenant("bench-scale-plain")
    started = time.perf_counter()
    Token.objects.bulk_create(
        [Token(tenant=scratch, user_id=u, application_id=a, scopes=["openid", "email"], first_seen=now, last_seen=now) for u, a in pairs],
        batch_size=1000,
    )
    rates["bulk_create"] = tokens / (time.perf_counter() - started)
    drop_tenant(scratch)
    return rates


BASELINE_ROWS = 300_000  # rates need no more, and bulk_create holds every object in memory


def both_syncs(size: int) -> dict:
    tenant = fresh_tenant("bench-scale", provider_config={"users": size, "apps": 40, "seed": 5, "latency_ms": 0})
    first, second = sync(tenant), sync(tenant)
    return {"first": first, "second": second, "tenant": tenant.pk}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="20000,100000", help="comma-separated sizes")
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "a PostgreSQL benchmark: set DATABASE_URL"
    call_command("migrate", verbosity=0)
    settings.BALLAST_GOVERNOR = {"max_cpu_percent": 100.0}
    print(f"{'users':>9}{'sync':>7}{'seconds':>9}{'users r/s':>11}{'tokens r/s':>12}{'relations r/s':>15}{'rows':>10}"
          f"{'PG rows read':>14}{'peak RSS MB':>13}{'COPY r/s':>10}{'COPY/1000 r/s':>15}{'writer r/s':>12}{'bulk r/s':>10}", flush=True)
    results = {}
    for size in [int(s) for s in args.users.split(",")]:
        syncs = results[size] = in_child(both_syncs, size)
        tenant = Tenant.objects.get(pk=syncs["tenant"])
        base = in_child(baselines, tenant, min(syncs["first"]["tokens"], BASELINE_ROWS))
        for name in ("first", "second"):
            r = syncs[name]
            rates = r["rates"]
            print(f"{size:>9,}{name:>7}{r['seconds']:>9.1f}{rates['users']:>11,.0f}{rates['tokens']:>12,.0f}{rates['relations']:>15,.0f}"
                  f"{r['rows']:>10,}{r['read']:>14,}{r['rss']:>13.0f}" + (f"{base['copy']:>10,.0f}{base['copy_batched']:>15,.0f}{base['writer']:>12,.0f}{base['bulk_create']:>10,.0f}"
                     if name == "first" else ""),
                  flush=True)
        syncs["base"] = base
        drop_tenant(tenant)
    print_goals(results)


def print_goals(results: dict) -> None:
    """Issue 11's goals, judged on this run's figures."""
    def judged(ok: bool) -> str:
        return "met" if ok else "NOT met"

    sizes = sorted(results)
    print("goals:")
    for small, large, limit in ((20_000, 100_000, 5.5), (100_000, 1_000_000, 11.0)):
        if small in results and large in results:
            for name in ("first", "second"):
                ratio = results[large][name]["seconds"] / results[small][name]["seconds"]
                print(f"  {name} sync {large:,} ÷ {small:,} users: {ratio:.1f}× (≤ {limit}×) {judged(ratio <= limit)}")
    for size in sizes:
        r = results[size]
        second = r["second"]["rows"] / r["second"]["seconds"]
        tokens = r["first"]["rates"]["tokens"]
        print(f"  {size:,} users: unchanged second sync {second:,.0f} rows/s (≥ 30,000) {judged(second >= 30_000)}; "
              f"first-sync tokens {tokens / r['base']['copy']:.0%} of raw COPY (≥ 50%) {judged(tokens >= r['base']['copy'] / 2)}, "
              f"{tokens / r['base']['copy_batched']:.0%} of COPY in 1,000-row transactions; "
              f"peak RSS {max(r['first']['rss'], r['second']['rss']):.0f} MB (≤ 256) {judged(max(r['first']['rss'], r['second']['rss']) <= 256)}")


if __name__ == "__main__":
    main()

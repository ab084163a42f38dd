"""Import of GAM tokens CSVs of growing size, each in a child process of its own, in one run:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/import_files.py [--rows 10000,1000000]

Per file: its size, the tokens step's rows/s (the read into the stage and the write, together),
the whole run's seconds, and the peak RSS of the process that ran it. Each file has 10 tokens per
user (so 1,000,000 rows are 100,000 users' tokens; the import makes them placeholder users), 40
applications. The governor runs uncapped (max_cpu_percent 100), as in bench/scale.py: what is
measured is the reading, Python and the database. Goal (issue 13): the 1,000,000-row file's peak
RSS ≤ 1.2× the 10,000-row file's — memory does not grow with the file.
"""

import argparse
import csv
import random
import resource
import tempfile
import time
from pathlib import Path

from common import drop_tenant, fresh_tenant, in_child  # noqa: I001  (sets Django up)
from django.conf import settings
from django.core.management import call_command

from syncapp.imports import import_source, start_import
from syncapp.models import SyncRun
from syncapp.tasks import run_in_process

TOKENS_PER_USER, APPS = 10, 40
SCOPES = ["openid", "https://www.googleapis.com/auth/userinfo.email", "https://www.googleapis.com/auth/calendar.readonly",
          "https://www.googleapis.com/auth/drive.file", "https://www.googleapis.com/auth/gmail.readonly"]


def write_tokens_csv(path: Path, rows: int) -> Path:
    """A `gam all users print tokens` CSV: rows / 10 users with 10 tokens each, grouped by user as GAM writes them."""
    chance = random.Random(rows)
    apps = [(f"{n:010d}-app{n}.apps.googleusercontent.com", f"App {n}") for n in range(APPS)]
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user", "clientId", "displayText", "anonymous", "nativeApp", "scopes", "userKey"])
        for user in range(rows // TOKENS_PER_USER):
            email, key = f"user{user}@bench.example", f"1{user:011d}"
            for client, name in chance.sample(apps, TOKENS_PER_USER):
                scopes = " ".join(chance.sample(SCOPES, chance.randint(1, 4)))
                writer.writerow([email, client, name, "False", "False", scopes, key])
    return path


def import_file(path: Path) -> dict:
    """In a child: import the file into a fresh tenant; seconds, rates and this process's peak RSS."""
    tenant = fresh_tenant("bench-import")
    run = start_import(tenant, import_source(tokens=path), enqueue=False)
    started = time.perf_counter()
    run_in_process(run.pk)
    seconds = time.perf_counter() - started
    run = SyncRun.objects.get(pk=run.pk)
    tokens = run.step_records.get(name="tokens")
    assert run.status == "completed", (run.status, run.error)
    result = {"seconds": seconds, "rows": tokens.received, "created": tokens.created, "tokens_s": tokens.duration_s,
              "step_rss_mb": (tokens.peak_rss_bytes or 0) / 2**20,
              "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    drop_tenant(tenant)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,1000000", help="comma-separated file sizes, in rows")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    settings.BALLAST_GOVERNOR = {"max_cpu_percent": 100.0}
    sizes = [int(s) for s in args.rows.split(",")]
    print(f"{'rows':>10}{'file MB':>9}{'run s':>8}{'tokens r/s':>12}{'peak RSS MB':>13}{'step peak MB':>14}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for rows in sizes:
            path = write_tokens_csv(Path(folder) / f"tokens-{rows}.csv", rows)
            r = results[rows] = in_child(import_file, path)
            assert r["rows"] == rows and r["created"] == rows, r
            print(f"{rows:>10,}{path.stat().st_size / 2**20:>9.1f}{r['seconds']:>8.1f}{rows / r['tokens_s']:>12,.0f}"
                  f"{r['rss_mb']:>13.0f}{r['step_rss_mb']:>14.0f}", flush=True)
            path.unlink()
    small, large = min(sizes), max(sizes)
    if small != large:
        ratio = results[large]["rss_mb"] / results[small]["rss_mb"]
        print(f"goal: peak RSS at {large:,} rows ÷ at {small:,}: {ratio:.2f}× (≤ 1.2×) {'met' if ratio <= 1.2 else 'NOT met'}")


if __name__ == "__main__":
    main()

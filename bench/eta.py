"""How true the ETA is: a demo sync followed second by second, each moment's ETA against the time
that was really left, for the run's ETA as shown now (recent rates, and the steps still to come
as long as they took last time) and as it was (each running step's average rate since it began,
the steps to come left out), on the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/eta.py [--users 20000] [--hog-core 1]

With --hog-core, a CPU hog pinned to that core runs beside the sync (as in bench/neighbour.py):
the governor holds the sync, and its steps' rates change as the hold does.

The tenant syncs once for the history its next run's ETA reckons with; its directory is emptied
and it syncs again, followed: the same work twice.
"""

import argparse
import statistics
import subprocess
import sys
import threading
import time

from common import drop_tenant, fresh_tenant  # noqa: I001 (sets Django up first)
from django.core.management import call_command
from django.db import connections

from monitoring.observability.eta import estimate, remaining_s
from syncapp.models import Application, DirectoryUser, GrantEvent, SyncRun, Token, UserAppRelation
from syncapp.progress import run_eta_words
from syncapp.runs import start_run
from syncapp.tasks import run_in_process


def seconds_of(words: str) -> float | None:
    """'1 min 05 s' or '28 s' (the words' duration; None for '' or one with steps of unknown length)."""
    if not words or "then" in words:
        return None
    parts, total = words.split(), 0.0
    for number, unit in zip(parts[::2], parts[1::2]):
        total += int(number) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


def followed_run(tenant, every_s: float) -> tuple[list[tuple[float, float | None, float | None]], float]:
    """Run a full sync in a thread; every `every_s`, (time, ETA now, ETA as it was). Returns them and the end time."""
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, enqueue=False)
    worker = threading.Thread(target=lambda: (run_in_process(run.pk), connections.close_all()))
    started = time.monotonic()
    worker.start()
    seen = []
    while worker.is_alive():
        time.sleep(every_s)
        current = SyncRun.objects.get(pk=run.pk)
        if current.status != "running":
            continue
        steps = list(current.step_records.all())
        if not any(s.status == "running" for s in steps):
            continue
        now = seconds_of(run_eta_words(current))
        was = remaining_s([estimate(done=s.done, expected=s.expected, elapsed_s=s.duration_s, ended=False)
                           for s in steps if s.status == "running"])
        seen.append((time.monotonic() - started, now, was))
    worker.join()
    return seen, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=5, help="per provider call, as in make demo")
    parser.add_argument("--hog-core", type=int, default=None, help="a CPU hog pinned to this core beside the sync")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    hog = None
    if args.hog_core is not None:
        hog = subprocess.Popen(["taskset", "-c", str(args.hog_core), sys.executable, "-c", "while True: pass"])
    try:
        tenant = fresh_tenant("bench-eta", provider="demo", provider_config={"users": args.users, "apps": 30, "seed": 7, "latency_ms": args.latency_ms})
        followed_run(tenant, 1.0)  # the history
        for model in (GrantEvent, UserAppRelation, Token, Application, DirectoryUser):
            model.objects.filter(tenant=tenant).delete()
        seen, total = followed_run(tenant, 0.5)
        drop_tenant(tenant)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    beside = f", beside a CPU hog on core {args.hog_core}" if hog is not None else ""
    print(f"demo sync of {args.users:,} users ({args.latency_ms} ms per call){beside}, {total:.1f} s; the ETA said at each moment against the time left")
    print(f"{'moment':>8}{'left':>8}{'ETA now':>10}{'ratio':>8}{'ETA as it was':>15}{'ratio':>8}")
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
        at, now, was = min(seen, key=lambda row: abs(row[0] - fraction * total))
        left = total - at
        print(f"{at:>7.1f}s{left:>7.1f}s{_s(now):>10}{_ratio(now, left):>8}{_s(was):>15}{_ratio(was, left):>8}")
    for name, column in (("now", 1), ("as it was", 2)):
        ratios = [row[column] / (total - row[0]) for row in seen if row[column] is not None and total - row[0] > 1]
        if ratios:
            print(f"ETA {name}: said / left, median {statistics.median(ratios):.2f} (1.00 is true), "
                  f"{sum(1 for r in ratios if 0.67 <= r <= 1.5) / len(ratios):.0%} of moments within 1.5x either way")


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


def _ratio(said: float | None, left: float) -> str:
    return "—" if said is None or left <= 0 else f"{said / left:.2f}"


if __name__ == "__main__":
    main()

"""A sync beside a busy neighbour: a real CPU hog pinned to one core while a demo sync runs under
the default ceiling, next to the same sync under MAX_CPU_PERCENT=100 with the same hog, in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast .venv/bin/python bench/neighbour.py [--users 20000]

Reports the worst 5 s window of the machine's CPU (read from /proc/stat, not through Ballast),
rows/s of both syncs and their ratio, concurrency changes and warning lines per minute. With a
hog on one of two cores and an 80% ceiling the headroom is 60% of a core's worth of the rest:
the ceilinged sync should reach at least half the uncapped one's rate. Each sync's log goes to
bench/results/neighbour-<case>.log, the machine's CPU second by second to neighbour-<case>.csv,
and the run page's chart of it to neighbour-<case>.svg.
"""

import argparse
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil

os.environ.setdefault("LOG_LEVEL", "INFO")  # count every line the cluster log would hold

from common import MachineCpu, fresh_tenant, timed_run  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from monitoring.governor.profiles import route_policy  # noqa: E402
from monitoring.models import ThrottleEvent  # noqa: E402
from monitoring.observability.charts import owner_chart  # noqa: E402
from syncapp.runs import run_owner  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CEILING = 80.0
LOGGERS = ("syncapp", "monitoring", "django_q", "")


class CountingHandler(logging.FileHandler):
    """Writes the log to a file and counts its lines by level."""

    def __init__(self, path: Path):
        super().__init__(path, mode="w")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.levels: Counter = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[record.levelname] += 1
        super().emit(record)


def one_case(name: str, slug: str, governor: dict, config: dict, hog: psutil.Process) -> dict:
    settings.BALLAST_GOVERNOR = governor
    handler = CountingHandler(RESULTS / f"neighbour-{slug}.log")
    saved = {}
    for logger_name in LOGGERS:
        logger = logging.getLogger(logger_name)
        saved[logger_name] = logger.handlers[:]
        logger.handlers = [handler]
    tenant = fresh_tenant(f"bench-neighbour-{slug}", provider="demo", provider_config=config)
    hog_before = sum(hog.cpu_times()[:2])
    try:
        with MachineCpu() as machine:
            run, seconds = timed_run(tenant, "users,tokens,relations")
        hog_cores = (sum(hog.cpu_times()[:2]) - hog_before) / seconds
    finally:
        for logger_name, handlers in saved.items():
            logging.getLogger(logger_name).handlers = handlers
        handler.close()
    minutes = seconds / 60
    rows = sum(s.received for s in run.step_records.all())
    changed_at = list(ThrottleEvent.objects.filter(owner=run_owner(run.pk), kind="concurrency").order_by("created_at")
                      .values_list("created_at", flat=True))
    changes = len(changed_at)
    # The goal is a bound on flapping: changes within any one minute (a run shorter than a minute
    # has its few changes, the start of each step, in one).
    worst_minute = max((sum(1 for t in changed_at if 0 <= (t - start).total_seconds() < 60) for start in changed_at), default=0)
    warnings = handler.levels["WARNING"] + handler.levels["ERROR"] + handler.levels["CRITICAL"]
    windows = machine.windows()
    steps = {s.name: max(machine.windows(during=(s.started_at.timestamp(), s.finished_at.timestamp())), default=0.0)
             for s in run.step_records.all()}
    others = machine.windows(others=True)  # the hog, the database server, everything but the sync itself
    under = [w for w, o in zip(windows, others) if o < CEILING]
    policy = route_policy("run")
    chart = owner_chart(run_owner(run.pk), cpu_ceiling=policy.max_cpu_percent, memory_ceiling=policy.max_memory_percent)
    (RESULTS / f"neighbour-{slug}.svg").write_text(chart)  # the run page's picture of this run
    (RESULTS / f"neighbour-{slug}.csv").write_text(
        "second,machine_cpu_percent\n" + "".join(f"{n},{v:.1f}\n" for n, v in enumerate(machine.windows(1)))
    )
    tenant.delete()
    return {
        "name": name, "status": run.status, "seconds": seconds, "rows": rows, "rate": rows / seconds,
        "worst": max(windows, default=0.0), "steps": steps, "worst_under": max(under, default=0.0), "mean": sum(windows) / max(len(windows), 1), "hog": 100 * hog_cores / (os.cpu_count() or 1),
        "changes_per_min": changes / minutes, "worst_minute": worst_minute, "warnings_per_min": warnings / minutes,
        "lines_per_min": sum(handler.levels.values()) / minutes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=5, help="per provider call, as in make demo")
    parser.add_argument("--hog-core", type=int, default=1, help="the core the CPU hog is pinned to")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    RESULTS.mkdir(exist_ok=True)
    config = {"users": args.users, "apps": 30, "seed": 7, "latency_ms": args.latency_ms}
    hog = subprocess.Popen(["taskset", "-c", str(args.hog_core), sys.executable, "-c", "while True: pass"])
    try:
        results = [
            one_case("default ceiling (80%)", "ceiling", {}, config, psutil.Process(hog.pid)),
            one_case("MAX_CPU_PERCENT=100", "uncapped", {"max_cpu_percent": 100.0}, config, psutil.Process(hog.pid)),
        ]
    finally:
        hog.kill()
        hog.wait()
    print(f"demo sync of {args.users:,} users ({args.latency_ms} ms per call) beside a CPU hog pinned to core {args.hog_core}, "
          f"{os.cpu_count()} CPUs; machine CPU from /proc/stat")
    print(f"{'case':<24}{'status':<11}{'seconds':>8}{'rows/s':>8}{'worst 5 s CPU %':>17}{'(others < 80%)':>16}{'mean %':>8}{'hog %':>7}"
          f"{'changes/min':>13}{'in a minute':>13}{'warnings/min':>14}{'log lines/min':>15}")
    for r in results:
        print(f"{r['name']:<24}{r['status']:<11}{r['seconds']:>8.1f}{r['rate']:>8,.0f}{r['worst']:>17.1f}{r['worst_under']:>16.1f}"
              f"{r['mean']:>8.1f}{r['hog']:>7.1f}{r['changes_per_min']:>13.1f}{r['worst_minute']:>13}{r['warnings_per_min']:>14.1f}"
              f"{r['lines_per_min']:>15.1f}")
    print("worst 5 s machine CPU % of the windows that overlap each step (goal <= 85% in every step, capped):")
    for r in results:
        print(f"  {r['name']:<24}" + "".join(f"{name} {worst:5.1f}   " for name, worst in r["steps"].items()))
    print("(others < 80%): the worst window among those where everything but the sync (the hog, the database server,")
    print("the rest of the machine) used less than the ceiling, the case the governor can hold")
    capped, uncapped = results
    # What the ceiling leaves the sync (and the database working for it), against what it used uncapped.
    allows = (CEILING - capped["hog"]) / (uncapped["mean"] - uncapped["hog"])
    print(f"ceilinged / uncapped rate: {capped['rate'] / uncapped['rate']:.0%} (goal >= 50%, and <= 6 concurrency changes in a minute; "
          f"the headroom allows about {allows:.0%}: 80% less the hog's {capped['hog']:.0f}%, against the "
          f"{uncapped['mean'] - uncapped['hog']:.0f}% the sync and its database took uncapped)")


if __name__ == "__main__":
    main()

"""Governor benchmarks: each prints figures measured side by side in one run (not timed tests).

    .venv/bin/python bench/governor.py latency [--users 1000 5000]       20 ms calls: default vs MAX_CONCURRENCY=1 vs a fixed two in flight
    .venv/bin/python bench/governor.py errors [--users 1000 2000 5000]   Google loopback, 20 ms calls: a 503 every 37th call vs none
    .venv/bin/python bench/governor.py sporadic [--users 1000 5000]      Google loopback: 1% of answers 403 rateLimitExceeded vs none
    .venv/bin/python bench/governor.py quota [--users 800 5000]          from cold, a provider that answers 429 above 40 calls/s
    taskset -c 0 .venv/bin/python bench/governor.py cpu                  pinned to one core: MAX_CPU_PERCENT=50 vs unthrottled
    .venv/bin/python bench/governor.py memory [--users 50000]            MAX_RSS_USAGE_MB=256: peak RSS, every row stored

Set DATABASE_URL for PostgreSQL (recommended). Each uses its own tenants and removes them.
"""

import argparse
import os
import threading
import time
from pathlib import Path

import psutil
from common import directory_in_child, fresh_tenant, timed_run  # noqa: I001 (sets Django up first)
from django.conf import settings
from django.core.management import call_command

from monitoring.governor.readings.cpu import busy_seconds
from syncapp.models import DirectoryUser, Token, UserAppRelation
from tests.conftest import demo_org


def latency(args) -> None:
    for users in args.users:
        latency_case(users)


def latency_case(users: int) -> None:
    config = {"users": users, "apps": 30, "seed": 5, "latency_ms": 20}
    cases = [
        ("default profile", {}, {}),
        ("MAX_CONCURRENCY=1", {"max_concurrency": 1}, {}),
        ("a fixed two in flight (tokens: 2)", {}, {"io_max_concurrency": 2}),
    ]
    print(f"tokens step, {users:,} users, 20 ms per provider call")
    print(f"{'case':<32}{'seconds':>9}{'tokens/s':>10}{'speed-up':>10}{'peak CPU %':>12}{'peak RSS MB':>13}")
    results = []
    for name, environment, overrides in cases:
        settings.BALLAST_GOVERNOR = environment
        tenant = fresh_tenant("bench-latency", provider="demo", provider_config=config, governor_settings=overrides)
        run, seconds = timed_run(tenant, "tokens")
        step = run.step_records.get()
        results.append((name, seconds, step))
        tenant.delete()
    single = results[1][1]
    for name, seconds, step in results:
        print(f"{name:<32}{seconds:>9.1f}{step.received / seconds:>10,.0f}{single / seconds:>9.1f}×{step.peak_cpu_percent:>12.0f}{step.peak_rss_bytes / 2**20:>13.0f}")


def _loopback_case(users: int, **faults) -> tuple[float, str, dict]:
    """The tokens step against Google's API on loopback (a server in its own process, 20 ms per
    call) with these faults: (seconds, status, the server's counts)."""
    with directory_in_child(users, 0.02, **faults) as (url, counts):
        tenant = fresh_tenant("bench-faults", provider="google", provider_config={"base_url": url, "access_token": "static-test-token"})
        try:
            run, seconds = timed_run(tenant, "tokens")
        finally:
            tenant.delete()
    return seconds, run.status, counts


def _fault_free_against(args, faulty: str, faults: dict, counted: str, heading: str, words: str, goal: str = "") -> None:
    """The same tokens step without and with `faults`, in interleaved rounds (the machine's own
    noise is as large as what is measured), after an untimed warm-up step (the process's first
    starts its sampler and connections); `counted`: the server's count of the faulty answers."""
    settings.BALLAST_GOVERNOR = {}
    cases = (("no faults", {}), (faulty, faults))
    _loopback_case(100)
    for users in args.users:
        print(f"tokens step, {users:,} users, Google loopback server (own process), 20 ms per call, {args.rounds} rounds each, interleaved")
        print(f"{'case':<30}{'status':<12}{'seconds, each round':>26}{'mean':>8}{'tokens.list calls':>19}{heading:>6}")
        results = {name: [] for name, _ in cases}
        for _ in range(args.rounds):
            for name, case in cases:
                results[name].append(_loopback_case(users, **case))
        means = {}
        for name, rounds in results.items():
            means[name] = sum(r[0] for r in rounds) / len(rounds)
            status = ",".join(sorted({r[1] for r in rounds}))
            print(f"{name:<30}{status:<12}{' '.join(f'{r[0]:.2f}' for r in rounds):>26}{means[name]:>8.2f}"
                  f"{rounds[-1][2]['tokens_calls']:>19,}{rounds[-1][2][counted]:>6}")
        print(f"{words} cost {means[faulty] / means['no faults'] - 1:+.0%} of the fault-free time{goal}")


def errors(args) -> None:
    """A 503 every 37th call against none."""
    _fault_free_against(args, "a 503 every 37th call", {"flaky_every": 37}, "flaky_answers", "503s", "the 503s")


def sporadic(args) -> None:
    """Google's sporadic 403 rateLimitExceeded, well under any quota: 1% of the answers refused at
    random against none."""
    _fault_free_against(args, f"{args.share:.0%} 403 rateLimitExceeded", {"rate_limited_share": args.share}, "rate_limited", "403s",
                        "the push-backs", " (goal <= +30%)")


def quota(args) -> None:
    """From cold against a provider that answers 429 above 40 calls/s (the server in its own
    process): how much of the quota the tokens step used and how many of its calls were refused."""
    settings.BALLAST_GOVERNOR = {}
    limit = 40
    print(f"tokens step from cold against a provider that answers 429 above {limit} calls/s (Google loopback, 20 ms per call)")
    print(f"{'users':>7}{'status':>11}{'seconds':>9}{'accepted':>10}{'refused':>9}{'refused %':>11}{'sent / quota':>14}{'used / quota':>14}")
    for users in args.users:
        with directory_in_child(users, 0.02, quota_per_second=limit) as (url, counts):
            tenant = fresh_tenant("bench-quota", provider="google",
                                  provider_config={"base_url": url, "access_token": "static-test-token", "max_attempts": 10})
            try:
                run, seconds = timed_run(tenant, "tokens")
            finally:
                tenant.delete()
        accepted, refused = counts["accepted_at"], counts["rejected"]
        span = accepted[-1] - accepted[0]  # the step's calls, first to last, as the server saw them
        total = len(accepted) + refused
        print(f"{users:>7,}{run.status:>11}{seconds:>9.1f}{len(accepted):>10,}{refused:>9,}{refused / total:>11.2%}"
              f"{total / span / limit:>14.1%}{len(accepted) / span / limit:>14.1%}")
    print("goal: used >= 95% of the quota, refused <= 3% (used: calls accepted per second, first call to last, over the quota)")


def _cpu_windows(stop: threading.Event, windows: list, every: float = 5.0) -> None:
    """(this process, everything on its CPUs) in percent of those CPUs, per window."""
    process = psutil.Process()
    cpus = frozenset(os.sched_getaffinity(0))

    def counters():
        return time.monotonic(), sum(process.cpu_times()[:2]), busy_seconds(Path("/proc"), cpus)

    last = counters()
    while not stop.wait(every):
        now = counters()
        wall = now[0] - last[0]
        windows.append((100 * (now[1] - last[1]) / wall / len(cpus), 100 * (now[2] - last[2]) / wall / len(cpus)))
        last = now


def cpu(args) -> None:
    config = {"users": args.users, "apps": 40, "seed": 6, "latency_ms": 0}
    print(f"full sync of {args.users:,} demo users (no provider latency), CPUs allowed: {sorted(os.sched_getaffinity(0))}")
    print("(the ceiling caps everything on those CPUs; the database server working for the sync runs there too)")
    print(f"{'case':<24}{'seconds':>9}{'rows/s':>9}{'process, max per 5 s':>22}{'mean':>7}{'its CPUs, max per 5 s':>23}{'mean':>7}")
    rates = {}
    for name, ceiling in (("unthrottled (100%)", 100.0), ("MAX_CPU_PERCENT=50", 50.0)):
        settings.BALLAST_GOVERNOR = {"max_cpu_percent": ceiling, "max_wait_s": 1.0}
        tenant = fresh_tenant("bench-cpu", provider="demo", provider_config=config)
        windows, stop = [], threading.Event()
        watcher = threading.Thread(target=_cpu_windows, args=(stop, windows), daemon=True)
        watcher.start()
        run, seconds = timed_run(tenant, "users,tokens,relations")
        stop.set()
        watcher.join()
        rows = sum(s.received for s in run.step_records.all())
        rates[ceiling] = rows / seconds
        own, total = [w[0] for w in windows] or [0.0], [w[1] for w in windows] or [0.0]
        print(f"{name:<24}{seconds:>9.1f}{rows / seconds:>9,.0f}{max(own):>22.1f}{sum(own) / len(own):>7.1f}"
              f"{max(total):>23.1f}{sum(total) / len(total):>7.1f}")
        tenant.delete()
    print(f"throttled rate = {rates[50.0] / (rates[100.0] / 2):.0%} of half the unthrottled rate")


def memory(args) -> None:
    settings.BALLAST_GOVERNOR = {"rss_limit_mb": 256.0}
    config = {"users": args.users, "apps": 60, "seed": 8, "latency_ms": 0}
    tenant = fresh_tenant("bench-memory", provider="demo", provider_config=config)
    peak, stop = [0], threading.Event()

    def watch() -> None:
        process = psutil.Process()
        while not stop.wait(0.1):
            peak[0] = max(peak[0], process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run, seconds = timed_run(tenant, "users,tokens,relations")
    finally:
        stop.set()
        watcher.join()
    _, tokens = demo_org(args.users, seed=8, apps=60)
    expected_tokens = sum(len(t) for t in tokens.values())
    stored = (DirectoryUser.objects.filter(tenant=tenant).count(), Token.objects.filter(tenant=tenant).count(),
              UserAppRelation.objects.filter(tenant=tenant).count())
    tenant.delete()
    print(f"MAX_RSS_USAGE_MB=256, {args.users:,} users: {run.status} in {seconds:.0f} s")
    print(f"peak RSS {peak[0] / 2**20:.0f} MB (sampled every 0.1 s)")
    print(f"stored users {stored[0]:,} of {args.users:,}, tokens {stored[1]:,} of {expected_tokens:,}, relations {stored[2]:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    sub.add_parser("latency").add_argument("--users", type=int, nargs="+", default=[1000, 5000])
    errors_parser = sub.add_parser("errors")
    errors_parser.add_argument("--users", type=int, nargs="+", default=[1000, 2000, 5000])
    errors_parser.add_argument("--rounds", type=int, default=3)
    sporadic_parser = sub.add_parser("sporadic")
    sporadic_parser.add_argument("--users", type=int, nargs="+", default=[1000, 5000])
    sporadic_parser.add_argument("--rounds", type=int, default=2)
    sporadic_parser.add_argument("--share", type=float, default=0.01)
    sub.add_parser("quota").add_argument("--users", type=int, nargs="+", default=[800, 5000])
    sub.add_parser("cpu").add_argument("--users", type=int, default=6000)
    sub.add_parser("memory").add_argument("--users", type=int, default=50_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    {"latency": latency, "errors": errors, "sporadic": sporadic, "quota": quota, "cpu": cpu, "memory": memory}[args.bench](args)


if __name__ == "__main__":
    main()

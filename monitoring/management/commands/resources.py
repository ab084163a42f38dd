import json
import time
import tracemalloc

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from monitoring.governor.profiles import route_policy
from monitoring.governor.readings import SystemReader
from monitoring.ledger.allocations import amount_of, reclaim_dead
from monitoring.observability.health import readiness, resource_status
from monitoring.observability.leaks import growing_sites, take_snapshot
from monitoring.observability.reports import collect_garbage, connection_report, usage_report

MB = 2**20


class Command(BaseCommand):
    help = "Resources: monitor, report, health, gc, snapshot, leaks, connections, profile, cleanup."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        monitor = actions.add_parser("monitor", help="A live terminal dashboard, refreshed until Ctrl-C.")
        monitor.add_argument("--interval", type=float, default=1.0)
        monitor.add_argument("--frames", type=int, default=0, help="Stop after this many refreshes (0: never).")
        report = actions.add_parser("report", help="Usage, runs, throttles and allocations over a period.")
        report.add_argument("--hours", type=float, default=24.0)
        report.add_argument("--json", action="store_true")
        health = actions.add_parser("health", help="Readiness: database, broker, cluster, resources.")
        health.add_argument("-v", "--verbose", action="store_true")
        actions.add_parser("gc", help="Collect garbage and trim the heap; RSS before and after.")
        snapshot = actions.add_parser("snapshot", help="A tracemalloc snapshot of what a piece of work keeps allocated.")
        snapshot.add_argument("-o", "--output", help="Write the snapshot here (load it with tracemalloc.Snapshot.load).")
        snapshot.add_argument("--work", default="monitoring.observability.reports.usage_report", help="Dotted path of the callable to trace.")
        leaks = actions.add_parser("leaks", help="Snapshots over repeated work; the allocation sites that keep growing.")
        leaks.add_argument("--rounds", type=int, default=4)
        leaks.add_argument("--work", default="monitoring.observability.reports.usage_report", help="Dotted path of the callable to repeat.")
        connections = actions.add_parser("connections", help="Database pool and Redis pool state.")
        connections.add_argument("--json", action="store_true")
        profile = actions.add_parser("profile", help="Sample resources for a while into a JSON file.")
        profile.add_argument("-d", "--duration", type=float, required=True, help="Seconds.")
        profile.add_argument("-o", "--output", required=True)
        profile.add_argument("--interval", type=float, default=0.5)
        cleanup = actions.add_parser("cleanup", help="Reclaim run slots whose step's process died (their runs become interrupted).")
        cleanup.add_argument(
            "--timeout", type=float, default=None,
            help="Seconds without a heartbeat for a slot no step holds (default HOLDER_TIMEOUT_S); a step's own holder is dead after 2 missed heartbeats.",
        )

    def handle(self, *args, action, **options):
        tracing = tracemalloc.is_tracing()
        try:
            getattr(self, f"handle_{action}")(**options)
        finally:
            if not tracing and tracemalloc.is_tracing():
                tracemalloc.stop()  # tracing slows everything down: never leave it on

    def handle_monitor(self, *, interval, frames, **_):
        reader, policy = SystemReader(), route_policy("run")
        shown = 0
        try:
            while True:
                time.sleep(interval)
                reading = reader.read()
                report = usage_report(hours=1 / 12)
                lines = [
                    f"Ballast resources (CPU: {reading.cpu_scope}; memory: {reading.source})   {time.strftime('%H:%M:%S')}",
                    f"  CPU     {_bar(reading.cpu_percent, policy.max_cpu_percent)} {reading.cpu_percent:5.1f}% of {policy.max_cpu_percent:.0f}%"
                    f"   (this process {reading.process_cpu_percent:.1f}%)",
                    f"  memory  {_bar(reading.memory_percent, policy.max_memory_percent)} {reading.memory_percent:5.1f}% of {policy.max_memory_percent:.0f}%"
                    f"   ({reading.memory_used_bytes / MB:,.0f} of {reading.memory_limit_bytes / MB:,.0f} MB)",
                    "          (| marks the ceiling a sync keeps under)",
                    f"  runs (5 min): {_counts(report['runs'])}",
                    f"  governor events (5 min): {_counts(report['throttle_events'])}",
                    f"  allocations now: {_counts(report['allocations_now'])}",
                ]
                if self.stdout.isatty():
                    self.stdout.write("\033[H\033[J", ending="")
                self.stdout.write("\n".join(lines))
                shown += 1
                if frames and shown >= frames:
                    return
        except KeyboardInterrupt:
            self.stdout.write("")

    def handle_report(self, *, hours, **options):
        report = usage_report(hours)
        if options["json"]:
            self.stdout.write(json.dumps(report))
            return
        r = report["resources"]
        self.stdout.write(f"Last {hours:g} h")
        self.stdout.write(
            f"  resources: {r['samples']} samples, CPU mean {r['mean_cpu'] or 0}% peak {r['peak_cpu'] or 0}%, "
            f"memory mean {r['mean_memory'] or 0}% peak {r['peak_memory'] or 0}%, peak RSS {(r['peak_rss'] or 0) / MB:.0f} MB"
        )
        for key in ("runs", "throttle_events", "ledger_events", "allocations_now"):
            self.stdout.write(f"  {key.replace('_', ' ')}: {_counts(report[key])}")
        self.stdout.write(f"  rate-limit denials: {report['rate_limit_denials']}")

    def handle_health(self, *, verbose, **_):
        ready, body = readiness()
        self.stdout.write(f"{body['status']}; resources {body['resources']['status']}")
        if verbose:
            for name, check in body["checks"].items():
                state = "ok" if check["ok"] else ("none running" if check.get("clusters") == 0 else "FAIL")
                self.stdout.write(f"  {name:<9} {state}  {json.dumps({k: v for k, v in check.items() if k != 'ok'})}")
            self.stdout.write(f"  resources {json.dumps(body['resources'])}")
        if not ready:
            raise CommandError("not ready", returncode=1)

    def handle_gc(self, **_):
        result = collect_garbage()
        self.stdout.write(
            f"RSS {result['rss_before'] / MB:.1f} MB -> {result['rss_after'] / MB:.1f} MB; "
            f"{result['objects_collected']} objects collected; malloc_trim {'released memory' if result['malloc_trim'] else 'had nothing to give back'}"
        )

    def handle_snapshot(self, *, output, work, **_):
        take_snapshot()  # starts tracing
        _work(work)()
        snapshot = take_snapshot()
        if output:
            snapshot.dump(output)
            self.stdout.write(f"Snapshot written to {output}.")
        for stat in snapshot.statistics("lineno")[:10]:
            self.stdout.write(f"  {stat.size / 1024:8.1f} KiB  {stat.count:7d} blocks  {stat.traceback[0]}")

    def handle_leaks(self, *, rounds, work, **_):
        job = _work(work)
        snapshots = [take_snapshot()]
        for _ in range(rounds):
            job()
            snapshots.append(take_snapshot())
        sites = growing_sites(snapshots)
        if not sites:
            self.stdout.write(f"No allocation site grew in every one of {rounds} rounds.")
        for site in sites:
            self.stdout.write(f"  +{site['grew_bytes'] / 1024:.1f} KiB over {site['rounds']} rounds  {site['site']}")

    def handle_connections(self, **options):
        report = connection_report()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
            return
        database, redis = report["database"], report["redis"]
        state = "reachable" if database["connected"] else f"NOT reachable: {database.get('error')}"
        pool = database["pool"]
        pool_words = (f"pool {pool.get('pool_available', 0)} free of {pool.get('pool_size', 0)}, {pool.get('requests_waiting', 0)} waiting"
                      if pool else "no pool (one connection per thread)")
        self.stdout.write(f"database  {database['vendor']}, {state}; {pool_words}")
        if redis is None:
            self.stdout.write("redis     not used (REDIS_URL unset: the ORM broker and a database cache)")
        elif redis["reachable"]:
            self.stdout.write(f"redis     reachable; {redis['connected_clients']} clients connected, {redis['blocked_clients']} blocked")
        else:
            self.stdout.write(f"redis     NOT reachable: {redis['error']}")

    def handle_profile(self, *, duration, output, interval, **_):
        if duration <= 0 or interval <= 0:
            raise CommandError("--duration and --interval must be more than 0")
        reader, samples = SystemReader(), []
        ends = time.monotonic() + duration
        while time.monotonic() < ends:
            time.sleep(min(interval, max(ends - time.monotonic(), 0)))
            reading = reader.read()
            samples.append({
                "t": round(duration - (ends - time.monotonic()), 2), "cpu_percent": round(reading.cpu_percent, 1),
                "process_cpu_percent": round(reading.process_cpu_percent, 1), "memory_percent": round(reading.memory_percent, 1),
                "rss_bytes": reading.rss_bytes, "status": resource_status(reading)["status"],
            })
        profile = {
            "duration_s": duration, "interval_s": interval, "samples": samples,
            "peak_cpu_percent": max((s["cpu_percent"] for s in samples), default=0),
            "peak_memory_percent": max((s["memory_percent"] for s in samples), default=0),
        }
        with open(output, "w") as handle:
            json.dump(profile, handle)
        self.stdout.write(f"{len(samples)} samples written to {output}.")

    def handle_cleanup(self, *, timeout, **_):
        reclaimed = reclaim_dead(timeout)
        for allocation in reclaimed:
            self.stdout.write(f"reclaimed {amount_of(allocation.amount, allocation.resource)} of {allocation.owner}: {allocation.reason}")
        self.stdout.write(f"{len(reclaimed)} allocation(s) reclaimed.")


def _work(dotted: str):
    try:
        return import_string(dotted)
    except ImportError as exc:
        raise CommandError(f"--work: {exc}") from None


def _bar(percent: float, ceiling: float, width: int = 30) -> str:
    """[#####....|....]: the reading filled in, the ceiling marked."""
    filled = int(round(width * min(max(percent, 0), 100) / 100))
    cells = ["#"] * filled + ["."] * (width - filled)
    mark = min(int(round(width * ceiling / 100)), width - 1)
    cells[mark] = "|"
    return "[" + "".join(cells) + "]"


def _counts(counts: dict) -> str:
    """{"completed": 3, "failed": 1} → "3 completed, 1 failed"."""
    return ", ".join(f"{n} {key.replace('_', ' ')}" for key, n in sorted(counts.items())) or "none"

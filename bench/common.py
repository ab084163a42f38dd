"""What the benchmarks share: Django set up for a script, a fresh tenant, a timed in-process run,
and the machine's own CPU read straight from /proc/stat (not through Ballast's readers)."""

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import multiprocessing  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from django.db import connection, connections  # noqa: E402

from syncapp.models import SyncRun, Tenant  # noqa: E402
from syncapp.runs import start_run  # noqa: E402
from syncapp.tasks import run_in_process  # noqa: E402


def drop_tenant(tenant: Tenant) -> None:
    """Delete a tenant; its directory rows first, in plain DELETEs (the ORM's cascade would load
    a million-user tenant's rows to delete them by id), then VACUUM them away: autovacuum lags
    behind a benchmark's deletes, and the next case would run on gigabytes of dead rows."""
    from syncapp.models import Application, DirectoryUser, GrantEvent, Token, UserAppRelation

    tables = [model._meta.db_table for model in (GrantEvent, UserAppRelation, Token, Application, DirectoryUser)]
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DELETE FROM {table} WHERE tenant_id = %s", [tenant.pk])
    tenant.delete()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


def fresh_tenant(slug: str, **fields) -> Tenant:
    for tenant in Tenant.objects.filter(slug=slug):
        drop_tenant(tenant)
    return Tenant.objects.create(slug=slug, name=slug, **fields)


def timed_run(tenant: Tenant, steps: str) -> tuple[SyncRun, float]:
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, steps=steps, enqueue=False)
    started = time.perf_counter()
    run_in_process(run.pk)
    return SyncRun.objects.get(pk=run.pk), time.perf_counter() - started


def machine_busy_seconds() -> tuple[float, int]:
    """(busy CPU seconds of the whole machine since boot, CPUs counted), from /proc/stat's first line."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1


class MachineCpu:
    """The machine's CPU use, percent of all its CPUs, in windows of `window_s` sliding every
    second; and this process's, to tell what the rest of the machine used."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self.points: list[tuple[float, float, float]] = []  # (wall time, machine busy s, this process's CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "MachineCpu":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while True:
            busy, _ = machine_busy_seconds()
            self.points.append((time.time(), busy, time.process_time()))
            if self._stop.wait(1.0):
                return

    def windows(self, seconds: float | None = None, others: bool = False, during: tuple[float, float] | None = None) -> list[float]:
        """Machine CPU percent over each window of `seconds` (the window given at start by
        default), a second apart; with `others`, the machine less this process; with `during`
        (wall times), only the windows that overlap that span."""
        _, cpus = machine_busy_seconds()
        step = max(1, round(seconds or self.window_s))
        return [
            100 * ((b1 - b0) - (p1 - p0 if others else 0.0)) / (t1 - t0) / cpus
            for (t0, b0, p0), (t1, b1, p1) in zip(self.points, self.points[step:])
            if during is None or (t1 > during[0] and t0 < during[1])
        ]


def in_child(function, *args):
    """function(*args) in a forked child, which has its own peak RSS and database connections;
    returns what it returned (something picklable)."""
    connections.close_all()  # the child must not share the parent's live connection
    context = multiprocessing.get_context("fork")
    here, there = context.Pipe()

    def target() -> None:
        try:
            there.send((True, function(*args)))
        except BaseException as exc:
            there.send((False, f"{exc.__class__.__name__}: {exc}"))
            raise

    child = context.Process(target=target)
    child.start()
    ok, value = here.recv()
    child.join()
    if not ok:
        raise RuntimeError(f"{function.__name__} failed in its child process: {value}")
    return value


def _serve_directory(users: int, activities: int, faults: dict, pipe) -> None:
    """In a child process, so the server's threads do not share the measured interpreter's lock."""
    from datetime import datetime, timedelta, timezone

    from tests.conftest import demo_org
    from tests.fakegoogle import FakeDirectory

    server = FakeDirectory().start()
    server.load(*demo_org(users, seed=4))
    holders = [(user, token) for user, tokens in server.tokens.items() for token in tokens]
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for n in range(activities):  # a real feed: mostly "activity" (an app using its grant), some grants and revokes
        user, token = holders[n * 7919 % len(holders)]
        at = start + timedelta(seconds=n)
        if n % 20 == 0:
            server.grant(user, token, at)
        elif n % 20 == 1:
            server.revoke(user, token["clientId"], at)
        else:
            server.log("activity", user, token["clientId"], at, app_name=token.get("displayText", ""))
    for name, value in faults.items():
        setattr(server, name, value)
    pipe.send(server.url)
    pipe.recv()  # until the parent is done
    pipe.send({"tokens_calls": len(server.paths("/admin/directory/v1/users/")), "calls": len(server.paths()),
               "flaky_answers": server.flaky_answers, "rate_limited": server.rate_limited_answers, "sent": server.sent,
               "accepted_at": server.accepted_at, "rejected": server.rejected})
    server.stop()


@contextmanager
def directory_in_child(users: int, latency_s: float = 0.02, flaky_every: int | None = None, activities: int = 0, **faults):
    """Google's Directory API (and the Reports API's token feed, `activities` events) on loopback,
    served by a child process, with `users` demo users; `faults` set the fake's other fault
    attributes (quota_per_second, rate_limited_share). Yields (url, counts); counts (calls
    answered, and "sent": (path, bytes) of every answer) are filled in when the block ends."""
    connections.close_all()  # the forked child must not inherit a live connection
    here, there = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_serve_directory, args=(users, activities, {"latency_s": latency_s, "flaky_every": flaky_every, **faults}, there),
                                                        daemon=True)
    child.start()
    counts: dict = {}
    try:
        yield here.recv(), counts
    finally:
        here.send("done")
        counts.update(here.recv())
        child.join()


def _serve_graph(users: int, latency_s: float, pipe) -> None:
    """Microsoft Graph on loopback, in a child process (see _serve_directory)."""
    from tests.conftest import demo_org
    from tests.fakegraph import FakeGraph

    server = FakeGraph().start()
    server.load(*demo_org(users, seed=4))
    server.latency_s = latency_s
    pipe.send((server.url, server.config()))
    pipe.recv()
    pipe.send({"calls": len(server.paths("/v1.0/")), "grants": len(server.grants)})
    server.stop()


@contextmanager
def graph_in_child(users: int, latency_s: float = 0.02):
    """Microsoft Graph (and Entra ID's token endpoint) on loopback, served by a child process,
    holding the same organisation as directory_in_child. Yields (provider config, counts)."""
    connections.close_all()
    here, there = multiprocessing.get_context("fork").Pipe()
    child = multiprocessing.get_context("fork").Process(target=_serve_graph, args=(users, latency_s, there), daemon=True)
    child.start()
    counts: dict = {}
    try:
        _, config = here.recv()
        yield config, counts
    finally:
        here.send("done")
        counts.update(here.recv())
        child.join()

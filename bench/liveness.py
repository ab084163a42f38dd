"""How fast a crash is noticed: seconds from the fault until the run stops being "running" (and,
where it applies, until the next run starts), on a real cluster with the default HEARTBEAT_S and
HOLDER_TIMEOUT_S, against the database and broker in DATABASE_URL / REDIS_URL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ballast REDIS_URL=redis://127.0.0.1:6379/14 \\
        python bench/liveness.py [--only worker-kill,...] [--cap 420]

The script uses nothing but runs, steps and processes, so the same file measures an older
checkout: the worker running the tokens step is the cluster's process with the most threads
(its pool of provider calls). Each case is capped; "> cap" means it was never noticed.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from syncapp.models import SyncRun, SyncStep, Tenant  # noqa: E402
from syncapp.runs import start_run  # noqa: E402

ORG = {"users": 3000, "apps": 12, "seed": 3, "latency_ms": 40}
GOVERNOR = {"io_max_concurrency": 3, "batch_size": 20}  # a tokens step of about 40 s, caught in the middle
ENDED = {"completed", "completed_with_errors", "failed", "cancelled", "interrupted", "skipped"}
LOGS = ROOT / "bench" / "results"


class Cluster:
    def __init__(self, name: str):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = open(LOGS / f"liveness-{name}.log", "a")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "Q_WORKERS": "2"},
        )

    def processes(self) -> list[psutil.Process]:
        return [self.process_info(), *self.process_info().children(recursive=True)]

    def process_info(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def tokens_worker(self) -> psutil.Process:
        worker = max(self.process_info().children(recursive=True), key=lambda p: p.num_threads())
        if worker.num_threads() < 5:
            raise SystemExit("no worker with a pool of provider calls: is the tokens step running?")
        return worker

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


def wait(predicate, cap: float, interval: float = 0.2) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < cap:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def fresh_tenant(slug: str) -> Tenant:
    Tenant.objects.filter(slug=slug).delete()
    return Tenant.objects.create(slug=slug, name=slug, provider_config=ORG, governor_settings=GOVERNOR)


def status(run: SyncRun) -> str:
    return SyncRun.objects.values_list("status", flat=True).get(pk=run.pk)


def tokens_under_way(run: SyncRun) -> None:
    def caught():
        steps = dict(SyncStep.objects.filter(run=run).values_list("name", "status"))
        created = SyncStep.objects.filter(run=run, name="tokens").values_list("created", flat=True).first() or 0
        return steps.get("users") in ENDED and steps.get("tokens") == "running" and created > 0
    if wait(caught, 300) is None:
        raise SystemExit("the tokens step never got under way")
    time.sleep(2)  # a few batches into it


def shown(seconds: float | None, cap: float) -> str:
    return f"> {cap:.0f} s" if seconds is None else f"{seconds:.1f} s"


def _signal_the_tokens_worker(cap: float, signum: int, case: str) -> dict:
    cluster = Cluster(f"worker-{signal.Signals(signum).name.lower()}")
    try:
        run = start_run(tenant=fresh_tenant("bench-live"), trigger="api")
        tokens_under_way(run)
        cluster.tokens_worker().send_signal(signum)
        noticed = wait(lambda: status(run) != "running", cap)
        return {"case": case, "noticed": shown(noticed, cap), "status": status(run)}
    finally:
        cluster.stop()


def worker_kill(cap: float) -> dict:
    return _signal_the_tokens_worker(cap, signal.SIGKILL, "SIGKILL the tokens step's worker")


def worker_sigterm(cap: float) -> dict:
    return _signal_the_tokens_worker(cap, signal.SIGTERM, "SIGTERM to the tokens step's worker")


def cluster_kill(cap: float) -> dict:
    first = Cluster("cluster-kill-1")
    tenant = fresh_tenant("bench-live")
    run = start_run(tenant=tenant, trigger="api")
    tokens_under_way(run)
    queued = start_run(tenant=tenant, trigger="api")
    wait(lambda: SyncRun.objects.get(pk=queued.pk).waiting_reason, 30)
    first.kill()
    first.log.close()
    killed = time.monotonic()
    second = Cluster("cluster-kill-2")
    try:
        noticed = wait(lambda: status(run) != "running", cap)
        started = wait(lambda: SyncRun.objects.get(pk=queued.pk).started_at, max(1.0, cap - (time.monotonic() - killed)))
        next_started = None if started is None else time.monotonic() - killed
        SyncRun.objects.filter(pk=queued.pk, status__in=["queued", "running"]).update(status="cancelled")
        return {"case": "SIGKILL the cluster, start another", "noticed": shown(noticed, cap),
                "next run started": shown(next_started, cap), "status": status(run)}
    finally:
        second.stop()


def connection_kill(cap: float) -> dict:
    cluster = Cluster("connection-kill")
    try:
        run = start_run(tenant=fresh_tenant("bench-live"), trigger="api")
        tokens_under_way(run)
        worker = cluster.tokens_worker()
        ports = [c.laddr.port for c in worker.net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432]
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_port = ANY(%s)", [ports])
            terminated = cursor.fetchone()[0]
        written = SyncStep.objects.get(run=run, name="tokens").created
        recovered = wait(lambda: status(run) != "running" or SyncStep.objects.get(run=run, name="tokens").created > written, cap)
        ended = wait(lambda: status(run) != "running", cap)
        return {"case": f"pg_terminate_backend ({terminated} connections)", "wrote again or ended": shown(recovered, cap),
                "run ended": shown(ended, cap), "status": status(run)}
    finally:
        cluster.stop()


def no_cluster_wait(cap: float) -> dict:
    cluster = Cluster("no-cluster")
    tenant = fresh_tenant("bench-live")
    run = start_run(tenant=tenant, trigger="api")
    tokens_under_way(run)
    cluster.kill()
    cluster.log.close()
    time.sleep(12)  # the cluster's status expires: the command finds no cluster and runs the sync itself
    started = time.monotonic()
    command = subprocess.Popen(
        [sys.executable, "manage.py", "sync", tenant.slug, "--wait", "--steps", "users"], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        out, _ = command.communicate(timeout=cap)
        seconds = time.monotonic() - started
    except subprocess.TimeoutExpired:
        command.kill()
        out, _ = command.communicate()
        seconds = None
    waiting = next((line for line in out.splitlines() if "run #" in line), "")
    return {"case": "sync --wait with no cluster after the cluster died", "completed after": shown(seconds, cap),
            "exit": command.returncode, "first line": waiting[:200]}


def other_machine(cap: float) -> dict:
    """A step on another machine stops heartbeating (its process cannot be looked at from here):
    the cluster's watches see the silence. Needs holders (not in checkouts before issue 10)."""
    from django.utils import timezone

    from monitoring.models import Allocation, Holder
    from syncapp.runs import begin_run

    cluster = Cluster("other-machine")
    try:
        run = start_run(tenant=fresh_tenant("bench-live"), trigger="command", enqueue=False)
        begin_run(run.pk)
        slot = Allocation.objects.get(owner=f"run-{run.pk}", state="granted")
        Holder.objects.create(allocation=slot, name="tokens", host="elsewhere", pid=4242, process_started=0.0,
                              started_at=timezone.now(), heartbeat_at=timezone.now())  # its last beat: now
        noticed = wait(lambda: status(run) != "running", cap)
        return {"case": "a step on another machine goes silent", "noticed": shown(noticed, cap), "status": status(run)}
    finally:
        cluster.stop()


CASES = {"worker-kill": worker_kill, "worker-sigterm": worker_sigterm, "cluster-kill": cluster_kill,
         "connection-kill": connection_kill, "no-cluster": no_cluster_wait, "other-machine": other_machine}


def clear_leftovers() -> None:
    """Nothing of an earlier case (or an earlier run of the bench) holds a slot."""
    from monitoring.models import Allocation

    SyncRun.objects.filter(status__in=["queued", "running"]).update(status="cancelled")
    Allocation.objects.filter(state__in=["granted", "waiting"]).update(state="released")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--cap", type=float, default=420.0, help="seconds to wait for each detection")
    args = parser.parse_args()
    call_command("migrate", interactive=False, verbosity=0)
    for name in args.only.split(","):
        clear_leftovers()
        result = CASES[name](args.cap)
        print(" | ".join(f"{k}: {v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main()

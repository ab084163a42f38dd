"""Chaos on a real cluster: a dead worker, a dead cluster, a dropped connection, a stop signal.
Each is noticed in seconds (time to detection asserted with a test's tolerance; the goal is
HEARTBEAT_S × 3), and the next run stores exactly the source's directory, no row twice."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from monitoring.models import Allocation, Holder
from syncapp.models import DirectoryUser, Status, StopReason, SyncRun, SyncStep, Token, UserAppRelation
from syncapp.runs import begin_run, start_run

from ..conftest import ROOT, child_env, demo_org, wait_for
from ..factories import TenantFactory

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

USERS, APPS, SEED = 1500, 12, 3
# Calls slow enough, and few enough at once, that the tokens step is caught in the middle.
SLOW = {"users": USERS, "apps": APPS, "seed": SEED, "latency_ms": 40}
GOVERNOR = {"io_max_concurrency": 3, "batch_size": 20}
HEARTBEAT = {"HEARTBEAT_S": "1"}
DETECTED_WITHIN_S = 60  # the goal is 3 heartbeats; a loaded machine gets slack


def slow_tenant(slug="chaos"):
    return TenantFactory(slug=slug, provider_config=SLOW, governor_settings=GOVERNOR)


def tokens_holder(run: SyncRun) -> Holder:
    """Wait until the tokens step has written a few batches (the users step done), and return its holder."""
    def caught():
        steps = {s.name: s for s in SyncStep.objects.filter(run=run)}
        return steps["users"].ended and steps["tokens"].status == Status.RUNNING and steps["tokens"].created > 0
    wait_for(caught, 120, "the tokens step to be under way after the users step ended")
    return Holder.objects.get(allocation__owner=run.owner, name="tokens")


def tokens_step_under_way(start_cluster):
    """A cluster, and a run of the slow tenant caught in its tokens step: (cluster, tenant, run, holder)."""
    cluster = start_cluster(**HEARTBEAT)
    tenant = slow_tenant()
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API)
    return cluster, tenant, run, tokens_holder(run)


def seconds_until(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_for(predicate, timeout, what, interval=0.1)
    return time.monotonic() - started


def run_ended(run: SyncRun):
    return lambda: SyncRun.objects.get(pk=run.pk).status not in (Status.QUEUED, Status.RUNNING)


def assert_exact_directory(tenant) -> None:
    """What the demo source holds, once each: no row missing, none twice."""
    users, tokens = demo_org(USERS, seed=SEED, apps=APPS)
    expected = {(uid, t["clientId"]) for uid, items in tokens.items() for t in items if t.get("clientId")}
    assert set(DirectoryUser.objects.filter(tenant=tenant).values_list("external_id", flat=True)) == {u["id"] for u in users}
    stored = set(Token.objects.filter(tenant=tenant, revoked_at__isnull=True).values_list("user__external_id", "application__client_id"))
    assert stored == expected
    assert UserAppRelation.objects.filter(tenant=tenant, active=True).count() == len(expected)
    for model, key in ((DirectoryUser, ("external_id",)), (Token, ("user", "application")), (UserAppRelation, ("user", "application"))):
        assert not model.objects.filter(tenant=tenant).values(*key).annotate(n=Count("id")).filter(n__gt=1).exists()


def complete_another_run(tenant) -> SyncRun:
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API)
    wait_for(run_ended(run), 240, "the next run to end")
    run.refresh_from_db()
    assert run.status == Status.COMPLETED, run.error
    return run


def test_a_worker_killed_in_the_tokens_step_interrupts_the_run_in_seconds_and_the_next_resumes(start_cluster):
    _, tenant, run, holder = tokens_step_under_way(start_cluster)
    os.kill(holder.pid, signal.SIGKILL)
    detected = seconds_until(run_ended(run), DETECTED_WITHIN_S, "the dead worker's run to be interrupted")

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (Status.INTERRUPTED, StopReason.WORKER_LOST)
    assert f"process {holder.pid} on {holder.host} gone" in run.error
    assert Allocation.objects.get(owner=run.owner).state == "reclaimed"
    print(f"worker SIGKILL detected in {detected:.1f} s")
    again = complete_another_run(tenant)
    assert again.step_records.get(name="tokens").resumed_from.run_id == run.pk  # from the checkpoint
    assert_exact_directory(tenant)


def test_a_killed_cluster_is_noticed_by_the_next_one_and_the_queued_run_starts(start_cluster):
    first_cluster, tenant, run, _ = tokens_step_under_way(start_cluster)
    waiting = start_run(tenant=tenant, trigger=SyncRun.Trigger.API)  # one run at a time: it waits for the slot
    wait_for(lambda: SyncRun.objects.get(pk=waiting.pk).waiting_reason, 60, "the second run to wait for the slot")
    os.killpg(first_cluster.pid, signal.SIGKILL)  # the cluster, its sentinel and workers, at once
    first_cluster.wait()
    killed = time.monotonic()
    start_cluster(**HEARTBEAT)

    wait_for(run_ended(run), DETECTED_WITHIN_S, "the dead cluster's run to be interrupted")
    wait_for(lambda: SyncRun.objects.get(pk=waiting.pk).started_at, DETECTED_WITHIN_S, "the queued run to start")
    print(f"cluster SIGKILL: next run started {time.monotonic() - killed:.1f} s after the kill")
    assert SyncRun.objects.get(pk=run.pk).status == Status.INTERRUPTED
    wait_for(run_ended(waiting), 240, "the queued run to end")
    assert SyncRun.objects.get(pk=waiting.pk).status == Status.COMPLETED
    assert_exact_directory(tenant)


def test_a_terminated_database_connection_is_retried_and_the_run_never_stays_running(start_cluster):
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend is PostgreSQL's")
    _, tenant, run, holder = tokens_step_under_way(start_cluster)
    ports = {c.laddr.port for c in psutil.Process(holder.pid).net_connections(kind="tcp") if c.raddr and c.raddr.port == 5432}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
            [list(ports)],
        )
        assert cursor.fetchall(), "the worker's connections were found and terminated"
    written = SyncStep.objects.get(run=run, name="tokens").created

    # Within seconds the step either wrote again on a fresh connection, or the run ended.
    wait_for(lambda: run_ended(run)() or SyncStep.objects.get(run=run, name="tokens").created > written, 30,
             "the step to write again or the run to end")
    wait_for(run_ended(run), 240, "the run to end")
    run.refresh_from_db()
    assert run.status in (Status.COMPLETED, Status.FAILED, Status.INTERRUPTED), run.status
    if run.status != Status.COMPLETED:
        complete_another_run(tenant)
    assert_exact_directory(tenant)


def test_sigterm_to_a_worker_interrupts_its_run_at_once_and_gives_the_slot_back(start_cluster):
    _, tenant, run, holder = tokens_step_under_way(start_cluster)
    os.kill(holder.pid, signal.SIGTERM)
    seconds_until(run_ended(run), 30, "the run to be interrupted")
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (Status.INTERRUPTED, StopReason.SIGNAL)
    assert "stopped by SIGTERM" in run.error
    assert Allocation.objects.get(owner=run.owner).state == "released"
    wait_for(lambda: not psutil.pid_exists(holder.pid) or psutil.Process(holder.pid).status() == psutil.STATUS_ZOMBIE,
             30, "the worker to exit")
    complete_another_run(tenant)
    assert_exact_directory(tenant)


def test_sync_wait_without_a_cluster_says_what_holds_the_slot_then_reclaims_it():
    """A run whose step died on another machine: its heartbeat stops, and after two missed beats
    the slot is free. Meanwhile the waiting command names the holder, not "a worker"."""
    tenant = TenantFactory(slug="after-crash", provider_config={"users": 50, "apps": 4, "seed": 1})
    crashed = start_run(tenant=tenant, trigger=SyncRun.Trigger.API, enqueue=False)
    begin_run(crashed.pk)
    slot = Allocation.objects.get(owner=crashed.owner, state="granted")
    holder = Holder.objects.create(allocation=slot, name="tokens", host="far-away", pid=4242, process_started=1.0,
                                   started_at=timezone.now(), heartbeat_at=timezone.now())

    command = subprocess.Popen(
        [sys.executable, "manage.py", "sync", "after-crash", "--wait", "--json"],
        cwd=ROOT, env=child_env(HEARTBEAT_S="3"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    waiting = f"waiting for a run slot: tenant quota: 1 of 1 run slot in use; held by run {crashed.pk} " \
              "(tokens step in process 4242 on far-away, heartbeat"
    said_waiting = threading.Event()
    stderr_lines = []

    def read_stderr():
        for line in command.stderr:
            stderr_lines.append(line)
            if waiting in line:
                said_waiting.set()
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    # The far process beats until the command has said what it waits for (however long a loaded
    # machine takes to start it), and then dies: its beats stop.
    deadline = time.monotonic() + 120
    while not said_waiting.wait(0.5) and command.poll() is None and time.monotonic() < deadline:
        Holder.objects.filter(pk=holder.pk).update(heartbeat_at=timezone.now())
    stdout = command.stdout.read()  # stderr is the reader's
    command.wait(timeout=120)
    reader.join(10)
    stderr = "".join(stderr_lines)
    assert command.returncode == 0, stderr[-3000:]
    assert "No task cluster is running: carrying the run out in this process." in stderr
    assert said_waiting.is_set(), stderr[-3000:]
    assert json.loads(stdout)["status"] == Status.COMPLETED
    crashed.refresh_from_db()
    assert crashed.status == Status.INTERRUPTED and "no heartbeat from process 4242 on far-away" in crashed.error


def test_workers_whose_sentinel_was_killed_interrupt_their_run_and_exit(start_cluster):
    """django-q2's orphaned workers would go on unsupervised: ours notice and stop."""
    cluster, _, run, holder = tokens_step_under_way(start_cluster)
    [sentinel] = [p for p in psutil.Process(cluster.pid).children() if any(c.pid == holder.pid for c in p.children())]
    sentinel.kill()

    def exited(pid):
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    try:
        wait_for(lambda: exited(holder.pid), 60, "the orphaned worker to finish its batch and exit")
    finally:
        os.killpg(cluster.pid, signal.SIGKILL)  # django-q2's own orphans (pusher, monitor) stay: as an operator would
        cluster.wait()
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (Status.INTERRUPTED, StopReason.SIGNAL)
    assert "supervisor (process" in run.error and Allocation.objects.get(owner=run.owner).state == "released"


def test_a_worker_killed_while_revoking_is_noticed_and_carrying_on_revokes_each_grant_once(start_cluster, google_tenant, fake_google):
    from collections import Counter

    from syncapp.models import Revocation, RevocationItem
    from syncapp.revocations import approve_revocation, plan_revocation, request_revocation, resume_revocation

    from ..conftest import sync_here

    users, tokens = demo_org(300, seed=SEED, apps=APPS)
    fake_google.load(users, tokens)
    assert sync_here(google_tenant).status == Status.COMPLETED
    app = Counter(t["clientId"] for items in tokens.values() for t in items).most_common(1)[0][0]
    count = Token.objects.filter(tenant=google_tenant, application__client_id=app, revoked_at__isnull=True).count()
    fake_google.latency_s = 0.05  # slow enough to be caught half-way
    google_tenant.governor_settings = {"batch_size": 2, "io_max_concurrency": 4}  # many small batches (20 rows on PostgreSQL)
    google_tenant.save()
    start_cluster(**HEARTBEAT)
    revocation = request_revocation(plan_revocation(tenant=google_tenant, client_id=app), requested_by="alice")
    run = approve_revocation(revocation, approved_by="bob")
    wait_for(lambda: RevocationItem.objects.filter(revocation=revocation, outcome=RevocationItem.Outcome.REVOKED).count() >= 10,
             120, "some grants to be revoked")
    holder = Holder.objects.get(allocation__owner=run.owner, name="revoke")
    os.kill(holder.pid, signal.SIGKILL)
    seconds_until(run_ended(run), DETECTED_WITHIN_S, "the dead worker's revocation run to be interrupted")
    assert SyncRun.objects.get(pk=run.pk).status == Status.INTERRUPTED
    assert RevocationItem.objects.filter(revocation=revocation, outcome=RevocationItem.Outcome.PENDING).exists()

    again = resume_revocation(Revocation.objects.get(pk=revocation.pk), resumed_by="bob")
    wait_for(run_ended(again), 240, "the revocation to be carried on")
    revocation.refresh_from_db()
    assert revocation.state == Revocation.State.DONE, revocation.outcome
    assert len(fake_google.revoked) == len(set(fake_google.revoked)) == count  # each grant once, none skipped
    assert not Token.objects.filter(tenant=google_tenant, application__client_id=app, revoked_at__isnull=True).exists()

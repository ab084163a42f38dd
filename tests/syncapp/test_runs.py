"""Runs take their slots through the ledger: queued over the quota, never dropped, in order."""

import threading

import pytest
from django.db import connections

from monitoring.ledger.processes import this_process
from monitoring.models import Allocation, TenantQuota
from syncapp.models import Status, SyncRun
from syncapp.providers.demo import DemoProvider
from syncapp.runs import RunRefused, cancel_run, start_run
from syncapp.tasks import run_in_process

from ..conftest import wait_for
from ..factories import TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(run_id):
    def target():
        try:
            run_in_process(run_id)
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_a_run_over_the_quota_waits_with_the_reason_then_completes_in_order(monkeypatch):
    # The provider holds every read until the test lets go, so the first run surely holds its
    # slot while the second asks for one (no race with a fast first run).
    gate, read_pages = threading.Event(), DemoProvider.user_pages

    def gated_pages(self, page_token=None):
        assert gate.wait(60)
        yield from read_pages(self, page_token)

    monkeypatch.setattr(DemoProvider, "user_pages", gated_pages)
    tenant = TenantFactory(provider_config={"users": 300})
    TenantQuota.objects.create(tenant=tenant, max_concurrent_runs=1)
    first = start_run(tenant=tenant, trigger="command", enqueue=False)
    second = start_run(tenant=tenant, trigger="command", enqueue=False)
    a = in_thread(first.pk)
    wait_for(lambda: SyncRun.objects.get(pk=first.pk).status == Status.RUNNING, 30, "the first run to start")
    b = in_thread(second.pk)
    wait_for(lambda: SyncRun.objects.get(pk=second.pk).waiting_reason, 30, "the second run to be told to wait")
    waiting = SyncRun.objects.get(pk=second.pk)
    assert waiting.status == Status.QUEUED
    assert waiting.waiting_reason == "tenant quota: 1 of 1 run slot in use"
    gate.set()
    for thread in (a, b):
        thread.join(120)
        assert not thread.is_alive(), "a run's thread did not end"
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (Status.COMPLETED, Status.COMPLETED)
    assert second.started_at >= first.finished_at and second.waiting_reason == ""
    assert set(Allocation.objects.values_list("state", flat=True)) == {"released"}  # every slot given back


def test_another_tenant_is_not_held_up():
    busy = TenantFactory(provider_config={"users": 50})
    TenantQuota.objects.create(tenant=busy, max_concurrent_runs=1)
    start_run(tenant=busy, trigger="command", enqueue=False)
    from monitoring.ledger.allocations import allocate

    allocate("run_slot", owner="someone-else", tenant_id=busy.pk)  # the busy tenant's only slot is taken
    other = start_run(tenant=TenantFactory(provider_config={"users": 20}), trigger="command", enqueue=False)
    run_in_process(other.pk)
    other.refresh_from_db()
    assert other.status == Status.COMPLETED


def test_cancelling_a_waiting_run_withdraws_it_from_the_queue():
    tenant = TenantFactory()
    TenantQuota.objects.create(tenant=tenant, max_concurrent_runs=1)
    from monitoring.ledger.allocations import allocate
    from syncapp.runs import begin_run

    allocate("run_slot", owner="holder", tenant_id=tenant.pk)
    run = start_run(tenant=tenant, trigger="admin", enqueue=False)
    assert begin_run(run.pk) == []
    assert Allocation.objects.get(owner=f"run-{run.pk}").state == "waiting"
    cancel_run(run)
    assert Allocation.objects.get(owner=f"run-{run.pk}").state == "released"
    assert SyncRun.objects.get(pk=run.pk).status == Status.CANCELLED


def test_runs_per_day_are_refused_with_the_reason():
    tenant = TenantFactory()
    TenantQuota.objects.create(tenant=tenant, runs_per_day=2)
    start_run(tenant=tenant, trigger="api", enqueue=False)
    start_run(tenant=tenant, trigger="api", enqueue=False)
    with pytest.raises(RunRefused, match="tenant quota: 2 runs per day reached"):
        start_run(tenant=tenant, trigger="api", enqueue=False)


def test_starting_a_run_reclaims_a_slot_whose_step_died_first(django_capture_on_commit_callbacks):
    """The admin's Start sync, the API, `sync` and `demo` all start here: no one waits behind a dead run."""
    from django.utils import timezone

    from monitoring.models import Holder

    tenant = TenantFactory(provider_config={"users": 20})
    dead = start_run(tenant=tenant, trigger="command", enqueue=False)
    from syncapp.runs import begin_run

    begin_run(dead.pk)
    slot = Allocation.objects.get(owner=dead.owner, state="granted")
    Holder.objects.create(allocation=slot, name="tokens", host=this_process().host, pid=999_999,
                          process_started=0.0, started_at=timezone.now(), heartbeat_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        start_run(tenant=tenant, trigger="admin", enqueue=False)
    dead.refresh_from_db()
    assert dead.status == Status.INTERRUPTED and dead.stop_reason == "worker_lost"
    assert Allocation.objects.get(pk=slot.pk).state == "reclaimed"


def test_sync_of_a_busy_tenant_says_it_waits_and_behind_which_run():
    from io import StringIO

    from django.core.management import call_command

    from monitoring.ledger.allocations import allocate

    tenant = TenantFactory(slug="busy")
    TenantQuota.objects.create(tenant=tenant, max_concurrent_runs=1)
    holder = start_run(tenant=tenant, trigger="command", enqueue=False)
    allocate("run_slot", owner=f"run-{holder.pk}", tenant_id=tenant.pk)  # it holds the tenant's only slot, between steps
    out = StringIO()
    call_command("sync", "busy", stdout=out)
    second = SyncRun.objects.exclude(pk=holder.pk).get()
    assert out.getvalue().strip() == (
        f"Run #{second.pk} queued; it waits for a run slot: tenant quota: 1 of 1 run slot in use; "
        f"held by run {holder.pk} (between steps, waiting for a worker); follow it in the admin or with --wait."
    )


def test_sync_quiet_prints_the_outcome_line_alone():
    import subprocess
    import sys

    from ..conftest import ROOT, child_env

    TenantFactory(slug="calm", provider_config={"users": 20})
    done = subprocess.run([sys.executable, "manage.py", "sync", "calm", "--wait", "--quiet"], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=120)
    run = SyncRun.objects.get()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Run #{run.pk} Completed in {run.duration_s:.1f} s." and done.stderr == ""

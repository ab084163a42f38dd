"""The ledger across real processes: limits hold, and a holder killed with SIGKILL is reclaimed."""

import signal
import subprocess
import sys

import pytest
from django.core.management import call_command

from monitoring.models import Allocation, TenantQuota
from syncapp.models import Status, SyncRun
from syncapp.runs import start_run

from ..conftest import ROOT, child_env
from ..factories import TenantFactory

pytestmark = pytest.mark.django_db(transaction=True)

CONTENDER = """
import os, sys, time, django
django.setup()
from monitoring.ledger.allocations import allocation
from monitoring.models import Allocation
tenant_id, rounds = int(sys.argv[1]), int(sys.argv[2])
most = 0
for i in range(rounds):
    with allocation("run_slot", owner=f"p{os.getpid()}-{i}", tenant_id=tenant_id, timeout_s=120, poll_s=0.02):
        most = max(most, Allocation.objects.filter(resource="run_slot", state="granted").count())
        time.sleep(0.02)
print(most)
"""

HOLDER = """
import sys, time, django
django.setup()
from monitoring.ledger.allocations import held
from monitoring.models import Allocation
from syncapp.runs import begin_run
begin_run(int(sys.argv[1]))
slot = Allocation.objects.get(owner=f"run-{sys.argv[1]}", state="granted")
with held(slot):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_several_processes_never_get_more_than_the_limit():
    tenant = TenantFactory()
    TenantQuota.objects.create(tenant=tenant, max_concurrent_runs=50)
    env = child_env(MAX_CONCURRENT_RUNS="3")
    processes = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, str(tenant.pk), "12"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    results = [p.communicate(timeout=240) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in results]
    most = [int(out.strip()) for out, _ in results]
    assert max(most) <= 3  # the cluster limit, however the processes raced
    assert Allocation.objects.filter(state="released").count() == 6 * 12
    assert Allocation.objects.filter(state="granted").count() == 0


def test_a_holder_killed_with_sigkill_is_reclaimed_and_its_run_interrupted():
    tenant = TenantFactory()
    run = start_run(tenant=tenant, trigger="command", enqueue=False)
    next_run = start_run(tenant=tenant, trigger="api")  # queued behind it (quota: one at a time)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.pk)], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    from syncapp.runs import begin_run

    assert begin_run(next_run.pk) == []  # waits: the killed process still holds the slot
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    holder.stdout.close()

    call_command("resources", "cleanup")  # the process is gone: no need to wait for the heartbeat timeout
    run.refresh_from_db()
    assert run.status == Status.INTERRUPTED and "gone" in run.error
    assert {s.status for s in run.step_records.all()} == {Status.INTERRUPTED}
    assert Allocation.objects.get(owner=f"run-{run.pk}").state == "reclaimed"
    assert Allocation.objects.get(owner=f"run-{next_run.pk}").state == "granted"  # the next one got the slot
    assert SyncRun.objects.get(pk=next_run.pk).status == Status.QUEUED  # and was queued again for the cluster

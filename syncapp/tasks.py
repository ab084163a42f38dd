"""django-q2 entry points, and the same run carried out by threads in this process.

Tasks take ids and call services in syncapp.runs and syncapp.steps.
"""

import logging
import threading

from django.db import connections
from django.utils import timezone

from monitoring.ledger.processes import stop_request

from .enqueue import enqueue_steps
from .models import Status, SyncRun, SyncStep, Tenant
from .runs import RunRefused, advance_run, begin_run, start_run, stop_run
from .schedules import scheduled_profile
from .step_registry import CHANGES
from .steps.execute import execute_step

log = logging.getLogger(__name__)


def run_task(run_id: int) -> None:
    """Coordinator: start the run and queue its first steps as their own tasks."""
    enqueue_steps(begin_run(run_id))


def step_task(step_id: int) -> None:
    """One step; when it ends, queue whatever it unblocked."""
    enqueue_steps(advance_run(execute_step(step_id)))


def scheduled_sync_task(tenant_id: int, now=None) -> int | None:
    """Started by a tenant's full-sync Schedule: a full sync, kept to the tenant's window (now:
    the local time to judge it by; the clock's by default)."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    runs, profile = scheduled_profile(tenant, now or timezone.localtime())
    if not runs:
        log.info("scheduled sync of %s skipped: outside its window %s", tenant.slug, tenant.sync_window)
        return None
    return _scheduled(tenant, "sync", profile=profile)


def scheduled_changes_task(tenant_id: int) -> int | None:
    """Started by a tenant's changes Schedule: the token feed since the cursor."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return None
    if tenant.changes_cursor is None:
        log.info("scheduled changes of %s skipped: no cursor until a full sync completes", tenant.slug)
        return None
    return _scheduled(tenant, "changes", steps=[CHANGES])


def _scheduled(tenant: Tenant, what: str, **request) -> int | None:
    try:
        return start_run(tenant=tenant, trigger=SyncRun.Trigger.SCHEDULE, **request).pk
    except RunRefused as exc:
        log.info("scheduled %s of %s skipped: %s", what, tenant.slug, exc)
        return None


def run_in_process(run_id: int) -> None:
    """Carry out a run here, each step in its own thread, following the same events as the cluster."""
    threads: list[threading.Thread] = []
    lock = threading.Lock()

    def start(steps: list[SyncStep]) -> None:
        for step in steps:
            thread = threading.Thread(target=work, args=(step.pk,), name=f"step-{step.name}")
            with lock:
                threads.append(thread)
            thread.start()

    def work(step_id: int) -> None:
        try:
            start(advance_run(execute_step(step_id)))
        finally:
            connections.close_all()

    first = begin_run(run_id)
    while not first and SyncRun.objects.filter(pk=run_id, status=Status.QUEUED).exists():
        request = stop_request()
        if request.wait(0.5):  # asked to stop while waiting for a slot (the reason shows on the run)
            stop_run(run_id, request)
            return
        first = begin_run(run_id)
    start(first)
    joined = 0
    while True:
        with lock:
            if joined == len(threads):
                break
            thread = threads[joined]
        thread.join()
        joined += 1

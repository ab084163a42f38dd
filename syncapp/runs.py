"""Start, coordinate, cancel and summarise sync runs.

A run moves by events, never by a worker waiting on another: begin_run queues
the steps that can start (users ∥ tokens), and each step, when it ends, calls
advance_run, which queues what became ready (relations after tokens) and
finalises the run once every step ended. The callers dispatch the returned
steps: to the cluster (syncapp.tasks) or to threads in this process.
"""

import logging
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from monitoring import metrics
from monitoring.governor.policy import State, cpu_concurrency, decide
from monitoring.governor.route import allowance_now
from monitoring.governor.sampler import get_sampler
from monitoring.ledger.allocations import Shortfall, allocate, reclaim_dead, release, release_owner, shortfall_now
from monitoring.ledger.owners import run_id_of, run_owner
from monitoring.ledger.quotas import limits_for
from monitoring.models import Allocation, Holder, ThrottleEvent
from monitoring.observability.health import cluster_is_running

from .enqueue import enqueue_run
from .forms import run_request
from .governance import run_policy
from .models import COUNTERS, ENDED, Status, StopReason, SyncRun, SyncStep, Tenant
from .step_registry import REVOKE, STEPS

log = logging.getLogger(__name__)


class RunRefused(ValueError):
    """A run cannot be started; the message says why."""


class QuotaReached(RunRefused):
    """The tenant's quota allows no more runs now (runs per day)."""


def start_run(*, tenant: Tenant, trigger: str, steps=None, profile: str = "", enqueue: bool = True, source: dict | None = None) -> SyncRun:
    """Record a queued run with its steps; with enqueue, hand it to the cluster once committed
    (without, the caller carries it out: syncapp.tasks.run_in_process). Bad steps or profile:
    ValidationError keyed by field; a tenant that may not run now: RunRefused. source: the files
    an import reads instead of the provider (syncapp.imports)."""
    request = run_request(steps=steps, profile=profile, provider=None if source else tenant.provider)  # an import is files, not the provider
    return _queue_run(tenant=tenant, trigger=trigger, names=request["steps"], profile=request["profile"], enqueue=enqueue, source=source)


def start_revocation_run(*, tenant: Tenant, enqueue: bool = True) -> SyncRun:
    """The run that carries out an approved revocation: its one step, under the tenant's quotas."""
    return _queue_run(tenant=tenant, trigger=SyncRun.Trigger.REVOKE, names=[REVOKE], profile="", enqueue=enqueue, source=None)


def _queue_run(*, tenant: Tenant, trigger: str, names: list[str], profile: str, enqueue: bool, source: dict | None) -> SyncRun:
    if not tenant.active:
        raise RunRefused(f"tenant {tenant.slug} is not active")
    per_day = limits_for(tenant.pk).runs_per_day
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    if per_day is not None and tenant.runs.filter(queued_at__gte=today).exclude(status=Status.CANCELLED).count() >= per_day:
        raise QuotaReached(f"tenant quota: {per_day} runs per day reached")
    reclaim_dead()  # a slot held by a process that died is free before anyone waits for it
    with transaction.atomic():
        run = SyncRun.objects.create(
            tenant=tenant, trigger=trigger, steps=",".join(names), profile=profile, in_process=not enqueue, source=source or {}
        )
        SyncStep.objects.bulk_create([SyncStep(run=run, name=name) for name in names])
        if enqueue:
            transaction.on_commit(lambda: enqueue_run(run.pk))
    log.info("[run %s] queued for %s by %s: %s", run.pk, tenant.slug, trigger, ", ".join(names), extra={"run": run.pk, "tenant": tenant.slug})
    return run


OVERLOADED = "system consistently overloaded"


def run_in_parallel(run: SyncRun) -> bool:
    """The run route's decision: users and tokens side by side when at least two are allowed
    (by memory, and by CPU: more than half a core left under the ceiling)."""
    if run.source:
        # An import reads users before tokens: a token file that names users by email finds
        # them in the users file, not only in earlier syncs.
        return False
    try:
        policy = run_policy(run, "run")
    except ValueError:
        return False  # the steps will fail with the reason
    reading = get_sampler().latest()
    allowance = allowance_now(policy, reading)
    decision = decide(reading, policy, cpu_cap=cpu_concurrency(allowance, policy.max_concurrency))
    parallel = policy.parallel and decision.concurrency >= 2
    if not parallel:
        if not policy.parallel:
            why = "ENABLE_PARALLEL_SYNC is off"
        else:
            why = decision.pressure.reason if decision.state != State.OK else allowance.describe()
        log.info("[run %s] users then tokens, one after the other: %s", run.pk, why)
    return parallel


PRIORITY = {SyncRun.Trigger.SCHEDULE: -1}  # people waiting come before the clock


def begin_run(run_id: int) -> list[SyncStep]:
    """queued → running once the ledger grants the run its slot; return the steps to dispatch.

    A run over its tenant's concurrent-run quota (or the cluster's) stays queued with the reason;
    when a slot frees, the ledger grants it and syncapp.signals queues it again, in order.
    """
    run = SyncRun.objects.select_related("tenant").get(pk=run_id)
    if run.status != Status.QUEUED:
        return []
    reclaim_dead()
    slot = allocate(Allocation.Resource.RUN_SLOT, owner=run_owner(run.pk), tenant_id=run.tenant_id, priority=PRIORITY.get(run.trigger, 0))
    if slot.state == slot.State.WAITING:
        if run.waiting_reason != slot.reason:
            SyncRun.objects.filter(pk=run_id, status=Status.QUEUED).update(waiting_reason=slot.reason)
            log.info("[run %s] waits for a slot: %s", run.pk, slot.reason)
        return []
    began = SyncRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.RUNNING, started_at=timezone.now(), parallel=run_in_parallel(run), waiting_reason=""
    )
    if not began:  # cancelled in the meantime
        release(slot)
        return []
    return advance_run(run_id)


def _final_status(run: SyncRun, steps: list[SyncStep]) -> str:
    if run.status == Status.CANCELLED:
        return Status.CANCELLED
    statuses = {s.status for s in steps}
    for status in (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED):
        if status in statuses:
            return status
    if statuses & {Status.COMPLETED_WITH_ERRORS, Status.SKIPPED}:
        return Status.COMPLETED_WITH_ERRORS
    return Status.COMPLETED


def advance_run(run_id: int) -> list[SyncStep]:
    """Queue the steps that became ready and finalise the run when every step ended."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().get(pk=run_id)
        if run.status in ENDED and run.finished_at:
            return []
        steps = {s.name: s for s in run.step_records.all()}
        overloaded = any(s.stop_reason == StopReason.OVERLOADED for s in steps.values())
        ready = []
        for step in steps.values():
            if step.status != Status.PENDING:
                continue
            if run.status == Status.CANCELLED:
                step.status = Status.CANCELLED
            elif overloaded:  # circuit breaker: no new step on a machine that stopped one
                step.status, step.error, step.stop_reason = Status.SKIPPED, f"circuit open: {OVERLOADED}", StopReason.CIRCUIT_OPEN
            else:
                kind = STEPS[step.name]
                needed = [steps[name] for name in kind.needs if name in steps]
                before = needed + ([] if run.parallel else [steps[name] for name in kind.follows if name in steps])
                if not all(s.ended for s in before):
                    continue  # one after the other
                failed = next((s for s in needed if s.status in (Status.FAILED, Status.CANCELLED, Status.INTERRUPTED)), None)
                if failed:
                    step.status, step.error, step.stop_reason = Status.SKIPPED, f"{failed.name} step {failed.status}", StopReason.UPSTREAM
                else:
                    step.status = Status.QUEUED
                    ready.append(step)
            if step.ended:
                step.finished_at = timezone.now()
            step.save(update_fields=["status", "error", "stop_reason", "finished_at"])
        finished = all(s.ended for s in steps.values())
        if finished:
            run.status = _final_status(run, list(steps.values()))
            run.finished_at = timezone.now()
            run.error = "\n".join(f"{s.name}: {s.error}" for s in steps.values() if s.error)
            if not run.stop_reason:
                run.stop_reason = next((s.stop_reason for s in steps.values() if s.stop_reason), StopReason.NONE)
            run.save(update_fields=["status", "finished_at", "error", "stop_reason"])
            release_owner(run_owner(run.pk))  # the next queued run may start; with the end, in one transaction
            if run.source.get("uploaded"):
                transaction.on_commit(lambda: _remove_uploads(run.source))
            log.info("[run %s] %s in %.1f s", run.pk, run.status, run.duration_s or 0.0, extra={"run": run.pk, "tenant": run.tenant.slug})
            metrics.sync_runs.labels(status=run.status).inc()
    return ready


def _remove_uploads(source: dict) -> None:
    """Files uploaded for an import belong to its run: they go when it ends, however it ended."""
    for kind in ("users", "tokens"):
        if source.get(kind):
            Path(source[kind]).unlink(missing_ok=True)


def cancel_run(run: SyncRun) -> bool:
    """Cancel a queued or running run: queued steps never start, running ones stop after their current batch."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().get(pk=run.pk)
        if run.status not in (Status.QUEUED, Status.RUNNING):
            return False
        run.status, run.stop_reason = Status.CANCELLED, StopReason.CANCELLED
        run.save(update_fields=["status", "stop_reason"])
        run.step_records.filter(status__in=[Status.PENDING, Status.QUEUED]).update(
            status=Status.CANCELLED, finished_at=timezone.now(), stop_reason=StopReason.CANCELLED
        )
    log.info("[run %s] cancelled", run.pk)
    advance_run(run.pk)  # finalises at once when no step is running (and gives back its slot)
    if run.started_at is None:
        release_owner(run_owner(run.pk))  # a run still waiting for a slot stops waiting
    return True


def run_summary(run: SyncRun) -> dict:
    """The run as one JSON-ready object (the shape `manage.py sync --json` prints)."""
    steps = {}
    for step in run.step_records.all():
        steps[step.name] = {
            "status": step.status,
            "duration_s": step.duration_s,
            **{name: getattr(step, name) for name in COUNTERS},
        }
    return {"id": run.pk, "status": run.status, "duration_s": run.duration_s, "steps": steps}


def interrupt_run(run_id: int, reason: str, stop_reason: str = StopReason.WORKER_LOST) -> bool:
    """A step's process died or was told to stop: the run and its unfinished steps become
    interrupted (checkpoints intact, the next run resumes) and its slot goes back at once.
    Steps still running elsewhere stop after their current batch."""
    with transaction.atomic():
        run = SyncRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status in ENDED:
            return False
        now = timezone.now()
        run.step_records.exclude(status__in=list(ENDED)).update(
            status=Status.INTERRUPTED, finished_at=now, error=reason, stop_reason=stop_reason
        )
        run.status, run.finished_at, run.error, run.stop_reason = Status.INTERRUPTED, now, reason, stop_reason
        run.save(update_fields=["status", "finished_at", "error", "stop_reason"])
        release_owner(run_owner(run_id))  # in the same transaction: nobody sees the run ended and its slot held
    log.warning("[run %s] interrupted: %s", run_id, reason, extra={"run": run_id})
    return True


def stop_run(run_id: int, request, *, where: str = "") -> bool:
    """This process was asked to stop (monitoring.ledger.processes.StopRequest): a person's Ctrl-C cancels
    the run; anything else interrupts it, to resume later. `where` names the step that saw it."""
    if request.by_person:
        return cancel_run(SyncRun.objects.get(pk=run_id))
    return interrupt_run(run_id, f"{where}: {request.reason}" if where else request.reason, StopReason.SIGNAL)


def _slot_holders(allocation: Allocation) -> str:
    """Who holds a run's slot, in words: its steps' processes and heartbeats, or none between steps."""
    holders = list(Holder.objects.filter(allocation=allocation))
    if not holders:
        return "between steps, waiting for a worker"
    return "; ".join(f"{h.name} step in {h.describe()}, heartbeat {h.heartbeat_age_s:.0f} s ago" for h in holders)


def _slot_wait(tenant_id: int, shortfall: Shortfall) -> str:
    """A run slot, why, and the runs that hold it: the tenant's own, or the cluster's."""
    others = Allocation.objects.filter(resource=Allocation.Resource.RUN_SLOT, state=Allocation.State.GRANTED)
    if shortfall.scope != Allocation.BlockedBy.CLUSTER:  # the tenant's own runs hold it
        others = others.filter(tenant_id=tenant_id)
    held = [f"run {run_id_of(a.owner)} ({_slot_holders(a)})" for a in others.order_by("id")[:3]]
    return f"a run slot: {shortfall.reason}" + (f"; held by {', '.join(held)}" if held else "")


def slot_wait(run: SyncRun) -> str:
    """What a run just queued waits for before it can start: a run slot and the runs that hold
    it ("" when it has one, or one is free for it)."""
    mine = Allocation.objects.live().filter(owner=run.owner, resource=Allocation.Resource.RUN_SLOT).first()
    if mine is not None:  # the cluster asked for it already
        return _slot_wait(run.tenant_id, Shortfall(mine.blocked_by, mine.reason)) if mine.state == "waiting" else ""
    shortfall = shortfall_now(Allocation.Resource.RUN_SLOT, tenant_id=run.tenant_id)
    return _slot_wait(run.tenant_id, shortfall) if shortfall else ""


def waiting_for(run: SyncRun) -> str:
    """What a run that is not running yet, or not working now, waits for, in words ("" when nothing)."""
    if run.status == Status.QUEUED:
        mine = Allocation.objects.live().filter(owner=run.owner, resource=Allocation.Resource.RUN_SLOT).first()
        if mine is not None and mine.state == "waiting":
            return _slot_wait(run.tenant_id, Shortfall(mine.blocked_by, mine.reason))
        return _worker_wait(run)
    if run.status == Status.RUNNING:
        held = ThrottleEvent.objects.holding([run.owner]).get(run.owner)
        if held:
            return "the governor: " + "; ".join(held)
        if not run.step_records.filter(status=Status.RUNNING).exists():
            return _worker_wait(run)
    return ""


def _worker_wait(run: SyncRun) -> str:
    if run.in_process:
        return "this process to start it"
    return "a worker" if cluster_is_running() else "a worker: no task cluster is running (start one: manage.py qcluster)"

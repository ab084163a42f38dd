"""What carries a queued step out: claim it (with this process as its holder), resume from the
last checkpoint, run it, and record how it ended, even when its database connection was lost.

Deletion detection runs only after a step read the whole source without a failed call or batch,
and only marks rows (deleted, revoked, inactive): nothing is ever hard-deleted.
"""

import logging
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from monitoring import metrics
from monitoring.governor.route import Governor, GovernorStop
from monitoring.ledger.allocations import drop, hold, watch
from monitoring.ledger.owners import run_owner
from monitoring.ledger.processes import stop_request, working
from monitoring.models import Allocation

from ..alerts import raise_alerts
from ..database_retry import DatabaseLost, fresh_connection, with_retries
from ..governance import governor_for, step_label
from ..models import COUNTERS, Status, StopReason, SyncRun, SyncStep
from ..providers import ConfigError, PageTokenRefused, ProviderError, get_provider
from ..risk import refresh_risk
from ..runs import stop_run
from ..secrets import scrub
from ..step_registry import STEPS
from .changes import sync_changes
from .context import StepCancelled, StepContext, StepStopped
from .delta import sync_delta
from .tokenlist import sync_token_list
from .tokens import sync_tokens

log = logging.getLogger(__name__)


def sync_grants(ctx: StepContext) -> None:
    """Per user where the source answers per user (Google), else from its list of every token;
    then every application's risk (a new risk table takes effect at a full sync)."""
    (sync_token_list if ctx.provider.lists_tokens else sync_tokens)(ctx)
    refresh_risk(ctx.tenant.pk, every=True)
    _raise_alerts(ctx)


def apply_changes(ctx: StepContext) -> None:
    """Delta queries of the directory's state where the source has them (Microsoft), else its
    feed of token events (Google); then the risk of the applications whose grants changed."""
    (sync_delta if ctx.provider.tracks_deltas else sync_changes)(ctx)
    refresh_risk(ctx.tenant.pk)
    _raise_alerts(ctx)


def _raise_alerts(ctx: StepContext) -> None:
    """The tenant's alert rules over what the step changed. An alert is never worth a sync: a
    failure here is logged, and the step ends as it would have."""
    try:
        raise_alerts(ctx.step.run)
    except Exception:  # whatever broke: the grants are written and stay so; this run's alerts are lost, said in the log
        log.exception("%s: alerts not raised", ctx.label())


MAX_RESUMES = 3  # a checkpoint that keeps failing is dropped for a full read
# Google's page tokens live about three days: an older checkpoint cannot resume its read.
PAGE_TOKEN_MAX_AGE = timedelta(hours=60)


def _resume_point(step: SyncStep) -> SyncStep | None:
    """The tenant's last step of this name, if it stopped part-way with a checkpoint to continue from."""
    previous = (
        SyncStep.objects.select_related("run").filter(run__tenant_id=step.run.tenant_id, name=step.name, run_id__lt=step.run_id)
        .exclude(status__in=[Status.PENDING, Status.QUEUED, Status.RUNNING, Status.SKIPPED])
        .order_by("-run_id")
        .first()
    )
    stopped = (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED)
    if not (previous and previous.status in stopped and previous.checkpoint and previous.checkpoint.get("resumes", 0) < MAX_RESUMES):
        return None
    if previous.run.source != step.run.source:  # a checkpoint is a place in one source: the provider, or those files
        return None
    written = previous.checkpoint.get("at")
    written = datetime.fromisoformat(written) if written else previous.finished_at or previous.started_at
    if previous.checkpoint.get("page_token") and written and timezone.now() - written > PAGE_TOKEN_MAX_AGE:
        log.info("%s run %s's checkpoint is from %s: its page token has expired; reading from the start",
                 step_label(step), previous.run_id, written.isoformat(timespec="seconds"))
        return None
    return previous


def _resource_fields(governor: Governor | None) -> dict:
    if governor is None:
        return {}
    stats = governor.stats
    return {
        "peak_rss_bytes": stats.peak_rss_bytes,
        "mean_cpu_percent": round(stats.mean_cpu_percent, 1),
        "peak_cpu_percent": round(stats.peak_cpu_percent, 1),
        "governor_wait_s": round(governor.waits.seconds(), 3),
    }


def _claim(step_id: int, started_at: datetime):
    """queued → running, with this process recorded as the step's holder of its run's slot, in one
    transaction: from its first moment, a running step has a process that others can see die.
    Returns the holder, or None when the step is not this process's to run."""
    step = SyncStep.objects.only("run_id", "name").get(pk=step_id)
    with transaction.atomic():
        slot = Allocation.objects.filter(owner=run_owner(step.run_id), resource=Allocation.Resource.RUN_SLOT, state=Allocation.State.GRANTED).first()
        if slot is None:  # delivered twice, cancelled while queued, or the run lost its slot
            return None
        claimed = SyncStep.objects.filter(pk=step_id, status=Status.QUEUED, run__status=Status.RUNNING).update(
            status=Status.RUNNING, started_at=started_at
        )
        return hold(slot, step.name) if claimed else None


def _resume(ctx: StepContext) -> None:
    """Continue from where the tenant's last such step stopped, if it left a checkpoint."""
    step = ctx.step
    previous = _resume_point(step)
    if previous is not None:
        ctx.resume, ctx.seen_since = previous.checkpoint, previous.seen_since or previous.started_at
        log.info("%s resumes run %s's %s step from %s", ctx.label(), previous.run_id, step.name, previous.checkpoint)
    SyncStep.objects.filter(pk=step.pk).update(resumed_from=previous, seen_since=ctx.seen_since, checkpoint={**ctx.resume})


def _paced(governor: Governor):
    """A database execute wrapper: before each statement outside a transaction, the governor's
    duty cycle. The database backends' CPU is the sync's (monitoring.governor.readings.database), and a
    step's set-based statements (guard counts, revocations, relations, risk) would otherwise
    run back to back over the ceiling. A transaction is never held open by a pause (nor
    SQLite's write lock, taken by the BEGIN it pauses before): a batch's is paid for by the
    next statement, or by the governor's before_batch."""

    def paced(execute, sql, params, many, context):
        if not connection.in_atomic_block:
            governor.settle()
        return execute(sql, params, many, context)

    return paced


def _run_step(ctx: StepContext) -> tuple[str, str, str]:
    """Carry the step out; return its (status, stop reason, error)."""
    tenant, step = ctx.tenant, ctx.step
    try:
        try:
            ctx.governor = governor_for(step, tenant)
        except ValueError as exc:  # a bad profile or override: the step fails, saying which
            return Status.FAILED, StopReason.CONFIG, f"governor settings: {exc}"
        _resume(ctx)
        kind = STEPS[step.name]
        if kind.reads_provider:
            ctx.provider = get_provider(tenant, step.run.source)
            ctx.provider.guard = ctx.governor.call
        with connection.execute_wrapper(_paced(ctx.governor)):
            try:
                kind.function()(ctx)
            except PageTokenRefused as exc:
                if not ctx.resume:
                    raise
                log.warning("%s %s: reading from the start", ctx.label(), exc)
                ctx.resume, ctx.seen_since = {}, ctx.started_at
                kind.function()(ctx)
        ctx.governor.settle()
    except StepCancelled:  # the run was cancelled or interrupted: the step ends as the run did
        status, reason = SyncRun.objects.values_list("status", "stop_reason").get(pk=step.run_id)
        return status, reason, ""
    except StepStopped:
        request = stop_request()
        if request.by_person:
            return Status.CANCELLED, StopReason.CANCELLED, request.reason
        return Status.INTERRUPTED, StopReason.SIGNAL, request.reason
    except GovernorStop as exc:
        return Status.FAILED, StopReason.OVERLOADED, str(exc)
    except ConfigError as exc:
        return Status.FAILED, StopReason.CONFIG, scrub(str(exc), tenant.provider_config)
    except ProviderError as exc:
        return Status.FAILED, StopReason.PROVIDER, scrub(str(exc), tenant.provider_config)
    except DatabaseLost as exc:
        return Status.FAILED, StopReason.DATABASE, str(exc)
    except Exception as exc:
        log.exception("%s crashed", ctx.label())
        return Status.FAILED, StopReason.CRASHED, scrub(f"{exc.__class__.__name__}: {exc}", tenant.provider_config)
    finally:
        if ctx.provider is not None:
            ctx.provider.close()
        if ctx.governor is not None:
            ctx.governor.close()
    if ctx.tally.held:
        return Status.COMPLETED_WITH_ERRORS, StopReason.NONE, (
            f"held {'; '.join(ctx.tally.held_what)}: more than the accidental-delete guard allows; confirm them with "
            f"`manage.py sync {tenant.slug} --confirm-deletes {step.run_id}` or the run's Confirm held deletions action"
        )
    if ctx.tally.invalid or ctx.tally.failed:
        return Status.COMPLETED_WITH_ERRORS, StopReason.NONE, ""
    return Status.COMPLETED, StopReason.NONE, ""


def execute_step(step_id: int) -> int:
    """Run one queued step to its end and record the outcome; return its run's id."""
    started_at = timezone.now()
    with working():
        holder = _claim(step_id, started_at)
        step = SyncStep.objects.select_related("run__tenant").get(pk=step_id)
        if holder is None:
            return step.run_id
        ctx = StepContext(step=step, tenant=step.run.tenant, provider=None, started_at=started_at, governor=None, holder_id=holder.pk)
        try:
            _record_end(ctx, *_run_step(ctx))
        except BaseException:  # KeyboardInterrupt and SystemExit too: the step must not be left "running"
            # The end could not be recorded (the database stayed away): stop beating, so that in
            # three heartbeats others see this step dead and interrupt its run; never "running".
            watch().discard(holder.pk)
            raise
        with_retries(lambda: drop(holder), what=f"{step_label(step)} release", log=log)
    return step.run_id


def _record_end(ctx: StepContext, status: str, reason: str, error: str) -> None:
    """Save how the step ended, on a fresh connection if its own was lost; stop the run with it
    when this process was told to stop."""
    step, tally, label = ctx.step, ctx.tally, ctx.label()

    # A step that read its whole source did what there was: its progress ends at 100%, whatever
    # was expected of it (a file's lines, the users stored before).
    done = {"expected": tally.done} if status in (Status.COMPLETED, Status.COMPLETED_WITH_ERRORS) else {}

    def save() -> None:
        SyncStep.objects.filter(pk=step.pk).update(
            status=status, stop_reason=reason, finished_at=timezone.now(), error=error[:2000],
            **tally.as_fields(), **_resource_fields(ctx.governor), **done,
        )

    fresh_connection()
    with_retries(save, what=f"{label} end", log=log)
    request = stop_request()
    if reason in (StopReason.SIGNAL, StopReason.CANCELLED) and request.is_set():
        stop_run(step.run_id, request, where=f"{step.name} step")  # the others stop, the slot goes back
    for outcome in COUNTERS:
        metrics.sync_rows.labels(step=step.name, outcome=outcome).inc(getattr(tally, outcome))
    metrics.sync_duration.labels(step=step.name).observe((timezone.now() - ctx.started_at).total_seconds())
    metrics.concurrency.labels(route=step.name).set(0)  # this process no longer works on the route
    log.info(
        "%s %s: %d received, %d created, %d updated, %d unchanged, %d deactivated, %d invalid, %d failed%s",
        label, status, tally.received, tally.created, tally.updated, tally.unchanged,
        tally.deactivated, tally.invalid, tally.failed, f" ({error})" if error else "",
        extra={"run": step.run_id, "step": step.name, "tenant": ctx.tenant.slug},
    )

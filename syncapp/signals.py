from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from monitoring.ledger.owners import run_id_of
from monitoring.models import Allocation
from monitoring.signals import allocation_granted, allocation_reclaimed

from .enqueue import enqueue_run
from .models import RiskOverride, Status, SyncRun, Tenant
from .risk import refresh_risk
from .runs import interrupt_run
from .schedules import remove_schedules, sync_schedule


@receiver(post_save, sender=Tenant, dispatch_uid="ballast-tenant-schedule")
def tenant_saved(sender, instance, raw=False, **kwargs):
    if not raw:
        sync_schedule(instance)


@receiver(post_delete, sender=Tenant, dispatch_uid="ballast-tenant-unschedule")
def tenant_deleted(sender, instance, **kwargs):
    remove_schedules(instance.pk)


@receiver(post_save, sender=RiskOverride, dispatch_uid="ballast-override-saved")
@receiver(post_delete, sender=RiskOverride, dispatch_uid="ballast-override-deleted")
def risk_override_changed(sender, instance, raw=False, **kwargs):
    """A tenant's rankings changed: its applications' and tokens' risk now, not at the next sync."""
    if not raw:
        refresh_risk(instance.tenant_id, every=True)


@receiver(allocation_granted, dispatch_uid="ballast-run-granted")
def run_slot_granted(sender, allocation, waited=True, **kwargs):
    """A waiting run got its slot: queue it again (an in-process run polls for it instead)."""
    run_id = _run_id(allocation) if waited else None
    if run_id is not None and SyncRun.objects.filter(pk=run_id, status=Status.QUEUED, in_process=False).exists():
        enqueue_run(run_id)


@receiver(allocation_reclaimed, dispatch_uid="ballast-run-reclaimed")
def run_slot_reclaimed(sender, allocation, **kwargs):
    run_id = _run_id(allocation)
    if run_id is not None:
        interrupt_run(run_id, f"interrupted: {allocation.reason}")


def _run_id(allocation) -> int | None:
    return run_id_of(allocation.owner) if allocation.resource == Allocation.Resource.RUN_SLOT else None

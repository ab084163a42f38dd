from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django_q.models import Schedule

from .models import Tenant
from .schedules import schedule_name, sync_schedule


@receiver(post_save, sender=Tenant, dispatch_uid="ballast-tenant-schedule")
def tenant_saved(sender, instance, raw=False, **kwargs):
    if not raw:
        sync_schedule(instance)


@receiver(post_delete, sender=Tenant, dispatch_uid="ballast-tenant-unschedule")
def tenant_deleted(sender, instance, **kwargs):
    Schedule.objects.filter(name=schedule_name(instance.pk)).delete()

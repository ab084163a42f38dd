import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.models import TenantQuota
from monitoring.quotas import QUOTA_FIELDS, limits_for
from monitoring.tenants import get_tenant, tenant_model


class Command(BaseCommand):
    help = "Show a tenant's quota, or set parts of it (unset parts follow the site's defaults)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        for name in QUOTA_FIELDS:
            kind = float if name == "provider_calls_per_second" else int
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, metavar="N")
        parser.add_argument("--json", action="store_true", help="Print the quota as one JSON object.")

    def handle(self, *args, slug, **options):
        try:
            tenant = get_tenant(slug)
        except tenant_model().DoesNotExist:
            raise CommandError(f"no tenant {slug!r}") from None
        changes = {name: options[name] for name in QUOTA_FIELDS if options[name] is not None}
        if changes:
            quota = TenantQuota.objects.filter(tenant=tenant).first() or TenantQuota(tenant=tenant)
            for name, value in changes.items():
                setattr(quota, name, value)
            try:
                quota.full_clean()
            except ValidationError as exc:
                problems = "; ".join(f"--{field.replace('_', '-')}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
                raise CommandError(problems) from None
            quota.save()
        row = TenantQuota.objects.filter(tenant=tenant).values(*QUOTA_FIELDS).first() or {}
        limits = limits_for(tenant.pk)
        defaults = [name for name in QUOTA_FIELDS if row.get(name) is None]
        if options["json"]:
            self.stdout.write(json.dumps({"tenant": slug, **{n: getattr(limits, n) for n in QUOTA_FIELDS}, "defaults": defaults}))
            return
        for name in QUOTA_FIELDS:
            value = getattr(limits, name)
            shown = "unlimited" if value is None else value
            self.stdout.write(f"{name.replace('_', ' '):<26} {shown}{'  (default)' if name in defaults else ''}")

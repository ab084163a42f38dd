import json

from django.core.management.base import BaseCommand, CommandError

from monitoring.forms import QuotaForm, errors_in_words
from monitoring.ledger.quotas import QUOTA_FIELDS, limits_for
from monitoring.models import TenantQuota
from monitoring.tenants import get_tenant, tenant_model


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


class Command(BaseCommand):
    help = "Show a tenant's quota, or set parts of it (unset parts follow the site's defaults)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        for name in QUOTA_FIELDS:
            kind = float if name == "provider_calls_per_second" else int
            parser.add_argument(flag(name), dest=name, type=kind, metavar="N")
        parser.add_argument(
            "--reset", action="append", default=[], metavar="FIELD",
            help=f"Put a field back to the site's default (repeatable): {', '.join(n.replace('_', '-') for n in QUOTA_FIELDS)}.",
        )
        parser.add_argument("--json", action="store_true", help="Print the quota as one JSON object.")

    def handle(self, *args, slug, reset, **options):
        try:
            tenant = get_tenant(slug)
        except tenant_model().DoesNotExist:
            raise CommandError(f"no tenant {slug!r}") from None
        reset = [name.replace("-", "_") for name in reset]
        unknown = [name for name in reset if name not in QUOTA_FIELDS]
        if unknown:
            raise CommandError(f"--reset: no quota field {unknown[0].replace('_', '-')!r}; choose from {', '.join(n.replace('_', '-') for n in QUOTA_FIELDS)}")
        changes = {name: options[name] for name in QUOTA_FIELDS if options[name] is not None}
        clash = [name for name in reset if name in changes]
        if clash:
            raise CommandError(f"{flag(clash[0])} and --reset {clash[0].replace('_', '-')} contradict each other")
        if changes or reset:
            quota = TenantQuota.objects.filter(tenant=tenant).first() or TenantQuota(tenant=tenant)
            data = {name: getattr(quota, name) for name in QUOTA_FIELDS} | changes | dict.fromkeys(reset)
            form = QuotaForm({name: "" if value is None else value for name, value in data.items()}, instance=quota)
            if not form.is_valid():
                raise CommandError(errors_in_words(form.errors, {name: flag(name) for name in QUOTA_FIELDS}))
            form.save()
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

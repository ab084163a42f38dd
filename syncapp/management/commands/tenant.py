import json

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from syncapp.directory import directory_counts
from syncapp.models import Tenant
from syncapp.providers import ConfigError, provider_class


class Command(BaseCommand):
    help = "Add, list and show tenants."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Add a tenant.")
        add.add_argument("slug")
        add.add_argument("--provider", required=True, choices=Tenant.Provider.values)
        add.add_argument("--name", help="Display name (default: the slug).")
        add.add_argument("--config", default="{}", help='Provider config as a JSON object, e.g. \'{"users": 500}\'.')
        add.add_argument("--every-minutes", type=int, help="Schedule a full sync this often.")
        actions.add_parser("list", help="List tenants.")
        show = actions.add_parser("show", help="Show what is stored for a tenant.")
        show.add_argument("slug")
        show.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_add(self, *, slug, provider, name, config, every_minutes, **_):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--config is not JSON: {exc.msg}") from None
        if not isinstance(config, dict):
            raise CommandError("--config must be a JSON object")
        try:
            provider_class(provider).clean_config(config)
        except ConfigError as exc:
            raise CommandError(f"--config for the {provider} provider: {exc}") from None
        if every_minutes is not None and every_minutes < 1:
            raise CommandError("--every-minutes must be 1 or more")
        try:
            with transaction.atomic():
                tenant = Tenant.objects.create(
                    slug=slug, name=name or slug, provider=provider, provider_config=config, sync_every_minutes=every_minutes
                )
        except IntegrityError:
            raise CommandError(f"a tenant {slug!r} exists already") from None
        self.stdout.write(f"Added tenant {tenant.slug} ({tenant.get_provider_display()}).")

    def handle_list(self, **_):
        rows = [("SLUG", "PROVIDER", "ACTIVE", "USERS", "LAST RUN")]
        for tenant in Tenant.objects.all():
            run = tenant.runs.first()
            rows.append(
                (
                    tenant.slug,
                    tenant.provider,
                    "yes" if tenant.active else "no",
                    str(tenant.users.filter(deleted_at__isnull=True).count()),
                    f"#{run.pk} {run.status}" if run else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())

    def handle_show(self, *, slug, **options):
        tenant = _tenant(slug)
        counts = directory_counts(tenant)
        if options["json"]:
            self.stdout.write(json.dumps(counts))
            return
        self.stdout.write(f"{tenant.slug}: {tenant.name} ({tenant.get_provider_display()}, {'active' if tenant.active else 'inactive'})")
        for key, value in counts.items():
            if key != "slug":
                detail = ", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
                self.stdout.write(f"  {key}: {detail}")



def _tenant(slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise CommandError(f"no tenant {slug!r}; see `manage.py tenant list`") from None

import json

from django.core.management.base import BaseCommand, CommandError

from monitoring.forms import errors_in_words
from syncapp.directory import directory_counts
from syncapp.forms import TenantForm
from syncapp.models import Tenant
from syncapp.provider_check import check_tenant_connection

# The form's fields as this command's arguments call them.
ADD_FLAGS = {"slug": "slug", "name": "--name", "provider": "--provider", "provider_config": "--config",
             "sync_every_minutes": "--every-minutes", "changes_every_minutes": "--changes-every-minutes",
             "sync_window": "--window", "window_profile": "--window-profile", "outside_window_profile": "--outside-window-profile",
             "sync_profile": "--profile"}


class Command(BaseCommand):
    help = "Add, list and show tenants."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        add = actions.add_parser("add", help="Add a tenant.")
        add.add_argument("slug")
        add.add_argument("--provider", required=True, help=f"One of: {', '.join(Tenant.Provider.values)}.")
        add.add_argument("--name", help="Display name (default: the slug).")
        add.add_argument("--config", default="{}", help='Provider config as a JSON object, e.g. \'{"users": 500}\'.')
        add.add_argument("--every-minutes", type=int, help="Schedule a full sync this often.")
        add.add_argument("--changes-every-minutes", type=int, help="Apply the provider's changes (Google's token feed, Microsoft Graph's delta queries) this often.")
        add.add_argument("--window", default="", help="Scheduled full syncs in this window of local time only, e.g. 01:00-05:00.")
        add.add_argument("--window-profile", default="", help="Resource profile of scheduled full syncs inside the window.")
        add.add_argument("--outside-window-profile", default="", help="Profile of scheduled full syncs outside it (default: none runs there).")
        add.add_argument("--profile", default="", help="Resource profile for its runs (default: the site's).")
        actions.add_parser("list", help="List tenants.")
        show = actions.add_parser("show", help="Show what is stored for a tenant.")
        show.add_argument("slug")
        show.add_argument("--json", action="store_true", help="Print one JSON object.")
        check = actions.add_parser("test", help="Test the connection: one call to each endpoint a sync uses.")
        check.add_argument("slug")
        check.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def handle_add(self, *, slug, provider, name, config, every_minutes, changes_every_minutes, window, window_profile,
                   outside_window_profile, profile, **_):
        form = TenantForm({
            "slug": slug, "name": name or slug, "provider": provider, "provider_config": config, "active": True,
            "sync_every_minutes": every_minutes, "changes_every_minutes": changes_every_minutes, "sync_window": window,
            "window_profile": window_profile, "outside_window_profile": outside_window_profile, "sync_profile": profile,
            "governor_settings": "{}",
        })
        if not form.is_valid():
            raise CommandError(errors_in_words(form.errors, ADD_FLAGS))
        tenant = form.save()
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
        consents = tenant.applications.exclude(org_scopes=[]).order_by("display_name", "client_id")
        if consents:
            self.stdout.write("  consented for the whole organisation by an administrator:")
            for app in consents:
                self.stdout.write(f"    {app.display_name or app.client_id} ({app.client_id}): {', '.join(app.org_scopes)}")

    def handle_test(self, *, slug, **options):
        report = check_tenant_connection(_tenant(slug))
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json()))
        else:
            self.stdout.write(f"Testing {report.tenant} ({report.provider}):")
            for check in report.checks:
                mark = {True: self.style.SUCCESS("  ok  "), False: self.style.ERROR("  FAIL"), None: "  skip"}[check.ok]
                self.stdout.write(f"{mark} {check.name}: {check.detail}")
                if check.target != check.name:
                    self.stdout.write(f"        {check.target}")
            if report.revocation:
                self.stdout.write(f"Revoking grants: {report.revocation.detail}")
            if report.missing_scopes:
                self.stdout.write("Scopes missing: " + ", ".join(report.missing_scopes))
            if report.ok:
                self.stdout.write(self.style.SUCCESS("The connection works: a sync can run."))
        if not report.ok:
            raise CommandError(f"the connection does not work: {report.first_error}", returncode=1)


def _tenant(slug: str) -> Tenant:
    try:
        return Tenant.objects.get(slug=slug)
    except Tenant.DoesNotExist:
        raise CommandError(f"no tenant {slug!r}; see `manage.py tenant list`") from None

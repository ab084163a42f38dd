from django.core.management.base import BaseCommand, CommandError

from syncapp.apikeys import create_key, revoke
from syncapp.models import ApiKey

from .tenant import _tenant


class Command(BaseCommand):
    help = "Create, list and revoke a tenant's API keys."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Make a key; it is printed once, alone on the last line.")
        create.add_argument("slug")
        create.add_argument("--name", default="")
        create.add_argument("--may-revoke", action="store_true", help="The key may ask for and approve revocations (POST /api/v1/revocations/).")
        listing = actions.add_parser("list", help="A tenant's keys (prefixes only).")
        listing.add_argument("slug")
        revoking = actions.add_parser("revoke", help="Revoke a key by its prefix.")
        revoking.add_argument("prefix")

    def handle(self, *args, action, **options):
        if action == "create":
            tenant = _tenant(options["slug"])
            row, key = create_key(tenant, options["name"], may_revoke=options["may_revoke"])
            self.stderr.write(f"API key {row.prefix}… for {tenant.slug}. Keep it now: it is not shown again.")
            self.stdout.write(key)
        elif action == "list":
            for row in _tenant(options["slug"]).api_keys.order_by("created_at"):
                state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
                used = f"last used {row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never used"
                self.stdout.write(f"{row.prefix}  {state}  {used}  {row.name}")
        else:
            row = ApiKey.objects.filter(prefix=options["prefix"]).first()
            if row is None:
                raise CommandError(f"no API key {options['prefix']!r}")
            revoke(row)
            self.stdout.write(f"Revoked {row.prefix}… of {row.tenant.slug}.")

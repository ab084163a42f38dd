from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from syncapp.encryption import SecretUnreadable
from syncapp.models import Tenant


class Command(BaseCommand):
    help = "Provider secrets at rest. `rotate`: re-encrypt every tenant's secrets under the first key of SECRETS_KEYS."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("rotate", help="Re-encrypt under the first key; the others may then be dropped.")

    def handle(self, *args, action, **options):
        from django.conf import settings

        if not settings.BALLAST_SECRETS_KEYS:
            raise CommandError("SECRETS_KEYS is empty: set it to a Fernet key (the new one first) to encrypt provider secrets")
        done = 0
        try:
            with transaction.atomic():
                for tenant in Tenant.objects.select_for_update().order_by("pk"):
                    tenant.save(update_fields=["provider_config"])  # read with any key, written under the first
                    done += 1
        except SecretUnreadable as exc:
            raise CommandError(f"nothing rotated: {exc}") from None
        self.stdout.write(f"Re-encrypted the provider secrets of {done} tenant(s) under the first key of SECRETS_KEYS.")

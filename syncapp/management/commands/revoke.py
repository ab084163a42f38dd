import getpass
import sys

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.forms import errors_in_words
from syncapp.models import RevocationItem
from syncapp.revocations import approve_revocation, plan_revocation, request_revocation, resume_revocation, unfinished_revocation

from .sync import carry_out
from .tenant import _tenant

FLAGS = {"app": "--app", "user": "--user", "tenant": "SLUG", "state": "the revocation"}


class Command(BaseCommand):
    help = (
        "Revoke an application's grants at the provider: every user's, or one user's with --user. "
        "Says first exactly what would be revoked; --dry-run stops there. The run is governed as a "
        "sync is, each grant is checked gone afterwards, and the request is kept for the audit."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--app", required=True, metavar="CLIENT_ID", help="The application whose grants go.")
        parser.add_argument("--user", default="", metavar="EMAIL", help="Only this user's grant.")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be revoked, and change nothing.")
        parser.add_argument("--yes", action="store_true", help="Revoke without being asked to confirm.")

    def handle(self, *args, slug, app, user, dry_run, yes, **options):
        tenant = _tenant(slug)
        try:
            plan = plan_revocation(tenant=tenant, client_id=app, user_email=user)
        except ValidationError as exc:
            raise CommandError(errors_in_words(exc.message_dict, FLAGS)) from None
        self.stdout.write(plan.words() + ("." if plan.tokens else ""))
        unfinished = unfinished_revocation(plan)
        if unfinished is not None:
            left = unfinished.items.filter(outcome=RevocationItem.Outcome.PENDING).count()
            self.stdout.write(f"Revocation {unfinished.pk} of these grants stopped with {left} still to revoke: {'it would carry on' if dry_run else 'carrying it on'}.")
        if dry_run or not (plan.tokens or unfinished):
            return
        if not yes and not self._confirmed(len(plan.tokens)):
            raise CommandError("nothing revoked: confirm at the prompt, or give --yes (--dry-run only says what would go)")
        who = f"{getpass.getuser()} (manage.py revoke)"
        if unfinished is not None:
            revocation, start = unfinished, lambda enqueue: resume_revocation(unfinished, resumed_by=who, enqueue=enqueue)
        else:
            revocation = request_revocation(plan, requested_by=who)
            start = lambda enqueue: approve_revocation(revocation, approved_by=who, enqueue=enqueue)  # noqa: E731
        try:
            carry_out(self, start, wait=True, in_process=False, quiet=False, as_json=False)
        except PermissionDenied as exc:
            self.stdout.write(f"Revocation {revocation.pk} is recorded and waits for approval: {exc}. Approve it in the admin.")
            return
        finally:
            revocation.refresh_from_db()
            if revocation.outcome:
                self.stdout.write(f"Revocation {revocation.pk} {revocation.get_state_display()}: {revocation.outcome}.")
        if revocation.state != revocation.State.DONE:
            raise CommandError(f"revocation {revocation.pk} {revocation.get_state_display()}", returncode=1)

    def _confirmed(self, count: int) -> bool:
        if not sys.stdin.isatty():
            return False
        self.stdout.write(f"Revoke {count} grant(s) at the provider? [y/N] ", ending="")
        return input().strip().lower() in ("y", "yes")

from django.core.management.base import BaseCommand

from monitoring.ledger import reclaim_dead


class Command(BaseCommand):
    help = "Resource housekeeping. cleanup: reclaim allocations whose holder died (no heartbeat, or process gone)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        cleanup = actions.add_parser("cleanup", help=self.help.split(". ", 1)[1])
        cleanup.add_argument("--timeout", type=float, default=None, help="Seconds without a heartbeat (default HOLDER_TIMEOUT_S).")

    def handle(self, *args, action, **options):
        reclaimed = reclaim_dead(options["timeout"])
        for allocation in reclaimed:
            self.stdout.write(f"reclaimed {allocation.amount} {allocation.resource} of {allocation.owner}: {allocation.reason}")
        self.stdout.write(f"{len(reclaimed)} allocation(s) reclaimed.")

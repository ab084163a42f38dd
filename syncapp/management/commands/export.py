from django.core.management.base import BaseCommand, CommandError

from syncapp.inventory import EXPORTS, FORMATS, export_lines

from .tenant import _tenant


class Command(BaseCommand):
    help = (
        "Write a tenant's tokens or applications as CSV (a header, then a row each; scopes space-separated) "
        "or JSON lines (the API's records), streamed: memory stays flat however many rows."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("what", choices=list(EXPORTS), help="tokens or applications")
        parser.add_argument("--format", choices=FORMATS, default="csv", help="csv (default) or jsonl")
        parser.add_argument("--output", metavar="FILE", help="Write to FILE instead of standard output.")

    def handle(self, *args, slug, what, format, output, **options):
        tenant = _tenant(slug)
        rows, record = EXPORTS[what]
        lines = export_lines(rows(tenant.pk), record, format)
        if not output:
            for line in lines:
                self.stdout.write(line, ending="")
            return
        try:
            out = open(output, "w", encoding="utf-8", newline="")  # CSV lines end in CRLF, as RFC 4180 has them
        except OSError as exc:
            raise CommandError(f"--output: cannot write {output}: {exc.strerror}") from None
        with out:
            out.writelines(lines)

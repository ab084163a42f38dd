from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.forms import errors_in_words
from syncapp.exportfiles import FORMATS, GAM_COMMANDS
from syncapp.imports import import_source, start_import

from .sync import add_follow_arguments, carry_out
from .tenant import _tenant

FLAGS = {"users": "--users", "tokens": "--tokens", "format": "--format"}


class Command(BaseCommand):
    help = (
        "Import a directory export (GAM's CSV, or JSON lines; .gz read as a stream) into a tenant: a run whose "
        "users and tokens steps read the files instead of the provider, then relations as usual. "
        "Without --complete nothing is marked deleted or revoked. With --wait and no cluster running, "
        "the run is carried out in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--users", metavar="FILE", help=f"Users: `{GAM_COMMANDS['users']}` CSV, or users.list objects as JSON lines.")
        parser.add_argument("--tokens", metavar="FILE", help=f"Tokens: `{GAM_COMMANDS['tokens']}` CSV, or token objects as JSON lines.")
        parser.add_argument("--format", choices=FORMATS, help="The files' format (default: from each name: .csv, .jsonl, .ndjson).")
        parser.add_argument("--complete", action="store_true",
                            help="The files are a whole export: users and tokens they lack are marked deleted and revoked.")
        add_follow_arguments(parser)

    def handle(self, *args, slug, users, tokens, format, complete, wait, in_process, quiet, **options):
        tenant = _tenant(slug)
        try:
            source = import_source(users=users, tokens=tokens, format=format, complete=complete)
        except ValidationError as exc:
            raise CommandError(errors_in_words(exc.message_dict, FLAGS)) from None
        carry_out(self, lambda enqueue: start_import(tenant, source, enqueue=enqueue),
                  wait=wait, in_process=in_process, quiet=quiet, as_json=options["json"])

import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from syncapp.directory import directory_counts
from syncapp.models import Status, SyncRun, Tenant
from syncapp.progress import run_here_and_follow
from syncapp.runs import run_summary, start_run


class Command(BaseCommand):
    help = "Set up a demo: migrate, add a demo tenant and an admin login, run a full sync here, print a summary."

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=1000, help="Size of the synthetic organisation.")
        parser.add_argument("--latency-ms", type=int, default=5, help="Wait per provider call.")
        parser.add_argument("--address", default="http://127.0.0.1:8000", help="Where the admin will be served.")
        parser.add_argument("--quiet", action="store_true", help="No progress lines during the sync.")

    def handle(self, *args, users, latency_ms, address, quiet, **options):
        if users < 0 or latency_ms < 0:
            raise CommandError("--users and --latency-ms must be 0 or more")
        self.stdout.write("Migrating the database…")
        call_command("migrate", interactive=False, verbosity=0)

        tenant, created = Tenant.objects.get_or_create(
            slug="demo",
            defaults={
                "name": "Demo Organisation",
                "provider": Tenant.Provider.DEMO,
                "provider_config": {"users": users, "apps": 30, "seed": 7, "latency_ms": latency_ms},
            },
        )
        self.stdout.write(f"{'Added' if created else 'Using'} tenant {tenant.slug} ({tenant.provider_config['users']} synthetic users).")

        User = get_user_model()
        if User.objects.filter(username="admin").exists():
            self.stdout.write("Admin login: admin (password as printed when it was made; change it with `manage.py changepassword admin`).")
        else:
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@example.org", password)
            self.stdout.write(self.style.SUCCESS(f"Admin login: admin / {password}   (shown once)"))

        run = start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, enqueue=False)
        run = run_here_and_follow(run.pk, self.stdout._out, quiet=quiet)
        if run.status in (Status.CANCELLED, Status.INTERRUPTED):
            raise CommandError(f"run #{run.pk} {run.status}; `make demo` again resumes it", returncode=130)

        summary, counts = run_summary(run), directory_counts(tenant)
        self.stdout.write(f"\nRun #{run.pk} {run.status} in {summary['duration_s']:.1f} s")
        for name, step in summary["steps"].items():
            self.stdout.write(
                f"  {name:<9} {step['received']:>6} read  {step['created']:>6} created  {step['updated']:>5} updated  "
                f"{step['unchanged']:>6} unchanged  {step['invalid']:>3} invalid"
            )
        self.stdout.write(
            f"Stored: {counts['users']['active']} users ({counts['users']['suspended']} suspended), "
            f"{counts['applications']} applications, {counts['tokens']['active']} tokens, "
            f"{counts['relations']['active']} relations."
        )
        self.stdout.write(self.style.SUCCESS(f"Open {address.rstrip('/')}/admin/ to see run #{run.pk}."))

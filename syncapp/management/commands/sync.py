import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from monitoring.forms import errors_in_words
from monitoring.observability.health import cluster_is_running
from syncapp.forms import run_request, steps_help
from syncapp.models import Status, SyncRun
from syncapp.progress import follow, run_here_and_follow
from syncapp.runs import RunRefused, run_summary, slot_wait, start_run
from syncapp.step_registry import FULL_SYNC, offered_steps
from syncapp.steps.confirm import NothingHeld, confirm_held

from .tenant import _tenant

FLAGS = {"steps": "--steps", "profile": "--profile"}
SUCCESS = {Status.COMPLETED, Status.COMPLETED_WITH_ERRORS}


class Command(BaseCommand):
    help = (
        "Queue a sync run for a tenant on the task cluster. With --wait, follow it to the end; "
        "when no cluster is running, --wait carries the run out in this process instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--steps", default=",".join(FULL_SYNC), help=f"Comma-separated, from {','.join(offered_steps())}. {steps_help(offered_steps(), 'By default')}")
        parser.add_argument("--profile", default="", help="Resource profile for this run (default: the tenant's).")
        parser.add_argument("--confirm-deletes", type=int, metavar="RUN",
                            help="Apply the deletions and revocations the accidental-delete guard held in run RUN, and start no run.")
        add_follow_arguments(parser)

    def handle(self, *args, slug, steps, wait, in_process, profile, quiet, confirm_deletes, **options):
        tenant = _tenant(slug)
        if confirm_deletes is not None:
            return self.confirm(tenant, confirm_deletes)
        try:
            request = run_request(steps=steps, profile=profile, provider=tenant.provider)
        except ValidationError as exc:
            raise CommandError(errors_in_words(exc.message_dict, FLAGS)) from None
        carry_out(self, lambda enqueue: start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, **request, enqueue=enqueue),
                  wait=wait, in_process=in_process, quiet=quiet, as_json=options["json"])


    def confirm(self, tenant, run_id: int) -> None:
        run = SyncRun.objects.filter(pk=run_id, tenant=tenant).first()
        if run is None:
            raise CommandError(f"no run {run_id} of tenant {tenant.slug}; see the Sync runs list")
        try:
            done = confirm_held(run, by="command")
        except NothingHeld as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Run #{run.pk}: " + ", ".join(f"{step}: {marked:,} marked" for step, marked in done.items()))


def add_follow_arguments(parser) -> None:
    """How `sync` and `import` wait for their run and print it."""
    parser.add_argument("--wait", action="store_true", help="Follow the run; exit 0 only if it completed.")
    parser.add_argument("--in-process", action="store_true", help="Run here even if a cluster is running (implies --wait).")
    parser.add_argument("--json", action="store_true", help="Print the run as one JSON object on stdout.")
    parser.add_argument("--quiet", action="store_true", help="No progress while waiting: only the outcome.")


@contextmanager
def info_unsaid() -> Iterator[None]:
    """Ballast's own log lines below WARNING held back (--quiet: the outcome line alone)."""
    loggers = [logging.getLogger(name) for name in ("syncapp", "monitoring", "django_q")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.level, logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def carry_out(command: BaseCommand, start: Callable[[bool], SyncRun], *, wait: bool, in_process: bool, quiet: bool, as_json: bool) -> None:
    """What `sync` and `import` do once a run is asked for: start(enqueue) records it; queued on
    the cluster, or, with --wait and no cluster running (or --in-process), carried out here;
    followed with progress; printed as JSON or words; a run that did not complete exits 1.
    A run that must wait for a run slot says so, and behind which run; --quiet prints the
    outcome line alone."""
    with info_unsaid() if quiet else nullcontext():
        _carry_out(command, start, wait=wait, in_process=in_process, quiet=quiet, as_json=as_json)


def _carry_out(command: BaseCommand, start: Callable[[bool], SyncRun], *, wait: bool, in_process: bool, quiet: bool, as_json: bool) -> None:
    wait = wait or in_process
    progress = command.stderr if as_json else command.stdout
    if wait and not in_process and not cluster_is_running():
        if not quiet:
            progress.write("No task cluster is running: carrying the run out in this process.")
        in_process = True
    try:
        run = start(not in_process)
    except RunRefused as exc:
        raise CommandError(str(exc)) from None
    waits = slot_wait(run)
    if not wait:
        if as_json:
            command.stdout.write(json.dumps(run_summary(run)))
        else:
            command.stdout.write(f"Run #{run.pk} queued" + (f"; it waits for {waits}" if waits else "") + "; follow it in the admin or with --wait.")
        return
    if waits and not quiet:
        progress.write(f"Run #{run.pk} waits for {waits}.")
    if in_process:
        run = run_here_and_follow(run.pk, progress._out, quiet=quiet)
    else:
        try:
            run = follow(run.pk, progress._out, quiet=quiet)
        except KeyboardInterrupt:
            raise CommandError(f"stopped following; run #{run.pk} goes on on the cluster", returncode=130) from None
    if as_json:
        command.stdout.write(json.dumps(run_summary(run)))
    elif run.status in SUCCESS:
        command.stdout.write(f"Run #{run.pk} {run.get_status_display()} in {run.duration_s:.1f} s.")
    if run.status not in SUCCESS:
        raise CommandError(f"run #{run.pk} {run.status}" + (f": {run.error}" if run.error else ""), returncode=1)

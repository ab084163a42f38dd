"""Follow a run on a terminal until it ends.

On a terminal: a line for the run and one per step, kept within the terminal's width by rich
(bars, counts, rate, ETA), with log lines printed above them, never into them. Elsewhere (a
file, a pipe, CI): a plain line whenever something changed, at most every PLAIN_EVERY_S. Quiet:
nothing. The ETA comes from monitoring.observability.eta, as the dashboard's does.
"""

import logging
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.progress_bar import ProgressBar
from rich.table import Column
from rich.text import Text

from monitoring.ledger.processes import request_stop_on_signals, restore_signals, stop_request
from monitoring.observability.eta import Estimate, duration_words, estimate, remaining_s

from .models import Status, SyncRun, SyncStep
from .providers import provider_class
from .runs import cancel_run, waiting_for
from .step_registry import STEPS
from .tasks import run_in_process

PLAIN_EVERY_S = 5.0


def _unit(step: SyncStep) -> str:
    """What the step's progress counts: a source that lists every record at once (a file, Graph's
    grants) is counted in records, not in the users asked."""
    kind = STEPS[step.name]
    if kind.listed_unit and (step.run.source or provider_class(step.run.tenant.provider).lists_tokens):
        return kind.listed_unit
    return kind.unit


def step_estimate(step: SyncStep) -> Estimate:
    return estimate(done=step.done, expected=step.expected, elapsed_s=step.duration_s, ended=step.ended, recent_rate=step.recent_rate)


def _last_durations(run: SyncRun, names: list[str]) -> dict[str, float]:
    """How long each of these steps took in the tenant's last run that completed it."""
    durations = {}
    for name in names:
        last = (SyncStep.objects.filter(run__tenant_id=run.tenant_id, name=name, run_id__lt=run.pk,
                                        status__in=[Status.COMPLETED, Status.COMPLETED_WITH_ERRORS])
                .exclude(started_at=None).exclude(finished_at=None).order_by("-run_id").first())
        if last is not None:
            durations[name] = last.duration_s
    return durations


def run_eta_words(run: SyncRun) -> str:
    """The whole run's ETA ("40 s", "28 s then relations"): its running steps' (the slowest of them, from their recent rates),
    then the steps still to come, each as long as it took the tenant's last run ("then relations"
    for one that never ran); "" once the run ended, or while nothing is known."""
    if run.finished_at is not None:
        return ""
    steps = list(run.step_records.all())
    running = [step_estimate(s) for s in steps if s.status == Status.RUNNING]
    to_come = [s.name for s in steps if s.status in (Status.PENDING, Status.QUEUED)]
    now = remaining_s(running) if running else 0.0
    if now is None or not (running or to_come):
        return ""
    past = _last_durations(run, to_come)
    unknown = [name for name in to_come if name not in past]
    if len(unknown) == len(to_come) and not running:
        return ""
    return duration_words(now + sum(past.values())) + (f" then {', '.join(unknown)}" if unknown else "")


def work_words(step: SyncStep, guess: Estimate) -> str:
    """"1,200 of 3,000 users asked", or "1,200 users asked" when the total is not known."""
    unit = _unit(step)
    return f"{guess.done:,} of {guess.expected:,} {unit}" if guess.expected else f"{guess.done:,} {unit}"


def percent_words(step: SyncStep, guess: Estimate) -> str:
    """"40%", or "" while the step is pending or its total is not known."""
    return f"{guess.percent}%" if guess.percent is not None and step.status != Status.PENDING else ""


# A step's end in a word or two: the progress line has little room.
ENDED_WORDS = {
    Status.COMPLETED: "done", Status.COMPLETED_WITH_ERRORS: "with errors", Status.FAILED: "failed",
    Status.CANCELLED: "cancelled", Status.INTERRUPTED: "interrupted", Status.SKIPPED: "skipped",
}


def run_line(run: SyncRun) -> str:
    elapsed = f" ({duration_words(run.duration_s)})" if run.duration_s is not None else ""
    line = f"run #{run.pk} {run.tenant.slug}: {run.get_status_display().lower()}{elapsed}"
    waiting = waiting_for(run) if run.finished_at is None else ""
    eta = run_eta_words(run) if run.status == Status.RUNNING else ""
    return line + (f", ETA {eta}" if eta else "") + (f", waiting for {waiting}" if waiting else "")


def step_words(step: SyncStep) -> tuple[str, str, str]:
    """(how much, how fast, when or how it ended) of one step, for either display."""
    guess = step_estimate(step)
    amount = work_words(step, guess)
    if step.status == Status.PENDING:
        return "", "", "pending"
    speed = f"{guess.rate:,.0f}/s" if guess.rate else ""
    if step.ended:
        when = ENDED_WORDS[step.status] + (f" in {duration_words(step.duration_s)}" if step.duration_s is not None else "")
    else:
        when = f"ETA {duration_words(guess.eta_s)}" if guess.eta_s is not None else "running"
    return amount, speed, when


def plain_line(run: SyncRun) -> str:
    parts = [run_line(run)]
    for step in run.step_records.all():
        percent = percent_words(step, step_estimate(step))
        words = [w for w in step_words(step) if w]
        parts.append(f"{step.name}" + (f" {percent}" if percent else "") + " " + ", ".join(words))
    return " | ".join(parts)


# Bar colours by step status, as in the admin: a cancelled or failed step is not shown as done.
BAR_STYLES = {
    Status.COMPLETED: "green", Status.COMPLETED_WITH_ERRORS: "yellow", Status.FAILED: "red",
    Status.CANCELLED: "bright_black", Status.INTERRUPTED: "magenta", Status.SKIPPED: "bright_black",
}


class _StatusBar(BarColumn):
    def render(self, task):
        style = BAR_STYLES.get(task.fields["status"], "cyan")
        return ProgressBar(total=max(0, task.total) if task.total is not None else None, completed=max(0, task.completed),
                           width=self.bar_width, pulse=not task.started or task.total is None, animation_time=task.get_time(),
                           style="bar.back", complete_style=style, finished_style=style)


class _RunProgress(Progress):
    """rich's Progress with the run's own line above the steps' bars."""

    header = ""

    def get_renderables(self):
        yield Text(self.header, no_wrap=True, overflow="ellipsis")
        yield self.make_tasks_table(self.tasks)


class LiveDisplay:
    """Bars on a terminal: one line per step, cut to the terminal's width, logs above them. On a
    narrow terminal the bar gives way first, then the counts are cut short."""

    def __init__(self, stream: TextIO):
        console = Console(file=stream)
        fit = {"no_wrap": True, "overflow": "ellipsis"}
        bar_width = min(20, console.width - 70)
        columns = [TextColumn("  {task.description}", table_column=Column(width=11, **fit))]
        if bar_width >= 6:
            columns += [_StatusBar(bar_width=bar_width), TextColumn("{task.fields[percent]}", table_column=Column(width=4, justify="right", **fit))]
        columns += [
            TextColumn("{task.fields[amount]}", table_column=Column(ratio=1, **fit)),
            TextColumn("{task.fields[speed]}", table_column=Column(width=8, justify="right", **fit)),
            TextColumn("{task.fields[when]}", table_column=Column(min_width=18, **fit)),
        ]
        self.progress = _RunProgress(*columns, console=console, refresh_per_second=4, redirect_stdout=True, redirect_stderr=True)
        self.tasks: dict[str, int] = {}
        self._moved: list[tuple[logging.StreamHandler, TextIO]] = []

    def __enter__(self):
        self.progress.start()
        self._moved = _point_log_handlers_at(sys.stderr)  # rich's proxy now: lines go above the bars
        return self

    def __exit__(self, *exc):
        for handler, stream in self._moved:
            handler.setStream(stream)
        self.progress.stop()

    def note(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def show(self, run: SyncRun, finished: bool) -> None:
        self.progress.header = run_line(run)
        for step in run.step_records.all():
            guess = step_estimate(step)
            amount, speed, when = step_words(step)
            fields = {"amount": amount, "speed": speed, "when": when, "status": step.status, "percent": percent_words(step, guess)}
            total = 1 if step.status == Status.PENDING else guess.expected or None  # None: unknown, the bar pulses
            if step.name not in self.tasks:
                self.tasks[step.name] = self.progress.add_task(step.name, total=total, completed=guess.done, **fields)
            self.progress.update(self.tasks[step.name], total=total, completed=min(guess.done, total or guess.done), **fields)
        self.progress.refresh()


class PlainDisplay:
    """A line whenever something changed, at most every PLAIN_EVERY_S, and the last one always."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.last_line, self.last_at = "", float("-inf")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")

    def show(self, run: SyncRun, finished: bool) -> None:
        line = plain_line(run)
        if line != self.last_line and (finished or time.monotonic() - self.last_at >= PLAIN_EVERY_S):
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_line, self.last_at = line, time.monotonic()


class QuietDisplay(PlainDisplay):
    def show(self, run: SyncRun, finished: bool) -> None:
        return None


def display_for(stream: TextIO, *, quiet: bool = False):
    if quiet:
        return QuietDisplay(stream)
    return LiveDisplay(stream) if stream.isatty() else PlainDisplay(stream)


def _point_log_handlers_at(stream: TextIO) -> list[tuple[logging.StreamHandler, TextIO]]:
    """Send every log handler that writes to the terminal to `stream`; return what to put back."""
    terminal = {sys.__stdout__, sys.__stderr__}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    moved = []
    for handler in {h for lg in loggers for h in lg.handlers}:
        if type(handler) is logging.StreamHandler and handler.stream in terminal:
            moved.append((handler, handler.setStream(stream)))
    return moved


def follow(run_id: int, stream: TextIO, *, worker: threading.Thread | None = None, interval: float = 0.5, quiet: bool = False) -> SyncRun:
    """Show progress until the run is finalised (and the in-process worker, if any, has stopped).
    With a worker here, a stop request (Ctrl-C: cancel; SIGTERM: interrupt) is passed on to the run."""
    stopping = False
    with display_for(stream, quiet=quiet) as display:
        while True:
            request = stop_request()
            if worker is not None and request.is_set() and not stopping:
                stopping = True
                if request.by_person:
                    display.note("Interrupted: cancelling the run after the batches in progress…")
                    cancel_run(SyncRun.objects.get(pk=run_id))
                else:
                    display.note(f"{request.reason}: interrupting the run after the batches in progress…")
            run = SyncRun.objects.select_related("tenant").prefetch_related("step_records").get(pk=run_id)
            # The worker here finalises its run before it stops: once it has stopped, the run is
            # as final as it will be, even if the worker died before finishing it.
            finished = not worker.is_alive() if worker is not None else run.finished_at is not None
            display.show(run, finished)
            if finished:
                if run.finished_at is None:
                    display.note("The run's worker stopped before finishing it: see the log for why.")
                return run
            if worker is not None:
                worker.join(interval)
            else:
                time.sleep(interval)


@contextmanager
def _stop_on_signals():
    main = threading.current_thread() is threading.main_thread()
    previous = request_stop_on_signals(signal.SIGINT, signal.SIGTERM, by_person=(signal.SIGINT,)) if main else {}
    try:
        yield
    finally:
        restore_signals(previous)
        stop_request().clear()


def run_here_and_follow(run_id: int, stream: TextIO, *, quiet: bool = False) -> SyncRun:
    """Carry the run out in this process while showing progress. Ctrl-C cancels it and SIGTERM
    interrupts it, each after the batches in progress: no exception tears the threads down."""
    with _stop_on_signals():
        worker = threading.Thread(target=run_in_process, args=(run_id,), name=f"run-{run_id}")
        worker.start()
        return follow(run_id, stream, worker=worker, quiet=quiet)

"""Follow a run on a terminal until it ends: one line, rewritten in place on a TTY."""

import threading
import time
from typing import TextIO

from .models import SyncRun
from .runs import cancel_run
from .tasks import run_in_process


def describe(run: SyncRun) -> str:
    parts = []
    for step in run.step_records.all():
        counts = f" {step.received:,} read, {step.created + step.updated:,} written" if step.received else ""
        parts.append(f"{step.name}: {step.get_status_display()}{counts}")
    elapsed = f"{run.duration_s:.1f} s" if run.duration_s is not None else "waiting for a worker"
    return f"run #{run.pk} {run.get_status_display()} ({elapsed}) | " + " | ".join(parts)


def follow(run_id: int, stream: TextIO, *, worker: threading.Thread | None = None, interval: float = 0.5) -> SyncRun:
    """Show progress until the run is finalised (and the in-process worker, if any, has stopped)."""
    tty = stream.isatty()
    last_line, last_print = "", 0.0
    while True:
        run = SyncRun.objects.get(pk=run_id)
        finished = run.finished_at is not None and (worker is None or not worker.is_alive())
        line = describe(run)
        if tty:
            stream.write("\r\033[K" + line)
            stream.flush()
        elif line != last_line and (finished or time.monotonic() - last_print >= 5):
            stream.write(line + "\n")
            last_line, last_print = line, time.monotonic()
        if finished:
            if tty:
                stream.write("\n")
            return run
        if worker is not None:
            worker.join(interval)
        else:
            time.sleep(interval)


def run_here_and_follow(run_id: int, stream: TextIO) -> SyncRun:
    """Carry the run out in this process while showing progress; Ctrl-C cancels it cleanly."""
    worker = threading.Thread(target=run_in_process, args=(run_id,), name=f"run-{run_id}")
    worker.start()
    try:
        return follow(run_id, stream, worker=worker)
    except KeyboardInterrupt:
        stream.write("\nInterrupted: cancelling the run after the batches in progress…\n")
        cancel_run(SyncRun.objects.get(pk=run_id))
        return follow(run_id, stream, worker=worker)

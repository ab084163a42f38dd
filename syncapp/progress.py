"""Follow a run on a terminal until it ends: one line, rewritten in place on a TTY."""

import signal
import threading
import time
from typing import TextIO

from monitoring.process import request_stop_on_signals, restore_signals, stop_request

from .models import SyncRun
from .runs import cancel_run, waiting_for
from .tasks import run_in_process


def describe(run: SyncRun) -> str:
    parts = []
    for step in run.step_records.all():
        counts = f" {step.received:,} read, {step.created + step.updated:,} written" if step.received else ""
        parts.append(f"{step.name}: {step.get_status_display()}{counts}")
    elapsed = f"{run.duration_s:.1f} s" if run.duration_s is not None else "not started"
    line = f"run #{run.pk} {run.get_status_display()} ({elapsed}) | " + " | ".join(parts)
    waiting = waiting_for(run) if run.finished_at is None else ""
    return line + (f" | waiting for {waiting}" if waiting else "")


def follow(run_id: int, stream: TextIO, *, worker: threading.Thread | None = None, interval: float = 0.5) -> SyncRun:
    """Show progress until the run is finalised (and the in-process worker, if any, has stopped).
    With a worker here, a stop request (Ctrl-C: cancel; SIGTERM: interrupt) is passed on to the run."""
    tty = stream.isatty()
    last_line, last_print = "", 0.0
    stopping = False
    while True:
        request = stop_request()
        if worker is not None and request.is_set() and not stopping:
            stopping = True
            if request.by_person:
                stream.write("\nInterrupted: cancelling the run after the batches in progress…\n")
                cancel_run(SyncRun.objects.get(pk=run_id))
            else:
                stream.write(f"\n{request.reason}: interrupting the run after the batches in progress…\n")
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
    """Carry the run out in this process while showing progress. Ctrl-C cancels it and SIGTERM
    interrupts it, each after the batches in progress: no exception tears the threads down."""
    main = threading.current_thread() is threading.main_thread()
    previous = request_stop_on_signals(signal.SIGINT, signal.SIGTERM, by_person=(signal.SIGINT,)) if main else {}
    worker = threading.Thread(target=run_in_process, args=(run_id,), name=f"run-{run_id}")
    worker.start()
    try:
        return follow(run_id, stream, worker=worker)
    finally:
        restore_signals(previous)
        stop_request().clear()

"""This process: who it is (so others can tell whether it still lives), and whether it was asked to stop.

A process is known by host, pid and start time: a pid reused by a later process is another process.
Work checks `stop_request()` between batches; a signal handler or an orphaned worker sets it.
"""

import logging
import os
import signal
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

log = logging.getLogger("monitoring.process")

# Start times read twice for one process agree to the clock tick; a reused pid starts later.
SAME_START_S = 1.0


@dataclass(frozen=True)
class ProcessId:
    host: str
    pid: int
    started: float  # Unix seconds

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


_this: dict[int, ProcessId] = {}


def this_process() -> ProcessId:
    pid = os.getpid()  # a forked child is another process
    if pid not in _this:
        _this[pid] = ProcessId(socket.gethostname(), pid, psutil.Process(pid).create_time())
    return _this[pid]


def gone(process: ProcessId) -> bool:
    """True when that process is known to have ended: it ran on this host and its pid is free,
    a zombie, or taken by a later process. A process on another host is never known gone."""
    if process.host != socket.gethostname():
        return False
    try:
        found = psutil.Process(process.pid)
        return abs(found.create_time() - process.started) > SAME_START_S or found.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's process: it exists
        return False


class StopRequest:
    """Asked to stop: work ends after its current batch. `by_person` is a Ctrl-C at a terminal (the
    run is cancelled); anything else (SIGTERM, a lost supervisor) interrupts it, to resume later.
    With `exit_when_idle` (a cluster worker), the process then exits as the signal would have made it."""

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""
        self.by_person = False
        self.exit_when_idle = False
        self.busy = 0  # pieces of work under way (see working())

    def set(self, reason: str, *, by_person: bool = False) -> None:
        if not self._event.is_set():
            self.reason, self.by_person = reason, by_person
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def clear(self) -> None:
        self.reason, self.by_person = "", False
        self._event.clear()


_stop: dict[int, StopRequest] = {}


def stop_request() -> StopRequest:
    """This process's stop request (a forked child starts with none)."""
    return _stop.setdefault(os.getpid(), StopRequest())


def _exit() -> None:
    """Die as SIGTERM's default makes a process die (its supervisor sees the usual exit)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def working():
    """Work under way in this process (a step): a worker asked to stop exits once none is left."""
    request = stop_request()
    with request._lock:
        request.busy += 1
    try:
        yield request
    finally:
        with request._lock:
            request.busy -= 1
            idle = request.busy == 0
        if idle and request.is_set() and request.exit_when_idle:
            log.warning("process %s exits: %s", os.getpid(), request.reason)
            _exit()


def request_stop_on_signals(*signums: int, by_person: tuple[int, ...] = (), exit_when_idle: bool = False) -> dict:
    """From the main thread: turn these signals into a stop request instead of an exception or
    death. Returns the handlers it replaced, for `restore_signals`."""
    request = stop_request()
    request.exit_when_idle = exit_when_idle

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if exit_when_idle and request.busy == 0:
            _exit()  # nothing to finish
        if request.is_set():
            log.warning("%s again: still finishing the batches in progress", name)
            return
        log.warning("%s received: stopping after the batches in progress", name)
        request.set(f"stopped by {name}", by_person=signum in by_person)

    return {signum: signal.signal(signum, handler) for signum in signums}


def restore_signals(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def stop_if_orphaned(parent_pid: int) -> None:
    """A forked worker whose supervisor died (a SIGKILLed django-q2 sentinel) is adopted by another
    process and would go on taking tasks unsupervised: it stops, after its current batch."""
    request = stop_request()
    if os.getppid() == parent_pid or request.is_set():
        return
    log.error("worker %s lost its cluster (parent %s is gone): stopping after the work in progress", os.getpid(), parent_pid)
    request.exit_when_idle = True
    request.set(f"its cluster's supervisor (process {parent_pid}) died")
    if request.busy == 0:
        _exit()

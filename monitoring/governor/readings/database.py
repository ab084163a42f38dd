"""The CPU of the database backends that serve this process, when they run on this machine.

A PostgreSQL backend executes the statements a step sends: in a set-based step (relations)
nearly all of the sync's CPU is there, not in Python, and counted as a neighbour's it was out
of the governor's reach (the machine ran at 94-100% under an 80% ceiling while the sync's own
process used 6%). So when the server runs on this machine and its processes are visible here
(/proc/PID/stat of a "postgres" process), each connection's backend (psycopg's
info.backend_pid: no query) counts as this process's own CPU: readings see the neighbours
without it, and the duty cycle holds the sync and its backends together. SQLite runs inside the
process, counted already; a server elsewhere (another host, a container of its own) is said,
not counted.
"""

import os
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class Where(StrEnum):
    UNKNOWN = "unknown"  # no connection yet
    IN_PROCESS = "in process"  # SQLite: its CPU is the process's own already
    HERE = "here"  # PostgreSQL on this machine: its backends are counted
    ELSEWHERE = "elsewhere"  # its CPU is not seen from here


@dataclass
class _Backend:
    started: int  # the process's start time (clock ticks after boot): a pid used again is another process
    baseline: float  # CPU seconds it had used when it was first seen serving us
    last: float


def _stat(proc: Path, pid: int) -> tuple[str, float, int] | None:
    """(command, CPU seconds, start time) of a process, or None when it is gone."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    command = text[text.find("(") + 1 : text.rfind(")")]
    fields = text[text.rfind(")") + 2 :].split()  # fields[0] is the 3rd field, state
    ticks = os.sysconf("SC_CLK_TCK")
    return command, (int(fields[11]) + int(fields[12])) / ticks, int(fields[19])  # utime, stime, starttime


class DatabaseCpu:
    """The backends of this process's connections and the CPU they used while serving it."""

    def __init__(self, proc: str | Path = "/proc"):
        self.proc = Path(proc)
        self.where = Where.UNKNOWN
        self._lock = threading.Lock()
        self._backends: dict[int, _Backend] = {}
        self._banked = 0.0  # what backends that have gone used while serving us

    def connected(self, vendor: str, backend_pid: int | None = None, host: str | None = None) -> None:
        """A new connection: its vendor and, for PostgreSQL, its backend's pid and host."""
        with self._lock:
            if vendor != "postgresql":
                self.where = Where.IN_PROCESS
                return
            local = host is not None and (host.startswith("/") or host in LOOPBACK)  # a socket directory, or loopback
            stat = _stat(self.proc, backend_pid) if local and backend_pid else None
            if stat is None or stat[0] != "postgres":
                self.where = Where.ELSEWHERE
                return
            self.where = Where.HERE
            known = self._backends.get(backend_pid)
            if known is None or known.started != stat[2]:  # a pooled connection handed out again keeps its count
                self._backends[backend_pid] = _Backend(stat[2], stat[1], stat[1])

    def seconds(self) -> float:
        """CPU seconds the backends used while serving this process (a counter)."""
        with self._lock:
            for pid, backend in list(self._backends.items()):
                stat = _stat(self.proc, pid)
                if stat is None or stat[2] != backend.started:  # the connection closed: its backend is gone
                    self._banked += backend.last - backend.baseline
                    del self._backends[pid]
                else:
                    backend.last = stat[1]
            return self._banked + sum(b.last - b.baseline for b in self._backends.values())

    def usable_cores(self) -> float:
        """Cores the sync can use: the interpreter's one, and one for its backends when they count."""
        return 2.0 if self.where is Where.HERE else 1.0

    def note(self) -> str:
        """What a CPU reason should add about the database."""
        return "; the database's CPU is elsewhere, not counted" if self.where is Where.ELSEWHERE else ""

    def forget(self) -> None:
        """In a forked child: the parent's connections are not the child's."""
        self._lock = threading.Lock()
        self._backends, self._banked, self.where = {}, 0.0, Where.UNKNOWN


database_cpu = DatabaseCpu()


def own_cpu_seconds() -> float:
    """This process's CPU time with its database backends': what the ceiling holds as the sync's."""
    return time.process_time() + database_cpu.seconds()


def connection_created(sender, connection, **kwargs) -> None:
    """Django's connection_created signal: note the connection's backend."""
    if connection.vendor == "postgresql":
        info = connection.connection.info
        database_cpu.connected("postgresql", info.backend_pid, info.host)
    else:
        database_cpu.connected(connection.vendor)

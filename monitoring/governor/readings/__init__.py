"""Resource readings: the process, its container (cgroup v2, then v1) or the host, and PSI.

SystemReader.read() is called by the sampler thread; everyone else reads the sampler's cached
Reading, so the hot path pays nothing.
"""

import time
from pathlib import Path

from .base import ContainerSource, Reading
from .cgroup import find_container
from .cpu import affinity, cpu_scope, online_cpus
from .database import own_cpu_seconds
from .host import HostSource
from .psi import system_pressure

__all__ = ["ContainerSource", "Reading", "SystemReader"]


class SystemReader:
    def __init__(
        self, cgroup_root: str | Path = "/sys/fs/cgroup", proc: str | Path = "/proc", *,
        clock=time.monotonic, process_cpu=own_cpu_seconds, allowed=affinity,
    ):
        self.proc = Path(proc)
        self.container = find_container(Path(cgroup_root), self.proc)
        self.host = HostSource()
        self.host_cpus = online_cpus(self.proc)
        self.allowed = allowed  # the affinity mask (injected by tests)
        # clock_gettime(CLOCK_PROCESS_CPUTIME_ID): exact for every thread. psutil's tick-based
        # /proc figures arrive in bursts for busy threads and read 0% then 70% in short windows.
        # With the database backends serving the process (readings.database): their statements
        # are the sync's work.
        self.process_cpu = process_cpu
        self.clock = clock
        self._scope = None
        self._last = self._counters()

    def _counters(self) -> tuple:
        """(scope name, time, this process's CPU seconds, the scope's CPU seconds, quota throttles)."""
        scope = self._scope = cpu_scope(self.container, self.proc, self.host_cpus, self.allowed)
        c = self.container
        return (scope.name, self.clock(), self.process_cpu(), scope.busy_seconds(), c.cpu_throttled() if c else None)

    def _pressure(self, resource: str) -> float | None:
        """The group's own PSI where it keeps one, else the system's."""
        own = self.container.pressure(resource) if self.container else None
        return own if own is not None else system_pressure(resource, self.proc)

    def read(self) -> Reading:
        last_scope, last_at, last_process_cpu, last_busy, last_throttled = self._last
        scope_name, now, process_cpu, busy, throttled = counters = self._counters()
        self._last = counters
        wall = max(now - last_at, 1e-6)
        capacity = self._scope.capacity
        if scope_name != last_scope or busy is None or last_busy is None:
            cpu = own = 0.0  # the scope changed (taskset, a new quota): differences start again
        else:
            cpu = 100.0 * (busy - last_busy) / wall / capacity
            own = 100.0 * (process_cpu - last_process_cpu) / wall / capacity
        c = self.container
        host_used, host_total = self.host.memory()
        limit = c.memory_limit() if c else None
        used = c.memory_used() if c else None
        if limit is None or limit >= host_total:
            limit = host_total
            used = host_used if used is None else used
        return Reading(
            at=now,
            source=c.name if c else "host",
            rss_bytes=self.host.rss(),
            process_cpu_percent=min(max(own, 0.0), 100.0),
            cpu_percent=min(max(cpu, own, 0.0), 100.0),  # ticks and the process clock differ a little
            cpu_capacity=capacity,
            memory_used_bytes=used if used is not None else host_used,
            memory_limit_bytes=limit,
            cpu_throttled=(throttled - last_throttled) if throttled is not None and last_throttled is not None else None,
            cpu_pressure=self._pressure("cpu"),
            memory_pressure=self._pressure("memory"),
            cpu_scope=scope_name,
            window_s=wall,
        )

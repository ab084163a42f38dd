"""Resource readings: the process, its container (cgroup v2, then v1) or the host, and PSI.

SystemReader.read() is called by the sampler thread; everyone else reads the sampler's cached
Reading, so the hot path pays nothing.
"""

import os
import time
from pathlib import Path

from .base import ContainerSource, Reading
from .cgroup import find_container
from .host import HostSource
from .psi import system_pressure

__all__ = ["ContainerSource", "Reading", "SystemReader"]


class SystemReader:
    def __init__(self, cgroup_root: str | Path = "/sys/fs/cgroup", proc: str | Path = "/proc", clock=time.monotonic):
        self.proc = Path(proc)
        self.container = find_container(Path(cgroup_root), self.proc)
        self.host = HostSource()
        self.clock = clock
        self._last = self._counters()

    def _counters(self) -> tuple[float, float, float | None, int | None]:
        c = self.container
        return (
            self.clock(),
            self.host.process_cpu_seconds(),
            c.cpu_usage_seconds() if c else None,
            c.cpu_throttled() if c else None,
        )

    def cpu_capacity(self) -> float:
        """Cores this process may use: the cgroup quota, its affinity mask, the core count."""
        quota = self.container.cpu_quota() if self.container else None
        cores = float(self.host.cores())
        return min(quota, cores) if quota else cores

    def group_capacity(self) -> float:
        """Cores the whole container (or host) may use: what its CPU use is a share of."""
        quota = self.container.cpu_quota() if self.container else None
        return quota or float(os.cpu_count() or 1)

    def _pressure(self, resource: str) -> float | None:
        """The group's own PSI where it keeps one, else the system's."""
        own = self.container.pressure(resource) if self.container else None
        return own if own is not None else system_pressure(resource, self.proc)

    def read(self) -> Reading:
        now, process_cpu, group_cpu, throttled = counters = self._counters()
        last_at, last_process_cpu, last_group_cpu, last_throttled = self._last
        self._last = counters
        wall = max(now - last_at, 1e-6)
        capacity = self.cpu_capacity()
        c = self.container
        host_cpu = self.host.cpu_percent()
        if group_cpu is not None and last_group_cpu is not None:
            cpu = 100.0 * (group_cpu - last_group_cpu) / wall / self.group_capacity()
        else:
            cpu = host_cpu  # psutil: percent of all the host's cores
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
            process_cpu_percent=100.0 * (process_cpu - last_process_cpu) / wall / capacity,
            cpu_percent=min(cpu, 100.0),
            cpu_capacity=capacity,
            memory_used_bytes=used if used is not None else host_used,
            memory_limit_bytes=limit,
            cpu_throttled=(throttled - last_throttled) if throttled is not None and last_throttled is not None else None,
            cpu_pressure=self._pressure("cpu"),
            memory_pressure=self._pressure("memory"),
        )

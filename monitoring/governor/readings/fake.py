"""Readings given in advance, for tests and for the policy's tables."""

import math
import time
from collections.abc import Iterable

import psutil

from .base import Reading


def reading(
    cpu: float = 10.0, memory: float = 10.0, *, rss_mb: float = 100.0, process_cpu: float | None = None, at: float = 0.0,
    cpu_capacity: float = 1.0, **extra,
) -> Reading:
    """A reading at the given CPU and memory percentages (of a 2 GB, 1-core budget by default).
    Unless told otherwise, all the CPU is this process's own: no neighbours."""
    limit = 2 * 1024**3
    return Reading(
        at=at,
        source="fake",
        rss_bytes=int(rss_mb * 1024**2),
        process_cpu_percent=cpu if process_cpu is None else process_cpu,
        cpu_percent=cpu,
        cpu_capacity=cpu_capacity,
        memory_used_bytes=math.ceil(limit * memory / 100),
        memory_limit_bytes=limit,
        **{"cpu_scope": "fake, 1 CPU", **extra},
    )


class FixedReader:
    """Returns the readings it was given, one per call, then the last one forever."""

    def __init__(self, readings: Iterable[Reading] | Reading):
        self.readings = [readings] if isinstance(readings, Reading) else list(readings)
        self.calls = 0

    def read(self) -> Reading:
        item = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        return item


class CalmReader:
    """A quiet two-core machine, always (the test settings' reader: no test may depend on how busy
    the machine running it is, and none is held by a ceiling it did not ask for). The process's
    own RSS is real; a reading covers the time since the last."""

    def __init__(self, cgroup_root=None, proc=None, cpu: float = 10.0, memory: float = 10.0):
        self.cpu, self.memory = cpu, memory
        self.process = psutil.Process()
        self._last = time.monotonic()

    def read(self) -> Reading:
        now = time.monotonic()
        window, self._last = max(now - self._last, 1e-3), now
        rss_mb = self.process.memory_info().rss / 1024**2
        return reading(self.cpu, self.memory, rss_mb=rss_mb, at=now, window_s=window, cpu_capacity=2.0, cpu_scope="calm (tests), 2 CPUs")


class OwnCpuReader(CalmReader):
    """A quiet two-core machine on which this process's own CPU use is real: a load under the
    governor is held against the same capacity on any machine, and a busy machine only slows it."""

    def __init__(self, cgroup_root=None, proc=None):
        super().__init__(cgroup_root, proc)
        self._cpu_seconds = self._own_cpu_seconds()

    def _own_cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def read(self) -> Reading:
        now = time.monotonic()
        window, self._last = max(now - self._last, 1e-3), now
        cpu_seconds = self._own_cpu_seconds()
        own = 100.0 * (cpu_seconds - self._cpu_seconds) / window / 2.0
        self._cpu_seconds = cpu_seconds
        rss_mb = self.process.memory_info().rss / 1024**2
        return reading(own, self.memory, rss_mb=rss_mb, at=now, window_s=window, cpu_capacity=2.0, cpu_scope="own CPU (tests), 2 CPUs")

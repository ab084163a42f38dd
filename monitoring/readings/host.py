"""The process and the host, through psutil. Used alone when no cgroup limits us."""

import os

import psutil


class HostSource:
    def __init__(self):
        self.process = psutil.Process()
        psutil.cpu_percent(None)  # the first call only starts the clock

    def rss(self) -> int:
        return self.process.memory_info().rss

    def process_cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def cpu_percent(self) -> float:
        """Host CPU busy since the last call, percent of all cores."""
        return psutil.cpu_percent(None)

    def memory(self) -> tuple[int, int]:
        """(used, total) bytes of the host: what psutil.virtual_memory sees, the host, not a container."""
        memory = psutil.virtual_memory()
        return memory.total - memory.available, memory.total

    @staticmethod
    def cores() -> int:
        """CPUs this process may run on: its affinity mask (taskset narrows it), else the core count."""
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1

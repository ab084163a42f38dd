"""The process and the host, through psutil. Used alone when no cgroup limits us."""

import os
import time

import psutil


class HostSource:
    def __init__(self):
        self.process = psutil.Process()
        psutil.cpu_percent(None)  # the first call only starts the clock

    def rss(self) -> int:
        return self.process.memory_info().rss

    @staticmethod
    def process_cpu_seconds() -> float:
        # clock_gettime(CLOCK_PROCESS_CPUTIME_ID): exact for every thread. psutil's tick-based
        # /proc figures arrive in bursts for busy threads and read 0% then 70% in short windows.
        return time.process_time()

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

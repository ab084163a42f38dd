"""The process and the host's memory, through psutil (the host's when no cgroup limits us)."""

import psutil


class HostSource:
    def __init__(self):
        self.process = psutil.Process()

    def rss(self) -> int:
        return self.process.memory_info().rss

    def memory(self) -> tuple[int, int]:
        """(used, total) bytes of the host: what psutil.virtual_memory sees, the host, not a container."""
        memory = psutil.virtual_memory()
        return memory.total - memory.available, memory.total

"""What a resource reading holds, and the contract of the sources it is made from."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Reading:
    """One sample of the process, and of the container (or host) it runs in.

    Memory is a share of the effective limit (the smaller of the container's and the host's).
    CPU figures share one scope (readings.cpu): cpu_percent is everything's use of the scope's
    capacity, process_cpu_percent this process's use of the same capacity, so the difference is
    what the neighbours use.
    """

    at: float  # monotonic seconds
    source: str  # "cgroup v2", "cgroup v1" or "host": where the memory figures came from
    rss_bytes: int
    process_cpu_percent: float
    cpu_percent: float
    cpu_capacity: float  # cores of the scope
    memory_used_bytes: int
    memory_limit_bytes: int
    cpu_scope: str = ""  # e.g. "host, 2 CPUs", "CPUs 1", "cgroup v2 quota, 1.5 CPUs"
    window_s: float = 0.5  # the time the CPU figures cover
    cpu_throttled: int | None = None  # times the cgroup's quota throttled it since the last reading
    cpu_pressure: float | None = None  # PSI "some" avg10, percent of time stalled
    memory_pressure: float | None = None

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_bytes / self.memory_limit_bytes if self.memory_limit_bytes else 0.0

    @property
    def neighbours_cpu_percent(self) -> float:
        """What the rest of the scope used: everything less this process."""
        return max(self.cpu_percent - self.process_cpu_percent, 0.0)


class ContainerSource:
    """A cgroup's limits and usage. Each method returns None when the figure is not available."""

    name = ""

    def memory_limit(self) -> int | None:
        """Bytes the group may use (None: unlimited)."""
        raise NotImplementedError

    def memory_used(self) -> int | None:
        """Working set in bytes: usage less the inactive page cache, as cAdvisor counts it."""
        raise NotImplementedError

    def cpu_quota(self) -> float | None:
        """Cores the group may use (None: unlimited)."""
        raise NotImplementedError

    def cpu_usage_seconds(self) -> float | None:
        """CPU time the group used since it was made."""
        raise NotImplementedError

    def cpu_throttled(self) -> int | None:
        """How many periods the quota throttled the group, in total."""
        raise NotImplementedError

    def pressure(self, resource: str) -> float | None:
        """PSI 'some avg10' of the group for 'cpu' or 'memory', if it keeps one."""
        return None

"""The CPU scope of readings: capacity and usage always over the same set.

The cgroup's quota with the cgroup's usage; else the CPUs of the affinity mask with the usage
of exactly those CPUs (/proc/stat's per-CPU lines); else the host. Mixing scopes (an affinity
mask of one CPU against the usage of both) read 95-100% on a machine that was half idle for us.
"""

import os
from collections.abc import Callable
from pathlib import Path

import psutil

from .base import ContainerSource

IDLE_FIELDS = (3, 4)  # idle and iowait: the CPU had nothing to run
COUNTED = 8  # user nice system idle iowait irq softirq steal (guest time is already in user)


def busy_seconds(proc: Path, cpus: frozenset[int] | None = None) -> float:
    """Seconds the given CPUs (all of them when None) spent running something since boot."""
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:  # no /proc (not Linux): psutil knows the same counters
        times = psutil.cpu_times(percpu=True)
        chosen = [t for n, t in enumerate(times) if cpus is None or n in cpus]
        return sum(sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in chosen)
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue  # the aggregate line may lag the per-CPU ones: always add up the CPUs themselves
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()[:COUNTED]]
        ticks += sum(fields) - sum(fields[i] for i in IDLE_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def online_cpus(proc: Path) -> frozenset[int]:
    """The CPUs /proc/stat lists (the host's, as far as this process can see)."""
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:
        return frozenset(range(psutil.cpu_count() or 1))
    return frozenset(int(line.split()[0][3:]) for line in lines if line.startswith("cpu") and line[3].isdigit())


class CpuScope:
    """A set of CPUs that readings share: capacity in cores and the CPU time used on them."""

    name = ""
    capacity = 1.0

    def busy_seconds(self) -> float | None:
        """CPU seconds used in the scope so far (a counter: readings take differences)."""
        raise NotImplementedError


class QuotaScope(CpuScope):
    """A cgroup with a CPU quota: its quota against its own usage."""

    def __init__(self, container: ContainerSource, quota: float):
        self.container, self.capacity = container, quota
        self.name = f"{container.name} quota, {quota:g} CPUs"

    def busy_seconds(self):
        return self.container.cpu_usage_seconds()


class CpuSetScope(CpuScope):
    """Some CPUs (an affinity mask) or all of them (the host), from /proc/stat."""

    def __init__(self, proc: Path, cpus: frozenset[int] | None, host_cpus: int):
        self.proc, self.cpus = proc, cpus
        self.capacity = float(len(cpus) if cpus is not None else host_cpus)
        self.name = f"host, {host_cpus} CPUs" if cpus is None else "CPUs " + ",".join(map(str, sorted(cpus)))

    def busy_seconds(self):
        return busy_seconds(self.proc, self.cpus)


def affinity() -> frozenset[int]:
    """The CPUs this process may run on (taskset narrows them)."""
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return frozenset(range(os.cpu_count() or 1))


def cpu_scope(container: ContainerSource | None, proc: Path, host: frozenset[int], allowed: Callable[[], frozenset[int]] = affinity) -> CpuScope:
    """The scope of this moment's readings: quota, else affinity mask, else the host's CPUs."""
    quota = container.cpu_quota() if container else None
    if quota and container.cpu_usage_seconds() is not None:
        return QuotaScope(container, quota)
    mine = allowed() & host or host
    return CpuSetScope(proc, None if mine == host else mine, len(host))

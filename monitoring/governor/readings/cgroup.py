"""Container limits and usage from cgroup v2, then v1 (still common, and what our own build
machines have for memory). The root is a setting so tests can point it at a fake tree."""

from pathlib import Path

from .base import ContainerSource
from .psi import some_avg10

UNLIMITED_V1 = 1 << 60  # v1 reports "no limit" as a huge page-aligned number


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _stat(path: Path) -> dict[str, int]:
    text = _read(path) or ""
    pairs = (line.split() for line in text.splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def _working_set(usage: Path, stat: Path, inactive_key: str) -> int | None:
    """Usage less the inactive page cache (reclaimable), as cAdvisor and the kubelet count it."""
    used = _int(usage)
    if used is None:
        return None
    return max(used - _stat(stat).get(inactive_key, 0), 0)


def own_groups(proc: Path = Path("/proc")) -> dict[str, str]:
    """Controller → this process's group path, from /proc/self/cgroup ('' names the v2 group)."""
    groups = {}
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            groups[controller] = path
    return groups


class CgroupV2(ContainerSource):
    name = "cgroup v2"

    def __init__(self, group: Path):
        self.group = group

    @classmethod
    def find(cls, root: Path, proc: Path) -> "CgroupV2 | None":
        """The process's v2 group if it carries the memory controller (else v1 is likely in charge)."""
        path = own_groups(proc).get("", "/").lstrip("/")
        for base in (root, root / "unified"):
            # Inside a cgroup namespace the group is mounted at the root itself.
            for group in (base / path, base):
                if (group / "memory.current").exists():
                    return cls(group)
        return None

    def memory_limit(self):
        text = _read(self.group / "memory.max")
        return None if text in (None, "max") else int(text)

    def memory_used(self):
        return _working_set(self.group / "memory.current", self.group / "memory.stat", "inactive_file")

    def cpu_quota(self):
        quota, _, period = (_read(self.group / "cpu.max") or "max").partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)

    def cpu_usage_seconds(self):
        usage = _stat(self.group / "cpu.stat").get("usage_usec")
        return usage / 1e6 if usage is not None else None

    def cpu_throttled(self):
        return _stat(self.group / "cpu.stat").get("nr_throttled")

    def pressure(self, resource):
        return some_avg10(self.group / f"{resource}.pressure")


class CgroupV1(ContainerSource):
    name = "cgroup v1"

    def __init__(self, memory: Path | None, cpu: Path | None, cpuacct: Path | None):
        self.memory, self.cpu, self.cpuacct = memory, cpu, cpuacct

    @classmethod
    def find(cls, root: Path, proc: Path) -> "CgroupV1 | None":
        groups = own_groups(proc)

        def group(controller: str) -> Path | None:
            for mount in (controller, "cpu,cpuacct"):
                for path in (root / mount / groups.get(controller, "/").lstrip("/"), root / mount):
                    if path.is_dir():
                        return path
            return None

        memory = group("memory")
        if memory is None or not (memory / "memory.usage_in_bytes").exists():
            return None
        return cls(memory, group("cpu"), group("cpuacct"))

    def memory_limit(self):
        limit = _int(self.memory / "memory.limit_in_bytes")
        return None if limit is None or limit >= UNLIMITED_V1 else limit

    def memory_used(self):
        return _working_set(self.memory / "memory.usage_in_bytes", self.memory / "memory.stat", "total_inactive_file")

    def cpu_quota(self):
        if self.cpu is None:
            return None
        quota, period = _int(self.cpu / "cpu.cfs_quota_us"), _int(self.cpu / "cpu.cfs_period_us")
        if not quota or quota < 0 or not period:
            return None
        return quota / period

    def cpu_usage_seconds(self):
        usage = _int(self.cpuacct / "cpuacct.usage") if self.cpuacct else None
        return usage / 1e9 if usage is not None else None

    def cpu_throttled(self):
        return _stat(self.cpu / "cpu.stat").get("nr_throttled") if self.cpu else None


def find_container(root: Path, proc: Path = Path("/proc")) -> ContainerSource | None:
    """cgroup v2 if it holds our memory, else v1, else None (figures come from the host)."""
    return CgroupV2.find(root, proc) or CgroupV1.find(root, proc)

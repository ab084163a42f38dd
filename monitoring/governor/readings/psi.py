"""Pressure stall information: /proc/pressure/{cpu,memory} or a cgroup v2 group's own files."""

from pathlib import Path


def some_avg10(path: Path) -> float | None:
    """The 'some avg10' figure of a PSI file, or None when the kernel does not keep one."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("some "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                return float(fields["avg10"])
    except (OSError, ValueError, KeyError):
        return None
    return None


def system_pressure(resource: str, proc: Path = Path("/proc")) -> float | None:
    return some_avg10(proc / "pressure" / resource)

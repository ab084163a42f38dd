"""The memory manager: pressure levels, alerts and leak checks.

Each reading of the process's sampler goes through check() (it listens to reading_taken): on
a change of level (ok, warning 70%, critical 85% by default) it sends `memory_pressure` (the
governor itself shrinks batches and collects under pressure). An alert is a condition
that lasts: CPU (averaged over a few seconds) more than CPU_MARGIN points over its ceiling, or
memory over its ceiling, for ALERT_AFTER_S starts one (`resource_alert`, one warning line); it ends, with a summary line, once it has been
gone as long. Readings that hover around a ceiling do not make a line each. Leak checks compare
tracemalloc snapshots between runs of the periodic task in a worker and send `leak_detected`
for allocation sites that grew every time.
"""

import ctypes
import ctypes.util
import gc
import logging
import tracemalloc

from django.conf import settings

from .logs import Repeats
from .policy import Ewma
from .signals import leak_detected, memory_pressure, resource_alert

log = logging.getLogger("monitoring.memory")


def malloc_trim() -> bool:
    """Give free heap pages back to the OS (glibc only; gc.collect alone returns nothing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def pressure_level(percent: float) -> str:
    """ok | warning | critical for a percentage (MEMORY_WARNING_THRESHOLD, MEMORY_CRITICAL_THRESHOLD)."""
    if percent >= getattr(settings, "BALLAST_MEMORY_CRITICAL_PERCENT", 85.0):
        return "critical"
    if percent >= getattr(settings, "BALLAST_MEMORY_WARNING_PERCENT", 70.0):
        return "warning"
    return "ok"


def ceilings() -> tuple[float, float]:
    """The site's CPU and memory ceilings, percent: the run route's policy (profile and environment)."""
    from .profiles import route_policy

    policy = route_policy("run")
    return policy.max_cpu_percent, policy.max_memory_percent


class Lasting:
    """A condition counted as on once it has held for `after_s`, and as off once gone as long."""

    def __init__(self, after_s: float):
        self.after_s = after_s
        self.on = False
        self.started_at: float | None = None
        self.peak = 0.0
        self._flip_since: float | None = None  # since when the condition disagrees with `on`

    def update(self, now: float, active: bool, value: float) -> str | None:
        """'started', 'ended' or None."""
        if active:
            self.peak = max(self.peak, value) if self.on or self._flip_since is not None else value
        if active == self.on:
            self._flip_since = None
            return None
        if self._flip_since is None:
            self._flip_since = now
        if now - self._flip_since < self.after_s:
            return None
        self.on, self._flip_since = active, None
        if active:
            self.started_at = now
            return "started"
        return "ended"


ALERT_AFTER_S = 10.0
CPU_AVERAGE_S = 5.0
CPU_MARGIN = 5.0  # the governor keeps the machine at its CPU ceiling: an alert is for more than that


class MemoryManager:
    def __init__(self):
        self.level = "ok"
        self.alerts = {"CPU": Lasting(ALERT_AFTER_S), "memory": Lasting(ALERT_AFTER_S)}
        self.cpu = Ewma(CPU_AVERAGE_S)
        self.repeats = Repeats(getattr(settings, "BALLAST_LOG_REPEAT_S", 10.0))

    def on_reading(self, sender, reading, **kwargs) -> None:
        """The process's sampler took a reading (signals.reading_taken)."""
        self.check(reading)

    def check(self, reading) -> str:
        level = pressure_level(reading.memory_percent)
        if level != self.level:
            self._log(
                "level", logging.WARNING if level != "ok" else logging.INFO, reading.at,
                "memory pressure %s -> %s: %.0f%%", self.level, level, reading.memory_percent,
            )
            self.level = level
            memory_pressure.send(MemoryManager, level=level, reading=reading)
        self._alert(reading)
        return level

    def _alert(self, reading) -> None:
        cpu_ceiling, memory_ceiling = ceilings()
        cpu = self.cpu.add(reading.cpu_percent, reading.window_s)
        for name, value, ceiling, margin in (("CPU", cpu, cpu_ceiling, CPU_MARGIN), ("memory", reading.memory_percent, memory_ceiling, 0.0)):
            alert = self.alerts[name]
            change = alert.update(reading.at, value > ceiling + margin, value)
            if change == "started":
                text = f"{name} {value:.0f}% over its {ceiling:.0f}% ceiling for {ALERT_AFTER_S:.0f} s"
                resource_alert.send(MemoryManager, alerts=[text], reading=reading)
                # What it means and what to do, on the line itself: the governor slows syncs down by itself.
                self._log(name, logging.WARNING, reading.at, "resource alert: %s (syncs slow down until it falls; "
                          "if it lasts, the machine is busier than the ceiling allows: see Troubleshooting in the README)", text)
            elif change == "ended":
                self._log(
                    name, logging.INFO, reading.at, "resource alert over: %s back under its %.0f%% ceiling after %.0f s (peak %.0f%%)",
                    name, ceiling, reading.at - alert.started_at, alert.peak,
                )

    def _log(self, condition: str, level: int, now: float, message: str, *args) -> None:
        out, held = self.repeats.allow(condition, now)
        if out:
            log.log(level, message + (f" (and {held} more like it)" if held else ""), *args)


memory_manager = MemoryManager()


class LeakWatch:
    """Snapshots kept between checks in one process; sites that grew at every check are reported."""

    def __init__(self, keep: int = 3):
        self.keep = keep
        self.snapshots: list = []

    def check(self) -> list[dict]:
        self.snapshots = (self.snapshots + [take_snapshot()])[-self.keep:]
        sites = growing_sites(self.snapshots) if len(self.snapshots) == self.keep else []
        for site in sites:
            log.warning("possible leak: %s grew %d bytes over %d checks", site["site"], site["grew_bytes"], site["rounds"])
            leak_detected.send(LeakWatch, site=site)
        return sites


leak_watch = LeakWatch()


def take_snapshot():
    """A tracemalloc snapshot of this process (tracing starts on first use), tracemalloc itself left out."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(10)
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])


def growing_sites(snapshots: list, top: int = 10) -> list[dict]:
    """Allocation sites whose size grew between every pair of snapshots: the likely leaks."""
    if len(snapshots) < 2:
        return []
    growth: dict = {}
    for older, newer in zip(snapshots, snapshots[1:]):
        for stat in newer.compare_to(older, "lineno"):
            site = str(stat.traceback[0]) if stat.traceback else "?"
            growth.setdefault(site, []).append(stat.size_diff)
    rounds = len(snapshots) - 1
    steady = [(site, diffs) for site, diffs in growth.items() if len(diffs) == rounds and all(d > 0 for d in diffs)]
    steady.sort(key=lambda item: -sum(item[1]))
    return [{"site": site, "grew_bytes": sum(diffs), "rounds": rounds} for site, diffs in steady[:top]]

"""The memory manager: pressure levels, caches it may trim, alerts and leak checks.

Each reading of the process's sampler goes through check() (it listens to reading_taken): on a change of level (ok, warning
70%, critical 85% by default) it sends `memory_pressure`, and a `resource_alert` when CPU or
memory cross their ceilings; under pressure it trims every registered cache, least recently
used first. Leak checks compare tracemalloc snapshots between runs of the periodic task in a
worker and send `leak_detected` for allocation sites that grew every time.
"""

import ctypes
import ctypes.util
import gc
import logging
import threading
import tracemalloc
from collections import OrderedDict

from django.conf import settings

from .signals import leak_detected, memory_pressure, resource_alert

log = logging.getLogger("monitoring.memory")
TRIM = {"warning": 0.25, "critical": 0.75}  # share of each cache dropped at each level


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


class TrimmableCache:
    """A dict-like cache in least-recently-used order that the memory manager may trim."""

    def __init__(self, name: str, max_items: int | None = None):
        self.name, self.max_items = name, max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def set(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while self.max_items and len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def trim(self, share: float) -> int:
        """Drop the least recently used `share` of the entries; return how many went."""
        with self._lock:
            drop = int(len(self._items) * share + 0.999)
            for _ in range(min(drop, len(self._items))):
                self._items.popitem(last=False)
            return drop

    def __len__(self) -> int:
        return len(self._items)


class MemoryManager:
    def __init__(self):
        self.caches: list[TrimmableCache] = []
        self.level = "ok"
        self.alerts: frozenset = frozenset()

    def register_cache(self, cache: TrimmableCache) -> TrimmableCache:
        self.caches.append(cache)
        return cache

    def on_reading(self, sender, reading, **kwargs) -> None:
        """The process's sampler took a reading (signals.reading_taken)."""
        self.check(reading)

    def check(self, reading) -> str:
        level = pressure_level(reading.memory_percent)
        if level != self.level:
            log.log(logging.WARNING if level != "ok" else logging.INFO, "memory pressure %s -> %s: %.0f%%", self.level, level, reading.memory_percent)
            self.level = level
            memory_pressure.send(MemoryManager, level=level, reading=reading)
        if level in TRIM:
            for cache in self.caches:
                if len(cache):
                    cache.trim(TRIM[level])
        alerts = frozenset(self._alerts(reading))
        if alerts and alerts != self.alerts:
            resource_alert.send(MemoryManager, alerts=sorted(alerts), reading=reading)
            log.warning("resource alerts: %s", "; ".join(sorted(alerts)))
        self.alerts = alerts
        return level

    @staticmethod
    def _alerts(reading):
        cpu_ceiling, memory_ceiling = ceilings()
        if reading.cpu_percent > cpu_ceiling:
            yield f"CPU {reading.cpu_percent:.0f}% over its ceiling"
        if reading.memory_percent > memory_ceiling:
            yield f"memory {reading.memory_percent:.0f}% over its ceiling"


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

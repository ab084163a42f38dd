"""Leak checks: tracemalloc snapshots compared between runs of the periodic task in a worker;
`leak_detected` is sent for allocation sites that grew every time."""

import gc
import logging
import tracemalloc

from monitoring.signals import leak_detected

log = logging.getLogger("monitoring.leaks")


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

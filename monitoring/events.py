"""Record what the governor does: one ThrottleEvent row and one log line per event."""

import logging
from dataclasses import dataclass, field

from django.db import DatabaseError
from django.utils import timezone

from . import metrics
from .models import ResourceSample, ThrottleEvent
from .policy import MB, Pressure
from .readings import Reading

log = logging.getLogger("monitoring.governor")


@dataclass
class Event:
    kind: str
    pressure: Pressure
    rss_bytes: int
    before: int | None = None
    after: int | None = None
    detail: str = ""


class DatabaseRecorder:
    """Writes events and samples for one owner and route (each in its own autocommit)."""

    def __init__(self, owner: str, route: str, label: str, context: dict | None = None):
        self.owner, self.route, self.label = owner, route, label
        self.context = {"owner": owner, "route": route, **(context or {})}  # fields of JSON log lines

    def event(self, event: Event) -> None:
        metrics.throttle_events.labels(kind=event.kind, route=self.route).inc()
        change = f" {event.before} -> {event.after}" if event.before is not None and event.before != event.after else ""
        log.info("%s %s%s: %s", self.label, event.kind.replace("_", " "), change, event.detail, extra=self.context)
        try:
            ThrottleEvent.objects.create(
                owner=self.owner, route=self.route, kind=event.kind,
                cpu_percent=round(event.pressure.cpu, 1), memory_percent=round(event.pressure.memory, 1),
                rss_bytes=event.rss_bytes, concurrency_before=event.before, concurrency_after=event.after,
                detail=event.detail[:300],
            )
        except DatabaseError:  # the record must never sink the sync
            log.warning("%s could not record %s event", self.label, event.kind)

    def sample(self, reading: Reading, pressure: Pressure, concurrency: int, batch_size: int) -> None:
        metrics.observe_reading(reading, pressure.memory)
        metrics.concurrency.labels(route=self.route).set(concurrency)
        metrics.batch_size.labels(route=self.route).set(batch_size)
        try:
            ResourceSample.objects.create(
                owner=self.owner, route=self.route, at=timezone.now(),
                cpu_percent=round(reading.cpu_percent, 1), process_cpu_percent=round(reading.process_cpu_percent, 1),
                memory_percent=round(pressure.memory, 1), rss_bytes=reading.rss_bytes,
                concurrency=concurrency, batch_size=batch_size,
            )
        except DatabaseError:
            log.warning("%s could not record a resource sample", self.label)


@dataclass
class ListRecorder:
    """Keeps events and samples in memory (tests, the stress command)."""

    label: str = "[test]"
    events: list = field(default_factory=list)
    samples: list = field(default_factory=list)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def sample(self, reading: Reading, pressure: Pressure, concurrency: int, batch_size: int) -> None:
        self.samples.append((reading, pressure, concurrency, batch_size))

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def describe_rss(rss_bytes: int) -> str:
    return f"{rss_bytes / MB:.0f} MB"

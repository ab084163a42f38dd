"""Record what the governor does: events and episodes as ThrottleEvent rows, log lines, samples.

A point event (a brake, a concurrency change, a collection) is one row. A condition that lasts
(a CPU hold, a memory throttle, a provider pushing back) is an Episode: one row made when it
starts, updated as it goes with its duration and min/mean/max readings, closed with its end.
Log lines for the same condition of a route go out at most once per LOG_REPEAT_S (an episode's
start and its summary each); the ones held back are counted in the next.
"""

import logging
import os
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from monitoring import metrics
from monitoring.logs import Repeats
from monitoring.models import ResourceSample, ThrottleEvent

from .policy import MB, Pressure
from .readings import Reading

log = logging.getLogger("monitoring.governor")
UPDATE_EVERY_S = 2.0  # an episode's row is rewritten at most this often while it goes on


@dataclass(frozen=True)
class Sample:
    """How a route stood at one moment, for its run's chart and figures."""

    reading: Reading
    memory: float  # percent of the memory budget (its pressure: the RSS ceiling counts)
    concurrency: int  # what resources allow at once (the figure of the concurrency events)
    calls_allowed: int | None  # provider calls allowed in flight now, under that (I/O-bound routes)
    batch_size: int
    cpu_peak: float  # the machine's highest reading since the route's last sample


@dataclass
class Event:
    kind: str
    pressure: Pressure
    rss_bytes: int
    before: int | None = None
    after: int | None = None
    detail: str = ""
    # Episodes only: how long so far, whether over, and the readings while it lasted.
    duration_s: float | None = None
    ended: bool = False
    cpu_min: float | None = None
    cpu_mean: float | None = None
    cpu_max: float | None = None
    own_cpu_mean: float | None = None

    def summary(self) -> str:
        """An episode's figures in a few words."""
        return (
            f"{self.duration_s:.1f} s, machine CPU {self.cpu_min:.0f}/{self.cpu_mean:.0f}/{self.cpu_max:.0f}% "
            f"(min/mean/max), this process {self.own_cpu_mean:.0f}%"
        )


class Episode:
    """A condition that lasts, recorded as one event from its start to its end."""

    def __init__(
        self, recorder, kind: str, condition: str, now: float, reading: Reading, pressure: Pressure, detail: str,
        severity: float | None = None,
    ):
        self.recorder, self.condition = recorder, condition
        self.started_at = self._saved_at = now
        self._count, self._cpu_total, self._own_total = 0, 0.0, 0.0
        self._worst = (severity, detail) if severity is not None else None  # the tightest moment's (severity, detail)
        self.event = Event(kind, pressure, reading.rss_bytes, detail=detail, duration_s=0.0)
        self._add(reading)
        self.handle = recorder.event(self.event, condition=condition)

    def _add(self, reading: Reading) -> None:
        e = self.event
        self._count += 1
        self._cpu_total += reading.cpu_percent
        self._own_total += reading.process_cpu_percent
        e.cpu_min = min(e.cpu_min if e.cpu_min is not None else 100.0, reading.cpu_percent)
        e.cpu_max = max(e.cpu_max or 0.0, reading.cpu_percent)
        e.cpu_mean = self._cpu_total / self._count
        e.own_cpu_mean = self._own_total / self._count

    def observe(self, now: float, reading: Reading, detail: str | None = None, severity: float | None = None) -> None:
        """One more reading while the condition lasts; the row is rewritten now and then.

        The detail says what holds things now; with a severity, the tightest moment's detail is
        what the episode keeps when it ends."""
        self._add(reading)
        self.event.duration_s = now - self.started_at
        if detail:
            self.event.detail = detail
            if severity is not None and (self._worst is None or severity > self._worst[0]):
                self._worst = (severity, detail)
        if now - self._saved_at >= UPDATE_EVERY_S:
            self._saved_at = now
            self.recorder.update(self.handle, self.event, condition=self.condition)

    def end(self, now: float) -> None:
        self.event.duration_s = now - self.started_at
        self.event.ended = True
        if self._worst is not None:
            self.event.detail = self._worst[1]
        self.recorder.update(self.handle, self.event, condition=self.condition)


class Episodes:
    """The conditions of one route that may last, each an Episode while it goes on."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.going: dict[str, Episode] = {}  # condition → its episode

    def carry(
        self, condition: str, kind: str, on: bool, now: float, reading: Reading, pressure: Pressure,
        detail: str | None, severity: float | None = None,
    ) -> None:
        """Start the condition's episode (when there is a detail to say why), carry it on, or end it."""
        episode = self.going.get(condition)
        if on and episode is None and detail:
            self.going[condition] = Episode(self.recorder, kind, condition, now, reading, pressure, detail, severity)
        elif on and episode is not None:
            episode.observe(now, reading, detail, severity)
        elif not on and episode is not None:
            episode.end(now)
            del self.going[condition]

    def __contains__(self, condition: str) -> bool:
        return condition in self.going

    def end_all(self, now: float) -> None:
        for episode in self.going.values():
            episode.end(now)
        self.going.clear()


def _row_fields(event: Event) -> dict:
    rounded = {name: round(getattr(event, name), 1) if getattr(event, name) is not None else None
               for name in ("cpu_min", "cpu_mean", "cpu_max", "own_cpu_mean")}
    duration = round(event.duration_s, 3) if event.duration_s is not None else None
    return {**rounded, "duration_s": duration, "detail": event.detail[:300], "updated_at": timezone.now(), "ended_at": timezone.now() if event.ended else None}


class DatabaseRecorder:
    """Writes events and samples for one owner and route (each in its own autocommit)."""

    def __init__(self, owner: str, route: str, label: str, context: dict | None = None, clock=time.monotonic):
        self.owner, self.route, self.label = owner, route, label
        self.context = {"owner": owner, "route": route, **(context or {})}  # fields of JSON log lines
        self.clock = clock
        self.repeats = Repeats(getattr(settings, "BALLAST_LOG_REPEAT_S", 10.0))

    def _log(self, condition: str, message: str) -> None:
        out, held = self.repeats.allow(condition, self.clock())
        if out:
            more = f" (and {held} more like it)" if held else ""
            log.info("%s %s%s", self.label, message, more, extra=self.context)

    def event(self, event: Event, condition: str | None = None) -> int | None:
        """Record a point event, or an episode's start; return the row's id for updates."""
        metrics.throttle_events.labels(kind=event.kind, route=self.route).inc()
        change = f" {event.before} -> {event.after}" if event.before is not None and event.before != event.after else ""
        self._log(condition or event.kind, f"{event.kind.replace('_', ' ')}{change}: {event.detail}")
        try:
            row = ThrottleEvent.objects.create(
                owner=self.owner, route=self.route, kind=event.kind,
                cpu_percent=round(event.pressure.cpu, 1), memory_percent=round(event.pressure.memory, 1),
                rss_bytes=event.rss_bytes, concurrency_before=event.before, concurrency_after=event.after,
                **_row_fields(event),
            )
        except DatabaseError:  # the record must never sink the sync
            log.warning("%s could not record %s event", self.label, event.kind)
            return None
        return row.pk

    def update(self, handle: int | None, event: Event, condition: str | None = None) -> None:
        """Rewrite an episode's row as it goes; its end is logged with a summary."""
        if event.ended:  # its own key: a short episode still ends with its summary
            self._log(f"{condition or event.kind} ended", f"{event.kind} over after {event.summary()}: {event.detail}")
        if handle is None:
            return
        try:
            ThrottleEvent.objects.filter(pk=handle).update(**_row_fields(event))
        except DatabaseError:
            log.warning("%s could not update its %s event", self.label, event.kind)

    def sample(self, sample: Sample) -> None:
        reading = sample.reading
        metrics.observe_reading(reading, sample.memory)
        metrics.concurrency.labels(route=self.route).set(sample.concurrency if sample.calls_allowed is None else sample.calls_allowed)
        metrics.batch_size.labels(route=self.route).set(sample.batch_size)
        try:
            ResourceSample.objects.create(
                owner=self.owner, route=self.route, at=timezone.now(), pid=os.getpid(),
                cpu_percent=round(reading.cpu_percent, 1), cpu_peak_percent=round(sample.cpu_peak, 1),
                process_cpu_percent=round(reading.process_cpu_percent, 1),
                memory_percent=round(sample.memory, 1), rss_bytes=reading.rss_bytes,
                concurrency=sample.concurrency, calls_allowed=sample.calls_allowed, batch_size=sample.batch_size,
            )
        except DatabaseError:
            log.warning("%s could not record a resource sample", self.label)


@dataclass
class ListRecorder:
    """Keeps events and samples in memory (tests, the stress command)."""

    label: str = "[test]"
    events: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    updates: int = 0

    def event(self, event: Event, condition: str | None = None) -> int:
        self.events.append(event)
        return len(self.events) - 1

    def update(self, handle: int, event: Event, condition: str | None = None) -> None:
        self.updates += 1  # the event itself is the object the episode changes

    def sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def describe_rss(rss_bytes: int) -> str:
    return f"{rss_bytes / MB:.0f} MB"

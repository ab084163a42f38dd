"""Resource alerts: memory pressure levels, and CPU or memory over its ceiling for a while.

Each reading of the process's sampler goes through check() (it listens to reading_taken): on
a change of level (ok, warning 70%, critical 85% by default) it sends `memory_pressure` (the
governor itself shrinks batches and collects under pressure). An alert is a condition
that lasts: CPU (averaged over a few seconds) more than CPU_MARGIN points over its ceiling, or
memory over its ceiling, for ALERT_AFTER_S starts one (`resource_alert`, one warning line); it
ends, with a summary line, once it has been gone as long. Readings that hover around a ceiling
do not make a line each.
"""

import logging

from django.conf import settings

from monitoring.governor.memory import pressure_level
from monitoring.governor.policy import Ewma
from monitoring.governor.profiles import route_policy
from monitoring.logs import Repeats
from monitoring.signals import memory_pressure, resource_alert

log = logging.getLogger("monitoring.alerts")


def ceilings() -> tuple[float, float]:
    """The site's CPU and memory ceilings, percent: the run route's policy (profile and environment)."""
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


class ResourceAlerts:
    """Follows the sampler's readings: memory pressure levels, and alerts for a ceiling exceeded for a while."""

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
            memory_pressure.send(ResourceAlerts, level=level, reading=reading)
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
                resource_alert.send(ResourceAlerts, alerts=[text], reading=reading)
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


resource_alerts = ResourceAlerts()

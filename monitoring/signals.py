"""Moments other code can subscribe to (monitoring itself knows nobody's models)."""

from django.dispatch import Signal

# sender=Allocation, allocation=<the Allocation>, waited=bool: granted (after commit); waited is
# True for a request that had to queue and was served when a slot freed.
allocation_granted = Signal()
# sender=Allocation, allocation=<the Allocation>: its holder died; the slot went back (after commit).
allocation_reclaimed = Signal()
# sender=Allocation, allocation=<the Allocation>: a slot or budget went back (release or reclaim).
allocation_released = Signal()
# sender=Sampler, reading=<Reading>: the process's sampler took a reading (every SAMPLE_INTERVAL_S).
reading_taken = Signal()
# sender=ResourceAlerts, level="ok"|"warning"|"critical", reading=<Reading>: the level changed.
memory_pressure = Signal()
# sender=ResourceAlerts, alerts=[str], reading=<Reading>: CPU (averaged) or memory has stayed over its ceiling for a while.
resource_alert = Signal()
# sender=LeakWatch, site={"site", "grew_bytes", "rounds"}: an allocation site grew at every check.
leak_detected = Signal()

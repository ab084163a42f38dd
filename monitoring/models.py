"""What the governor did and saw. Monitoring knows a run only as an owner key ("run-42")."""

from django.db import models


class ThrottleEvent(models.Model):
    class Kind(models.TextChoices):
        THROTTLE = "throttle"
        CONCURRENCY = "concurrency"
        BATCH_SIZE = "batch_size", "batch size"
        PAUSE = "pause"
        BRAKE = "brake"
        RECOVERY = "recovery"
        EMERGENCY = "emergency"
        COLLECT = "collect"
        DUTY_CYCLE = "duty_cycle", "duty cycle"
        RATE = "rate"
        STOP = "stop"

    owner = models.CharField(max_length=100, db_index=True)
    route = models.CharField(max_length=20)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    rss_bytes = models.BigIntegerField()
    concurrency_before = models.PositiveIntegerField(null=True, blank=True)
    concurrency_after = models.PositiveIntegerField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        verbose_name = "throttle event"

    def __str__(self):
        return f"{self.owner} {self.route} {self.kind}"


class ResourceSample(models.Model):
    owner = models.CharField(max_length=100, db_index=True)
    route = models.CharField(max_length=20)
    at = models.DateTimeField(db_index=True)
    cpu_percent = models.FloatField()
    process_cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    rss_bytes = models.BigIntegerField()
    concurrency = models.PositiveIntegerField()
    batch_size = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.owner} {self.route} @ {self.at:%H:%M:%S}"

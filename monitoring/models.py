"""What the governor did and saw. Monitoring knows a run only as an owner key ("run-42")."""

from datetime import timedelta

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import IntegrityError, models, transaction
from django.utils import timezone


class ThrottleEventQuerySet(models.QuerySet):
    def ongoing(self, fresh_s: float = 30.0):
        """Episodes going on now: open, and rewritten lately (a process that died leaves its last one open)."""
        return self.filter(duration_s__isnull=False, ended_at__isnull=True, updated_at__gte=timezone.now() - timedelta(seconds=fresh_s))

    def holding(self, owners) -> dict[str, list[str]]:
        """owner → what holds it right now, in words ("tokens: held at 12% CPU: …")."""
        held: dict[str, list[str]] = {}
        for owner, route, detail in self.ongoing().filter(owner__in=list(owners)).order_by("id").values_list("owner", "route", "detail"):
            held.setdefault(owner, []).append(f"{route}: {detail}")
        return held


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
    # Episodes (a condition that lasts) only: how long so far, when it ended, the readings while it lasted.
    duration_s = models.FloatField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)
    cpu_min = models.FloatField(null=True, blank=True)
    cpu_mean = models.FloatField(null=True, blank=True)
    cpu_max = models.FloatField(null=True, blank=True)
    own_cpu_mean = models.FloatField(null=True, blank=True, help_text="This process's CPU, percent of the same capacity.")

    objects = ThrottleEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        verbose_name = "throttle event"

    @property
    def is_episode(self) -> bool:
        return self.duration_s is not None

    @property
    def ongoing(self) -> bool:
        return self.is_episode and self.ended_at is None

    def __str__(self):
        return f"{self.owner} {self.route} {self.kind}"


class ResourceSample(models.Model):
    owner = models.CharField(max_length=100, db_index=True)
    route = models.CharField(max_length=20)
    at = models.DateTimeField(db_index=True)
    pid = models.PositiveIntegerField(null=True, blank=True)  # steps of one process share its CPU figure
    cpu_percent = models.FloatField()
    cpu_peak_percent = models.FloatField(null=True, blank=True, help_text="The machine's highest reading since the route's last sample.")
    process_cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    rss_bytes = models.BigIntegerField()
    concurrency = models.PositiveIntegerField(help_text="What resources allow at once: the figure of the concurrency events.")
    calls_allowed = models.PositiveIntegerField(null=True, blank=True, help_text="Provider calls allowed in flight then, under that.")
    batch_size = models.PositiveIntegerField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.owner} {self.route} @ {self.at:%H:%M:%S}"


class TenantQuota(models.Model):
    """One tenant's share. Empty fields take the site's defaults (settings.BALLAST_QUOTA_DEFAULTS)."""

    tenant = models.OneToOneField(settings.BALLAST_TENANT_MODEL, on_delete=models.CASCADE, related_name="quota")
    max_concurrent_runs = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    max_concurrency = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Most provider calls or batches at once in one step."
    )
    max_memory_mb = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(16)])
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)], help_text="API requests.")
    burst = models.PositiveIntegerField(null=True, blank=True, help_text="API requests allowed at once above the steady rate.")
    runs_per_day = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    provider_calls_per_second = models.FloatField(
        null=True, blank=True, validators=[MinValueValidator(0.1)], help_text="Outbound, to protect the tenant's own provider quota."
    )

    class Meta:
        verbose_name = "quota"

    def __str__(self):
        return f"quota of {self.tenant}"


class LedgerLock(models.Model):
    """One row per resource, locked (SELECT … FOR UPDATE) while the ledger decides."""

    resource = models.CharField(max_length=20, primary_key=True)


class AllocationQuerySet(models.QuerySet):
    def live(self):
        """Waiting or granted: what the ledger still counts."""
        return self.filter(state__in=[Allocation.State.WAITING, Allocation.State.GRANTED])


class Allocation(models.Model):
    class Resource(models.TextChoices):
        RUN_SLOT = "run_slot", "run slot"

    class State(models.TextChoices):
        WAITING = "waiting"
        GRANTED = "granted"
        RELEASED = "released"
        DENIED = "denied"
        RECLAIMED = "reclaimed"

    class BlockedBy(models.TextChoices):
        """What a waiting request waits on."""

        CLUSTER = "cluster", "cluster limit"
        TENANT = "tenant", "tenant quota"
        QUEUE = "queue", "earlier requests"

    resource = models.CharField(max_length=20, choices=Resource.choices)
    amount = models.PositiveIntegerField(default=1)
    owner = models.CharField(max_length=100, db_index=True)
    tenant = models.ForeignKey(settings.BALLAST_TENANT_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="allocations")
    priority = models.SmallIntegerField(default=0)
    state = models.CharField(max_length=10, choices=State.choices, db_index=True)
    reason = models.CharField(max_length=300, blank=True)
    blocked_by = models.CharField(max_length=10, blank=True, choices=BlockedBy.choices)
    requested_at = models.DateTimeField(auto_now_add=True)
    granted_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    objects = AllocationQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["resource", "state"])]

    def __str__(self):
        return f"{self.amount} {self.resource} for {self.owner} ({self.state})"


class Holder(models.Model):
    """A process working under a granted allocation: one per running step of a run. It lives while
    its process exists and it heartbeats; when it dies, the allocation is reclaimed."""

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="holders")
    name = models.CharField(max_length=50, blank=True, help_text="The work it does under the allocation, e.g. a step.")
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    process_started = models.FloatField(help_text="The process's start (Unix seconds): a reused pid is another process.")
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.name or 'holder'} of {self.allocation.owner}: {self.describe()}"

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"  # as ledger.processes.ProcessId says it

    @property
    def heartbeat_age_s(self) -> float:
        return (timezone.now() - self.heartbeat_at).total_seconds()


class AllocationEvent(models.Model):
    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Allocation.State.choices)  # the state the allocation reached
    tenant = models.ForeignKey(settings.BALLAST_TENANT_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    resource = models.CharField(max_length=20)
    owner = models.CharField(max_length=100)
    detail = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "ledger event"

    def __str__(self):
        return f"{self.kind} {self.resource} {self.owner}"


class RateLimitDenial(models.Model):
    """Requests refused by the rate limit, per tenant and day."""

    tenant = models.ForeignKey(settings.BALLAST_TENANT_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="one_denial_count_per_tenant_day")]
        verbose_name = "rate-limit denial"

    def __str__(self):
        return f"{self.tenant} {self.day}: {self.count}"


def record_denial(tenant_id) -> None:
    day = timezone.localdate()
    if not RateLimitDenial.objects.filter(tenant_id=tenant_id, day=day).update(count=models.F("count") + 1):
        try:
            with transaction.atomic():
                RateLimitDenial.objects.create(tenant_id=tenant_id, day=day, count=1)
        except IntegrityError:  # made by a concurrent request in the meantime
            RateLimitDenial.objects.filter(tenant_id=tenant_id, day=day).update(count=models.F("count") + 1)

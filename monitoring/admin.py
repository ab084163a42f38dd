from django.contrib import admin, messages

from .forms import QuotaForm
from .ledger.allocations import amount_of, release
from .ledger.owners import owner_link
from .models import Allocation, AllocationEvent, RateLimitDenial, ResourceSample, TenantQuota, ThrottleEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by code (the governor, a sync), browsed here: never added, changed or deleted
    in the admin (no Delete button, no "Delete selected" action); the provider, a run or the
    governor is their source, and a superuser who must has the shell."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="owner", ordering="owner")
    def owner_link(self, row):
        """A run's owner links to the run."""
        return owner_link(row.owner)


# Lists show every column on a 1,024-pixel screen: figures read together share a column.
@admin.register(ThrottleEvent)
class ThrottleEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "owner_link", "route", "kind", "readings", "concurrency", "detail"]
    list_filter = ["kind", "route"]
    search_fields = ["owner", "detail"]
    date_hierarchy = "created_at"

    @admin.display(description="machine CPU · memory", ordering="cpu_percent")
    def readings(self, event):
        return f"{event.cpu_percent:.0f}% · {event.memory_percent:.0f}%"

    @admin.display(description="concurrency")
    def concurrency(self, event):
        return f"{event.concurrency_before} → {event.concurrency_after}" if event.concurrency_before is not None else "—"


@admin.register(ResourceSample)
class ResourceSampleAdmin(ReadOnlyAdmin):
    list_display = ["at", "owner_link", "route", "cpu", "memory", "work"]
    list_filter = ["route"]
    search_fields = ["owner"]
    date_hierarchy = "at"

    @admin.display(description="CPU: machine (peak) · this process", ordering="cpu_percent")
    def cpu(self, sample):
        peak = f" ({sample.cpu_peak_percent:.0f}%)" if sample.cpu_peak_percent is not None else ""
        return f"{sample.cpu_percent:.0f}%{peak} · {sample.process_cpu_percent:.0f}%"

    @admin.display(description="memory · RSS", ordering="memory_percent")
    def memory(self, sample):
        return f"{sample.memory_percent:.0f}% · {sample.rss_bytes / 2**20:.0f} MB"

    @admin.display(description="concurrency · calls · batch")
    def work(self, sample):
        calls = f" · {sample.calls_allowed} calls" if sample.calls_allowed is not None else ""
        return f"{sample.concurrency}{calls} · {sample.batch_size}"


class TenantQuotaInline(admin.StackedInline):
    """Put on the tenant's admin page (monitoring does not know the tenant model's admin)."""

    model = TenantQuota
    form = QuotaForm
    can_delete = False
    verbose_name = verbose_name_plural = "quota (empty fields follow the site's defaults)"
    fields = [
        ("max_concurrent_runs", "runs_per_day"), ("max_concurrency", "max_memory_mb"),
        ("requests_per_minute", "burst"), "provider_calls_per_second",
    ]


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    # Eight columns fit a 1,280-pixel screen beside the filters; the priority is on each allocation's page.
    list_display = ["owner_link", "tenant", "slots", "state", "held_by", "heartbeat_at", "reason", "requested_at"]
    list_filter = ["state", "resource", "tenant"]
    search_fields = ["owner", "reason"]
    actions = ["reclaim"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("holders")

    @admin.display(description="amount", ordering="resource")
    def slots(self, allocation):
        return amount_of(allocation.amount, allocation.resource)

    @admin.display(description="held by")
    def held_by(self, allocation):
        """The processes working under it now (a run's running steps), with their last heartbeat."""
        return "; ".join(
            f"{h.name}: {h.describe()}, heartbeat {h.heartbeat_age_s:.0f} s ago" for h in allocation.holders.all()
        ) or "—"

    @admin.action(description="Reclaim selected allocations (give their slots back now)", permissions=["change_allocation"])
    def reclaim(self, request, queryset):
        live = [a for a in queryset if a.state in (Allocation.State.GRANTED, Allocation.State.WAITING)]
        granted = [g for a in live for g in release(a)]
        self.message_user(request, f"Released {len(live)} allocation(s); {len(granted)} waiter(s) granted.", messages.SUCCESS)

    def has_change_allocation_permission(self, request):
        return request.user.has_perm("monitoring.change_allocation")


@admin.register(AllocationEvent)
class AllocationEventAdmin(ReadOnlyAdmin):
    list_display = ["at", "kind", "resource", "owner_link", "tenant", "detail"]
    list_filter = ["kind", "resource", "tenant"]
    search_fields = ["owner", "detail"]
    date_hierarchy = "at"


@admin.register(RateLimitDenial)
class RateLimitDenialAdmin(ReadOnlyAdmin):
    list_display = ["day", "tenant", "count"]
    list_filter = ["day", "tenant"]
    date_hierarchy = "day"

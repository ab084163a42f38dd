from django.contrib import admin, messages

from .forms import QuotaForm
from .ledger import amount_of, release
from .owners import owner_link
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


@admin.register(ThrottleEvent)
class ThrottleEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "owner_link", "route", "kind", "cpu_percent", "memory_percent", "concurrency_before", "concurrency_after", "detail"]
    list_filter = ["kind", "route"]
    search_fields = ["owner", "detail"]
    date_hierarchy = "created_at"


@admin.register(ResourceSample)
class ResourceSampleAdmin(ReadOnlyAdmin):
    list_display = ["at", "owner_link", "route", "cpu_percent", "process_cpu_percent", "memory_percent", "rss_bytes", "concurrency", "batch_size"]
    list_filter = ["route"]
    search_fields = ["owner"]
    date_hierarchy = "at"


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

from django.contrib import admin

from .models import ResourceSample, ThrottleEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by code (the governor, a sync), browsed here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ThrottleEvent)
class ThrottleEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "owner", "route", "kind", "cpu_percent", "memory_percent", "concurrency_before", "concurrency_after", "detail"]
    list_filter = ["kind", "route"]
    search_fields = ["owner", "detail"]
    date_hierarchy = "created_at"


@admin.register(ResourceSample)
class ResourceSampleAdmin(ReadOnlyAdmin):
    list_display = ["at", "owner", "route", "cpu_percent", "process_cpu_percent", "memory_percent", "rss_bytes", "concurrency", "batch_size"]
    list_filter = ["route"]
    search_fields = ["owner"]
    date_hierarchy = "at"

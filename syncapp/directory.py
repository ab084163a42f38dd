"""Reads of the synced directory."""

from django.db.models import Count, Q

from .models import Tenant


def directory_counts(tenant: Tenant) -> dict:
    """What `tenant show --json` prints: users present at the source count as active, suspended included."""
    users = tenant.users.aggregate(
        active=Count("pk", filter=Q(deleted_at__isnull=True)),
        suspended=Count("pk", filter=Q(deleted_at__isnull=True, is_suspended=True)),
        deleted=Count("pk", filter=Q(deleted_at__isnull=False)),
    )
    tokens = tenant.tokens.aggregate(
        active=Count("pk", filter=Q(revoked_at__isnull=True)), revoked=Count("pk", filter=Q(revoked_at__isnull=False))
    )
    # Aliases must not shadow the `active` field, hence the renaming.
    relations = tenant.relations.aggregate(
        on=Count("pk", filter=Q(active=True)), off=Count("pk", filter=Q(active=False))
    )
    return {
        "slug": tenant.slug,
        "users": users,
        "tokens": tokens,
        "applications": tenant.applications.count(),
        "relations": {"active": relations["on"], "inactive": relations["off"]},
    }

"""Reads of the synced directory."""

from collections.abc import Iterable

from django.db.models import Count, F, Q

from .models import DirectoryUser, Tenant


def users_by_key(tenant_id: int, keys: Iterable[str | None]) -> dict[str, int]:
    """Each key that names one of the tenant's users → its row id: by id (external_id), else, for
    a key that is an email, by primary email — a live user before a deleted one of that address."""
    keys = {key for key in keys if key}
    ids = dict(DirectoryUser.objects.filter(tenant_id=tenant_id, external_id__in=keys).values_list("external_id", "pk"))
    emails = [key for key in keys if key not in ids and "@" in key]
    if emails:
        by_email = DirectoryUser.objects.filter(tenant_id=tenant_id, primary_email__in=emails)
        for email, pk in by_email.order_by(F("deleted_at").asc(nulls_first=True), "pk").values_list("primary_email", "pk"):
            ids.setdefault(email, pk)
    return ids


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

"""Each tenant's effective quota: its TenantQuota row over the site's defaults."""

from dataclasses import dataclass, fields

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    max_concurrent_runs: int | None = None
    max_concurrency: int | None = None
    max_memory_mb: int | None = None
    requests_per_minute: int | None = None
    burst: int | None = None
    runs_per_day: int | None = None
    provider_calls_per_second: float | None = None


QUOTA_FIELDS = [f.name for f in fields(Limits)]


def default_limits() -> Limits:
    """The site's defaults (settings.BALLAST_QUOTA_DEFAULTS): what an empty quota field follows."""
    defaults = getattr(settings, "BALLAST_QUOTA_DEFAULTS", {})
    return Limits(**{name: defaults.get(name) for name in QUOTA_FIELDS})


def limits_for(tenant_id) -> Limits:
    from monitoring.models import TenantQuota

    defaults = default_limits()
    row = TenantQuota.objects.filter(tenant_id=tenant_id).values(*QUOTA_FIELDS).first() or {}
    return Limits(**{name: row[name] if row.get(name) is not None else getattr(defaults, name) for name in QUOTA_FIELDS})

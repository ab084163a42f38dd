"""Per-tenant API keys: made once, stored hashed, found by prefix, revocable."""

import hashlib
import hmac
import secrets
import string
from datetime import timedelta

from django.utils import timezone

from monitoring.ratelimit.ttl import ttl_cache

from .models import ApiKey, Tenant

PREFIX_LENGTH = 8
LAST_USED_EVERY = timedelta(minutes=1)  # no write on every request


def _hash(key: str) -> str:
    # Keys are 256 random bits: a plain SHA-256 cannot be brute-forced, and stays cheap per request.
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(prefix, hash, key) for a new key; the key itself is shown once and never stored."""
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    key = f"bk_{prefix}_{secrets.token_urlsafe(32)}"
    return prefix, _hash(key), key


def create_key(tenant: Tenant, name: str = "", *, may_revoke: bool = False) -> tuple[ApiKey, str]:
    """Make a key; return the row and the key itself."""
    prefix, key_hash, key = new_key()
    return ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=key_hash, may_revoke=may_revoke), key


def _live_key(key: str) -> ApiKey | None:
    parts = key.split("_")
    if len(parts) < 3 or parts[0] != "bk" or len(parts[1]) != PREFIX_LENGTH or not all(c in string.hexdigits for c in parts[1]):
        return None  # not a key we made: no query (a NUL in it would fail one on PostgreSQL)
    row = ApiKey.objects.select_related("tenant").filter(prefix=parts[1], revoked_at__isnull=True).first()
    if row is None or not hmac.compare_digest(row.key_hash, _hash(key)) or not row.tenant.active:
        return None
    return row


def request_key(request) -> ApiKey | None:
    """The live key of an `Authorization: Bearer <key>` request, read now (not cached: for the
    rights a key holds, such as revoking, which must not outlive the key's revocation)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return _live_key(key.strip()) if scheme.lower() == "bearer" and key else None


@ttl_cache(seconds=10)
def tenant_for_key(key: str) -> Tenant | None:
    """The active tenant a live key belongs to, or None (cached 10 s per process: a revocation
    elsewhere takes effect within that; here at once)."""
    row = _live_key(key)
    if row is None:
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.tenant


def resolve_tenant(request) -> Tenant | None:
    """BALLAST_TENANT_RESOLVER: the tenant of an `Authorization: Bearer <key>` request."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return tenant_for_key(key.strip()) if scheme.lower() == "bearer" and key else None


def revoke(key: ApiKey) -> None:
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    tenant_for_key.clear()

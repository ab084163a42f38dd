from django.conf import settings
from django.core.checks import Error, Tags, register

LOCAL_CACHES = ("django.core.cache.backends.locmem.LocMemCache", "django.core.cache.backends.dummy.DummyCache")


@register(Tags.caches)
def ratelimit_store_is_shared(app_configs, **kwargs):
    """Without Redis, rate limits live in Django's cache: it must be one every process shares."""
    if getattr(settings, "REDIS_URL", None):
        return []
    alias = getattr(settings, "BALLAST_RATELIMIT_CACHE", "default")
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend in LOCAL_CACHES:
        return [Error(
            f"The rate-limit cache {alias!r} ({backend.rsplit('.', 1)[-1]}) is not a shared cache: each process would count alone.",
            hint="Set REDIS_URL, or use a shared cache backend (database, Redis, Memcached).",
            id="monitoring.E001",
        )]
    return []

"""Per-tenant request rate limits. An adapter: every decision is in monitoring.ratelimit.sliding_window."""

import ipaddress

from django.conf import settings
from django.http import JsonResponse
from django.utils.module_loading import import_string

from monitoring import metrics
from monitoring.ledger.quotas import limits_for
from monitoring.models import record_denial

from .sliding_window import client_scope, headers, hit, tenant_scope
from .ttl import ttl_cache

request_limits = ttl_cache(seconds=10)(limits_for)  # quota edits reach the hot path within 10 s

DEFAULT_EXEMPT = ("/admin/", "/static/", "/healthz", "/readyz", "/metrics")


def client_ip(request) -> str:
    """REMOTE_ADDR, unless it is a trusted proxy: then the nearest untrusted X-Forwarded-For hop."""
    trusted = [ipaddress.ip_network(n, strict=False) for n in getattr(settings, "BALLAST_TRUSTED_PROXIES", [])]

    def is_trusted(address: str) -> bool:
        try:
            return any(ipaddress.ip_address(address) in network for network in trusted)
        except ValueError:
            return False

    address = request.META.get("REMOTE_ADDR", "")
    if not trusted or not is_trusted(address):
        return address
    for hop in reversed([h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]):
        if not is_trusted(hop):
            return hop
    return address


class RateLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.resolve = import_string(settings.BALLAST_TENANT_RESOLVER)
        self.exempt = tuple(getattr(settings, "BALLAST_RATELIMIT_EXEMPT", DEFAULT_EXEMPT))
        self.slug_field = getattr(settings, "BALLAST_TENANT_SLUG_FIELD", "slug")

    def __call__(self, request):
        if request.path.startswith(self.exempt):
            return self.get_response(request)
        tenant = request.tenant = self.resolve(request)
        if tenant is not None:
            limits = request_limits(tenant.pk)
            usage = hit(tenant_scope(tenant.pk), limits.requests_per_minute + (limits.burst or 0))
        else:
            usage = hit(client_scope(client_ip(request)), getattr(settings, "BALLAST_ANON_REQUESTS_PER_MINUTE", 60))
        if usage is not None and not usage.allowed:
            if tenant is not None:
                record_denial(tenant.pk)
                metrics.ratelimit_denied.labels(tenant=getattr(tenant, self.slug_field, tenant.pk)).inc()
            response = JsonResponse(
                {"error": {"code": "rate_limited", "message": f"more than {usage.limit} requests a minute; try again later"}},
                status=429,
            )
        else:
            response = self.get_response(request)
        for name, value in (headers(usage).items() if usage is not None else ()):
            response[name] = value
        return response

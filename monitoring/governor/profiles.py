"""Route policies: route defaults, then the profile, then the tenant's overrides, then the
environment (the operator's word is last).

Profiles, one word each:
  production   the seeds' production preset: 80% ceilings, brakes, 45 s max wait (the default)
  development  the seeds' development preset: 90% ceilings, more parallelism, more tolerance
  background   5-record batches, 2 s delays, at most 2 at once, 512 MB: no visible impact
  moderate     small batches with short delays: gentle but steady
  fast         a machine given to the sync: big batches, no delays, many calls in flight
"""

from django.conf import settings

from .policy import RoutePolicy

ROUTES: dict[str, dict] = {
    "users": {"max_concurrency": 3, "io_max_concurrency": 3, "sequential_above": 75.0, "brake_after": 5},
    "tokens": {"max_concurrency": 2, "io_max_concurrency": 32, "sequential_above": 70.0, "brake_after": 3},
    "relations": {"max_concurrency": 2, "io_max_concurrency": 2, "sequential_above": 70.0, "brake_after": 4},
    "changes": {"max_concurrency": 1, "io_max_concurrency": 1, "sequential_above": 70.0, "brake_after": 4},  # one feed, read in order
    "run": {"max_concurrency": 2, "io_max_concurrency": 2, "sequential_above": 75.0, "brake_after": 3},
}

PROFILES: dict[str, dict] = {
    "production": {},
    "development": {"max_cpu_percent": 90.0, "max_memory_percent": 90.0, "emergency_percent": 95.0, "max_concurrency": 4, "brake_after": 5},
    "background": {"batch_size": 5, "batch_delay_s": 2.0, "max_concurrency": 2, "io_max_concurrency": 2, "rss_limit_mb": 512.0},
    "moderate": {"batch_size": 25, "batch_delay_s": 0.2, "io_max_concurrency": 8},
    "fast": {"batch_size": 200, "batch_delay_s": 0.0, "max_concurrency": 4, "io_max_concurrency": 64, "max_wait_s": 20.0},
}
DEFAULT_PROFILE = "production"


def profile_names() -> list[str]:
    return list(PROFILES)


def route_policy(route: str, *, profile: str | None = None, overrides: dict | None = None) -> RoutePolicy:
    """The policy for one route; raises ValueError naming a bad profile or setting."""
    profile = profile or getattr(settings, "BALLAST_SYNC_PROFILE", DEFAULT_PROFILE)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    policy = RoutePolicy(**ROUTES[route]).with_overrides(**PROFILES[profile]).with_overrides(**(overrides or {}))
    environment = dict(getattr(settings, "BALLAST_GOVERNOR", {}))
    cap = environment.pop("max_concurrency", None)
    if cap is not None:  # MAX_CONCURRENCY caps every route, I/O-bound calls included
        environment["max_concurrency"] = cap
        environment["io_max_concurrency"] = min(policy.io_max_concurrency, cap)
    return policy.with_overrides(**environment)

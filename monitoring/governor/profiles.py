"""Route policies: route defaults, then the profile, then the tenant's overrides, then the
environment (the operator's word is last).

Profiles, one word each:
  production   80% ceilings, brakes after a few throttles, 45 s max wait (the default)
  development  90% ceilings (95% emergency), up to 4 at once, brakes after 5 throttles
  background   5-record batches, 2 s delays, at most 2 at once, 512 MB: no visible impact
  moderate     small batches with short delays: gentle but steady
  fast         a machine given to the sync: big batches, no delays, many calls in flight
"""

from django.conf import settings

from .policy import RoutePolicy

# A route's defaults. The host project adds one per kind of work it governs (add_routes: Ballast's
# steps, from syncapp's step registry); monitoring's own are the run's and the stress load's.
ROUTES: dict[str, dict] = {
    "run": {"max_concurrency": 2, "io_max_concurrency": 2, "sequential_above": 75.0, "brake_after": 3},
    "stress": {"max_concurrency": 3, "io_max_concurrency": 3, "sequential_above": 75.0, "brake_after": 5},
}

PROFILES: dict[str, dict] = {
    "production": {},
    "development": {"max_cpu_percent": 90.0, "max_memory_percent": 90.0, "emergency_percent": 95.0, "max_concurrency": 4, "brake_after": 5},
    "background": {"batch_size": 5, "batch_delay_s": 2.0, "max_concurrency": 2, "io_max_concurrency": 2, "rss_limit_mb": 512.0},
    "moderate": {"batch_size": 25, "batch_delay_s": 0.2, "io_max_concurrency": 8},
    "fast": {"batch_size": 200, "batch_delay_s": 0.0, "max_concurrency": 4, "io_max_concurrency": 64, "max_wait_s": 20.0},
}
DEFAULT_PROFILE = "production"


def add_routes(routes: dict[str, dict]) -> None:
    """Routes of the host project's work, each with its defaults; checked now, so a bad one fails at start-up."""
    for name, defaults in routes.items():
        RoutePolicy(**defaults)
        ROUTES[name] = dict(defaults)


def profile_names() -> list[str]:
    return list(PROFILES)


def route_policy(route: str, *, profile: str | None = None, overrides: dict | None = None) -> RoutePolicy:
    """The policy for one route; raises ValueError naming a bad profile or setting."""
    profile = profile or getattr(settings, "BALLAST_SYNC_PROFILE", DEFAULT_PROFILE)
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; the routes are {', '.join(ROUTES)}")
    policy = RoutePolicy(**ROUTES[route]).with_overrides(**PROFILES[profile]).with_overrides(**(overrides or {}))
    environment = dict(getattr(settings, "BALLAST_GOVERNOR", {}))
    cap = environment.pop("max_concurrency", None)
    if cap is not None:  # MAX_CONCURRENCY caps every route, I/O-bound calls included
        environment["max_concurrency"] = cap
        environment["io_max_concurrency"] = min(policy.io_max_concurrency, cap)
    return policy.with_overrides(**environment)

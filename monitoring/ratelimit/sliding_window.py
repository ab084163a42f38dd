"""Request rate limits: an exact sliding window per key, decided in one atomic step.

With Redis, one Lua script trims, counts and records a request in a single round trip. Without
it, Django's cache serves (it must be shared by every process: a system check refuses a
process-local cache): a short lock made with cache.add (atomic on every backend) guards the
read-modify-write of the window. The public face is hit() and usage(), returning plain values;
the middleware turns them into headers and 429s.
"""

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

log = logging.getLogger("monitoring.ratelimit")
WINDOW_S = 60

SLIDING_WINDOW = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
if count < limit then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  if count == 0 then oldest = {member, now} end
  return {1, limit - count - 1, tostring(tonumber(oldest[2]) + window - now)}
end
return {0, 0, tostring(tonumber(oldest[2]) + window - now)}
"""


@dataclass(frozen=True)
class Usage:
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the oldest request in the window leaves it


class StoreError(Exception):
    """The limiter's store did not answer."""


class RedisStore:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.script = self.client.register_script(SLIDING_WINDOW)

    def hit(self, key: str, limit: int, window: float, now: float) -> Usage:
        import redis

        try:
            allowed, remaining, reset = self.script(keys=[key], args=[now, window, limit, uuid.uuid4().hex])
        except redis.RedisError as exc:
            raise StoreError(str(exc)) from exc
        return Usage(bool(allowed), limit, int(remaining), max(float(reset), 0.0))

    def reset(self, key: str) -> None:
        self.client.delete(key)

    def count(self, key: str, window: float, now: float) -> int:
        return int(self.client.zcount(key, now - window, "+inf"))


class CacheStore:
    """Through Django's cache: exact as long as the cache is shared (see monitoring.checks)."""

    def __init__(self, alias: str = "default"):
        self.cache = caches[alias]

    LOCK_TTL_S = 10  # far longer than a window update, even on a busy database cache

    def hit(self, key: str, limit: int, window: float, now: float) -> Usage:
        lock = f"{key}:lock"
        deadline, pause = time.monotonic() + self.LOCK_TTL_S, 0.001
        try:
            while not self.cache.add(lock, 1, timeout=self.LOCK_TTL_S):
                if time.monotonic() > deadline:
                    raise StoreError("rate-limit lock not acquired")
                time.sleep(pause)
                pause = min(pause * 2, 0.05)  # back off: every attempt is a write on a database cache
            try:
                stamps = [t for t in self.cache.get(key, []) if t > now - window]
                allowed = len(stamps) < limit
                if allowed:
                    stamps.append(now)
                    self.cache.set(key, stamps, timeout=int(window) + 1)
                reset = stamps[0] + window - now if stamps else window
                return Usage(allowed, limit, max(limit - len(stamps), 0), max(reset, 0.0))
            finally:
                self.cache.delete(lock)
        except StoreError:
            raise
        except Exception as exc:  # the cache's own errors (database, network)
            raise StoreError(str(exc)) from exc

    def reset(self, key: str) -> None:
        self.cache.delete(key)

    def count(self, key: str, window: float, now: float) -> int:
        return len([t for t in self.cache.get(key, []) if t > now - window])


_store = None
_store_lock = threading.Lock()


def store():
    global _store
    with _store_lock:
        if _store is None:
            url = getattr(settings, "REDIS_URL", None)
            _store = RedisStore(url) if url else CacheStore(getattr(settings, "BALLAST_RATELIMIT_CACHE", "default"))
        return _store


def key_for(scope: str) -> str:
    return f"ballast:rl:{scope}"


def tenant_scope(tenant_pk) -> str:
    """A tenant's window: the requests of all its API keys count in one."""
    return f"tenant:{tenant_pk}"


def client_scope(address: str) -> str:
    """An anonymous client's window, by its address."""
    return f"ip:{address}"


def hit(scope: str, limit: int, window: float = WINDOW_S) -> Usage | None:
    """Count one request against scope; None when the store failed and limits fail open."""
    try:
        return store().hit(key_for(scope), limit, window, time.time())
    except StoreError as exc:
        if getattr(settings, "BALLAST_RATELIMIT_FAIL_OPEN", True):
            log.warning("rate-limit store unavailable, letting the request through: %s", exc)
            return None
        log.error("rate-limit store unavailable, refusing the request: %s", exc)
        return Usage(False, limit, 0, 1.0)


def store_keys_clear() -> None:
    """Forget every window (tests; a new deployment's clean slate)."""
    current = store()
    try:
        if isinstance(current, RedisStore):
            for key in current.client.scan_iter(key_for("*")):
                current.client.delete(key)
        else:
            current.cache.clear()
    except Exception:  # an unreachable store, or no table yet: nothing to forget
        pass


def requests_in_window(scope: str, window: float = WINDOW_S) -> int | None:
    """Requests counted in the scope's current window (None when the store does not answer)."""
    try:
        return store().count(key_for(scope), window, time.time())
    except Exception:  # whatever the store's failure, the dashboard shows no figure rather than fail
        return None


def reset(scope: str) -> None:
    """Forget a scope's window (the admin's 'reset rate-limit window')."""
    store().reset(key_for(scope))


def headers(usage: Usage, window: float = WINDOW_S) -> dict[str, str]:
    """The IETF httpapi draft's fields (and Retry-After when refused)."""
    reset = max(int(-(-usage.reset_after // 1)), 0)  # whole seconds, rounded up
    fields = {
        "RateLimit-Policy": f'"default";q={usage.limit};w={int(window)}',
        "RateLimit": f'"default";r={usage.remaining};t={reset}',
    }
    if not usage.allowed:
        fields["Retry-After"] = str(max(reset, 1))
    return fields

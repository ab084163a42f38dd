"""A small per-process cache with a time to live, for hot-path lookups that may be a few seconds stale."""

import threading
import time
from functools import wraps


def ttl_cache(seconds: float, maxsize: int = 4096):
    """Cache a function of hashable arguments for `seconds`; `.clear()` forgets everything."""

    def decorate(function):
        entries: dict = {}
        lock = threading.Lock()

        @wraps(function)
        def cached(*args):
            now = time.monotonic()
            with lock:
                hit = entries.get(args)
                if hit is not None and hit[1] > now:
                    return hit[0]
            value = function(*args)
            with lock:
                if len(entries) >= maxsize:
                    entries.clear()
                entries[args] = (value, now + seconds)
            return value

        cached.clear = entries.clear
        return cached

    return decorate

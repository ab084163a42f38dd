"""Memory levels and giving memory back: what the governor and the health check ask of this
process's memory."""

import ctypes
import ctypes.util

from django.conf import settings


def malloc_trim() -> bool:
    """Give free heap pages back to the OS (glibc only; gc.collect alone returns nothing)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def pressure_level(percent: float) -> str:
    """ok | warning | critical for a percentage (MEMORY_WARNING_THRESHOLD, MEMORY_CRITICAL_THRESHOLD)."""
    if percent >= getattr(settings, "BALLAST_MEMORY_CRITICAL_PERCENT", 85.0):
        return "critical"
    if percent >= getattr(settings, "BALLAST_MEMORY_WARNING_PERCENT", 70.0):
        return "warning"
    return "ok"

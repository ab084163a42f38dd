"""django-q2 entry points of monitoring."""

from .ledger import reclaim_dead


def reclaim_task() -> int:
    """Run every minute by the schedule monitoring's migration makes."""
    return len(reclaim_dead())

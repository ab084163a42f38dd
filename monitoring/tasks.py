"""django-q2 entry points of monitoring."""

from .ledger.allocations import reclaim_dead


def reclaim_task() -> int:
    """Run every minute by the schedule monitoring's migration makes."""
    return len(reclaim_dead())


def leak_check_task() -> int:
    """Run by the leak-check schedule (LEAK_CHECK_MINUTES) in whichever worker takes it."""
    from .observability.leaks import leak_watch

    return len(leak_watch.check())


LEAK_CHECK = "ballast leak check"


def sync_leak_check_schedule(**kwargs) -> None:
    """After migrate: a leak-check schedule exactly when LEAK_CHECK_MINUTES asks for one."""
    from django.conf import settings
    from django_q.models import Schedule

    minutes = getattr(settings, "BALLAST_LEAK_CHECK_MINUTES", 0)
    if not minutes:
        Schedule.objects.filter(name=LEAK_CHECK).delete()
        return
    Schedule.objects.update_or_create(
        name=LEAK_CHECK,
        defaults={"func": "monitoring.tasks.leak_check_task", "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
    )

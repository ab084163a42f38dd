import os

from django.apps import AppConfig


def forget_inherited_connection_pools() -> None:
    """In a forked child, drop the parent's psycopg pools without closing them.

    Closing would send a terminate message down sockets the parent still uses;
    keeping the objects referenced stops their finalizers doing the same.
    """
    try:
        from django.db.backends.postgresql.base import DatabaseWrapper
    except ImportError:  # psycopg missing: nothing to forget
        return
    _ORPHANED_POOLS.extend(DatabaseWrapper._connection_pools.values())
    DatabaseWrapper._connection_pools.clear()


_ORPHANED_POOLS: list = []


def worker_started(sender, proc_name="", **kwargs) -> None:
    """A django-q2 worker was forked (its main thread): SIGTERM ends its work gracefully, and its
    watch heartbeats, reclaims what dead processes left, and notices a lost supervisor."""
    import signal

    from .ledger.allocations import watch
    from .ledger.processes import request_stop_on_signals, stop_if_orphaned

    request_stop_on_signals(signal.SIGTERM, exit_when_idle=True)
    parent = os.getppid()
    keeper = watch()
    keeper.resident = True
    keeper.ticks.append(lambda: stop_if_orphaned(parent))
    keeper.start()


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self):
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate
        from django_q.signals import post_spawn

        from . import (
            checks,  # noqa: F401  (registers the system checks)
            metrics,
        )
        from .governor.readings import database
        from .models import ThrottleEvent
        from .observability.alerts import resource_alerts
        from .signals import reading_taken
        from .tasks import sync_leak_check_schedule

        post_migrate.connect(sync_leak_check_schedule, sender=self, dispatch_uid="ballast-leak-check")
        reading_taken.connect(resource_alerts.on_reading, dispatch_uid="ballast-resource-alerts")
        post_spawn.connect(worker_started, dispatch_uid="ballast-worker-started")
        metrics.start_at_zero(metrics.throttle_events, kind=ThrottleEvent.Kind.values, route=["run"])  # the steps' routes: syncapp
        # The database backends serving this process count as its own CPU (readings.database).
        connection_created.connect(database.connection_created, dispatch_uid="ballast-database-cpu")

        # django-q2 forks its workers; Django's psycopg pool is not fork-safe, and the parent's
        # connections (and their backends) are not the child's.
        os.register_at_fork(after_in_child=forget_inherited_connection_pools)
        os.register_at_fork(after_in_child=database.database_cpu.forget)

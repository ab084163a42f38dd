from django.apps import AppConfig


class SyncappConfig(AppConfig):
    name = "syncapp"
    verbose_name = "Directory sync"

    def ready(self):
        from monitoring import metrics
        from monitoring.governor.profiles import add_routes
        from monitoring.models import ThrottleEvent

        from . import checks  # noqa: F401  (registers the system checks)
        from . import signals  # noqa: F401  (keeps tenant schedules in step)
        from . import timeline  # noqa: F401  (SQLite connections get the functions the timeline's trigger calls)
        from .models import COUNTERS, ENDED, Status
        from .step_registry import STEP_NAMES, STEPS

        add_routes({name: step.governor for name, step in STEPS.items()})  # each step is governed on a route of its own
        metrics.start_at_zero(metrics.throttle_events, kind=ThrottleEvent.Kind.values, route=STEP_NAMES)

        metrics.start_at_zero(metrics.sync_runs, status=ENDED - {Status.SKIPPED})  # a run ends; only its steps are skipped
        metrics.start_at_zero(metrics.sync_rows, step=STEP_NAMES, outcome=COUNTERS)
        metrics.start_at_zero(metrics.sync_duration, step=STEP_NAMES)

from django.apps import AppConfig


class SyncappConfig(AppConfig):
    name = "syncapp"
    verbose_name = "Directory sync"

    def ready(self):
        from monitoring import metrics

        from . import signals  # noqa: F401  (keeps tenant schedules in step)
        from . import timeline  # noqa: F401  (SQLite connections get the functions the timeline's trigger calls)
        from .models import COUNTERS, ENDED, STEP_NAMES, Status

        metrics.start_at_zero(metrics.sync_runs, status=ENDED - {Status.SKIPPED})  # a run ends; only its steps are skipped
        metrics.start_at_zero(metrics.sync_rows, step=STEP_NAMES, outcome=COUNTERS)
        metrics.start_at_zero(metrics.sync_duration, step=STEP_NAMES)

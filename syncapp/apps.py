from django.apps import AppConfig


class SyncappConfig(AppConfig):
    name = "syncapp"
    verbose_name = "Directory sync"

    def ready(self):
        from . import signals  # noqa: F401  (keeps tenant schedules in step)
        from . import timeline  # noqa: F401  (SQLite connections get the functions the timeline's trigger calls)

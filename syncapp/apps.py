from django.apps import AppConfig


class SyncappConfig(AppConfig):
    name = "syncapp"
    verbose_name = "Directory sync"

    def ready(self):
        from . import signals  # noqa: F401  (keeps tenant schedules in step)

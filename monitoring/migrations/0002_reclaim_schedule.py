from django.db import migrations

NAME = "ballast reclaim dead allocations"


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME, defaults={"func": "monitoring.tasks.reclaim_task", "schedule_type": "I", "minutes": 1, "repeats": -1}
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_initial"), ("django_q", "__latest__")]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]

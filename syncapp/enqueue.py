"""Hand runs and steps to the cluster's queue (django-q2), by dotted name: the tasks in
syncapp.tasks carry them out. Nothing here imports the steps, so anyone may queue a run."""

from django_q.tasks import async_task

from .models import SyncRun, SyncStep


def enqueue_run(run_id: int) -> None:
    task_id = async_task("syncapp.tasks.run_task", run_id, task_name=f"ballast run {run_id}", group=f"run-{run_id}")
    SyncRun.objects.filter(pk=run_id).update(task_id=task_id or "")


def enqueue_steps(steps: list[SyncStep]) -> None:
    for step in steps:
        task_id = async_task(
            "syncapp.tasks.step_task", step.pk, task_name=f"ballast run {step.run_id} {step.name}", group=f"run-{step.run_id}"
        )
        SyncStep.objects.filter(pk=step.pk).update(task_id=task_id or "")

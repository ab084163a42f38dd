"""Carrying a step out (syncapp.steps.execute): how it ends when a step before it failed, it is cancelled, or secrets are in an error."""


import pytest

from syncapp.models import DirectoryUser, Status, SyncRun, SyncStep
from syncapp.runs import cancel_run, start_run

from ...conftest import demo_org, sync_here
from ...factories import TenantFactory
from ...fakegoogle import USERS_PATH, google_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]


def test_relations_are_skipped_when_tokens_fail(google_tenant, fake_google):
    fake_google.load(*demo_org(5))
    fake_google.fail_next(USERS_PATH, 401, google_error(401, "Invalid Credentials", "authError"))
    run = sync_here(google_tenant, steps="tokens,relations")
    assert run.step_records.get(name="tokens").status == Status.FAILED
    assert run.step_records.get(name="relations").status == Status.SKIPPED
    assert run.status == Status.FAILED


def test_secrets_never_reach_the_error_text(fake_google):
    tenant = TenantFactory(provider="google", provider_config={"base_url": fake_google.url, "access_token": "s3cret-value"})
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "bad token s3cret-value", "badRequest"))
    run = sync_here(tenant, steps="users")
    assert run.status == Status.FAILED
    assert "s3cret-value" not in run.error and "s3cret-value" not in run.step_records.get().error
    assert "400 bad token" in run.error


def test_cancelling_a_queued_run_stops_every_step():
    tenant = TenantFactory()
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.ADMIN, enqueue=False)
    assert cancel_run(run)
    run.refresh_from_db()
    assert run.status == Status.CANCELLED and run.finished_at
    assert set(SyncStep.objects.filter(run=run).values_list("status", flat=True)) == {Status.CANCELLED}
    assert not cancel_run(run)  # already ended


def test_a_running_step_stops_after_its_current_batch_when_cancelled(settings, google_tenant, fake_google, monkeypatch):
    settings.BALLAST_GOVERNOR = {"batch_size": 10}
    fake_google.load(*demo_org(100))
    run = start_run(tenant=google_tenant, trigger=SyncRun.Trigger.ADMIN, steps="users", enqueue=False)
    from syncapp.runs import begin_run
    from syncapp.steps import execute

    def hold_then_cancel(allocation, name):
        holder = hold(allocation, name)
        SyncRun.objects.filter(pk=run.pk).update(status=Status.CANCELLED)  # as cancel_run does, as the step starts
        return holder

    hold = execute.hold
    monkeypatch.setattr(execute, "hold", hold_then_cancel)
    [step] = begin_run(run.pk)
    execute.execute_step(step.pk)
    step.refresh_from_db()
    assert step.status == Status.CANCELLED
    assert DirectoryUser.objects.count() == 0


def test_statements_outside_a_transaction_wait_for_the_duty_cycle_and_a_transaction_never_does():
    from django.db import connection, transaction

    from syncapp.steps.execute import _paced

    class Governor:
        settled_in_transaction = settled = 0

        def settle(self):
            self.settled += 1
            self.settled_in_transaction += connection.in_atomic_block

    governor = Governor()
    with connection.execute_wrapper(_paced(governor)):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 1")
        assert governor.settled == 2  # what the database did for the sync is paid for before its next statement
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.execute("SELECT 1")
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert governor.settled >= 3 and governor.settled_in_transaction == 0  # a transaction is never held open by a pause

"""The users step (syncapp.steps.users): invalid records counted and skipped, a failed page keeps what was stored."""


import pytest

from syncapp.models import DirectoryUser, Status

from ...conftest import demo_org, step_counters as counters, sync_here
from ...fakegoogle import USERS_PATH

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]


def test_invalid_records_are_counted_sampled_and_skipped(google_tenant, fake_google):
    users, tokens = demo_org(30)
    bad_users = [
        {"primaryEmail": "no-id@example.org"},
        {"id": "900", "primaryEmail": ""},
        {"id": "901", "primaryEmail": "nul@example.org", "name": {"fullName": "Bad\x00Name"}},
        {"id": "902", "primaryEmail": "long@example.org", "orgUnitPath": "/" + "x" * 300},
    ]
    tokens[users[0]["id"]] = tokens[users[0]["id"]] + [{"displayText": "no client id"}, {"clientId": "x.apps", "scopes": "openid"}]
    fake_google.load(users[:10] + bad_users + users[10:], tokens)

    run = sync_here(google_tenant)
    assert run.status == Status.COMPLETED_WITH_ERRORS
    user_step = run.step_records.get(name="users")
    assert (user_step.received, user_step.created, user_step.invalid) == (34, 30, 4)
    assert user_step.invalid_samples == [
        {"key": None, "reason": "missing id"},
        {"key": "900", "reason": "missing primaryEmail"},
        {"key": "901", "reason": "name.fullName contains a NUL byte"},
        {"key": "902", "reason": "orgUnitPath longer than 255 characters"},
    ]
    token_step = run.step_records.get(name="tokens")
    assert token_step.invalid == 2
    assert {s["reason"] for s in token_step.invalid_samples} == {"missing clientId", "scopes is not a list of text"}
    assert DirectoryUser.objects.filter(tenant=google_tenant).count() == 30
    assert not DirectoryUser.objects.filter(external_id__in=["900", "901", "902"]).exists()


def test_a_record_that_turns_malformed_is_not_marked_deleted(google_tenant, fake_google):
    users, tokens = demo_org(5)
    fake_google.load(users, tokens)
    sync_here(google_tenant)
    users[2] = {**users[2], "primaryEmail": "broken"}
    fake_google.load(users, tokens)
    run = sync_here(google_tenant)
    assert counters(run, "users")["invalid"] == 1
    assert counters(run, "users")["deactivated"] == 0
    assert DirectoryUser.objects.filter(tenant=google_tenant, deleted_at__isnull=False).count() == 0


def test_a_failing_users_page_fails_the_step_and_keeps_what_was_stored(google_tenant, fake_google):
    users, tokens = demo_org(700)
    fake_google.load(users, tokens)
    sync_here(google_tenant, steps="users")
    fake_google.load(users[:600], tokens)
    # The second page fails for good: the step fails, nobody is marked deleted.
    fake_google.fail_next(USERS_PATH, 200, {"users": users[:500], "nextPageToken": "500"})
    fake_google.fail_next(USERS_PATH, 503, times=4)
    run = sync_here(google_tenant, steps="users")
    step = run.step_records.get(name="users")
    assert step.status == Status.FAILED
    assert "gave up after 4 attempts: 503" in step.error
    assert run.status == Status.FAILED and "users: GET" in run.error
    assert DirectoryUser.objects.filter(deleted_at__isnull=False).count() == 0
    assert step.unchanged == 500

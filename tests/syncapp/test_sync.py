"""The sync end to end in this process: counters, idempotence, invalid records, deletion detection, cancelling."""

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from syncapp.models import Application, DirectoryUser, Status, SyncRun, SyncStep, Token, UserAppRelation
from syncapp.runs import RunRefused, cancel_run, start_run

from syncapp.providers import Page
from syncapp.steps import _OpenPages

from ..conftest import demo_org, sync_here
from ..factories import TenantFactory
from ..fakegoogle import USERS_PATH, google_error


@pytest.fixture(autouse=True)
def batches_as_the_governor_sizes_them(monkeypatch):
    """These tests set batch sizes to place checkpoints; the COPY writer's scaling would move them."""
    monkeypatch.setattr("syncapp.steps.BATCH_SCALE", {"copy": 1, "orm": 1})

pytestmark = pytest.mark.django_db(transaction=True)


def counters(run: SyncRun, step: str) -> dict:
    s = run.step_records.get(name=step)
    return {k: getattr(s, k) for k in ("received", "created", "updated", "unchanged", "deactivated", "invalid", "failed")}


def test_demo_sync_stores_the_organisation_and_a_second_run_changes_nothing():
    tenant = TenantFactory(provider_config={"users": 300, "apps": 12, "seed": 5})
    users, tokens = demo_org(300, seed=5, apps=12)
    n_tokens = sum(len(t) for t in tokens.values())

    first = sync_here(tenant)
    assert first.status == Status.COMPLETED
    assert counters(first, "users") == dict(received=300, created=300, updated=0, unchanged=0, deactivated=0, invalid=0, failed=0)
    assert counters(first, "tokens")["created"] == n_tokens
    assert DirectoryUser.objects.filter(tenant=tenant).count() == 300
    assert Token.objects.filter(tenant=tenant).count() == n_tokens
    assert UserAppRelation.objects.filter(tenant=tenant, active=True).count() == n_tokens
    assert Application.objects.filter(tenant=tenant).count() == len({t["clientId"] for ts in tokens.values() for t in ts})
    suspended = {u["id"] for u in users if u["suspended"]}
    assert set(DirectoryUser.objects.filter(tenant=tenant, is_suspended=True).values_list("external_id", flat=True)) == suspended

    stored = list(DirectoryUser.objects.filter(tenant=tenant).order_by("pk").values("pk", "full_name", "first_seen"))
    second = sync_here(tenant)
    assert second.status == Status.COMPLETED
    for step in ("users", "tokens", "relations"):
        c = counters(second, step)
        assert c["created"] == c["updated"] == c["deactivated"] == 0, step
        assert c["unchanged"] == c["received"] > 0, step
    assert list(DirectoryUser.objects.filter(tenant=tenant).order_by("pk").values("pk", "full_name", "first_seen")) == stored


def test_each_batch_leaves_a_checkpoint(settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 40}
    tenant = TenantFactory(provider_config={"users": 100, "apps": 5, "seed": 1})
    run = sync_here(tenant, steps="users")
    checkpoint = run.step_records.get(name="users").checkpoint
    written = datetime.fromisoformat(checkpoint.pop("at"))  # a page token's age decides whether it can resume
    assert checkpoint == {"page_token": None, "done_in_page": 100, "resumes": 0}
    assert abs((timezone.now() - written).total_seconds()) < 60
    relations = sync_here(tenant, steps="relations").step_records.get(name="relations")
    assert relations.received == 0 and relations.status == Status.COMPLETED  # no tokens synced yet


def test_changes_at_the_source_are_counted_as_updates(google_tenant, fake_google):
    users, tokens = demo_org(20)
    fake_google.load(users, tokens)
    sync_here(google_tenant)
    users[0] = {**users[0], "suspended": not users[0]["suspended"], "name": {"fullName": "Renamed Person"}}
    some_user = next(uid for uid, ts in tokens.items() if ts)
    tokens[some_user] = [{**tokens[some_user][0], "scopes": ["openid", "https://example.org/new"]}] + tokens[some_user][1:]
    renamed_app = tokens[some_user][-1]["clientId"]
    tokens = {u: [{**t, "displayText": "Renamed App"} if t["clientId"] == renamed_app else t for t in ts] for u, ts in tokens.items()}
    fake_google.load(users, tokens)

    run = sync_here(google_tenant)
    assert counters(run, "users")["updated"] == 1
    assert counters(run, "tokens")["updated"] == 1
    assert counters(run, "relations")["updated"] == 1
    assert DirectoryUser.objects.get(external_id=users[0]["id"]).full_name == "Renamed Person"
    assert Application.objects.get(client_id=renamed_app).display_name == "Renamed App"


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


def test_removed_users_and_revoked_tokens_are_marked_exactly(google_tenant, fake_google):
    users, tokens = demo_org(60)
    fake_google.load(users, tokens)
    sync_here(google_tenant)

    removed = [u for u in users[:5]]
    revoked_user = next(u["id"] for u in users[5:] if len(tokens[u["id"]]) >= 2)
    revoked_client = tokens[revoked_user][0]["clientId"]
    tokens[revoked_user] = tokens[revoked_user][1:]
    fake_google.load(users[5:], tokens)
    expected_revoked = sum(len(tokens[u["id"]]) for u in removed) + 1

    run = sync_here(google_tenant)
    assert run.status == Status.COMPLETED
    assert counters(run, "users")["deactivated"] == 5
    assert counters(run, "tokens")["deactivated"] == expected_revoked
    assert counters(run, "relations")["deactivated"] == expected_revoked
    deleted = set(DirectoryUser.objects.filter(deleted_at__isnull=False).values_list("external_id", flat=True))
    assert deleted == {u["id"] for u in removed}
    revoked = Token.objects.filter(revoked_at__isnull=False)
    assert revoked.count() == expected_revoked
    assert revoked.filter(user__external_id=revoked_user, application__client_id=revoked_client).exists()
    assert UserAppRelation.objects.filter(active=False).count() == expected_revoked
    assert DirectoryUser.objects.count() == 60  # marked, never deleted

    # A user who comes back is live again.
    fake_google.load(users, tokens)
    again = sync_here(google_tenant)
    assert counters(again, "users")["updated"] == 5
    assert DirectoryUser.objects.filter(deleted_at__isnull=False).count() == 0


def test_nothing_is_marked_after_a_partial_read(google_tenant, fake_google):
    users, tokens = demo_org(30)
    fake_google.load(users, tokens)
    sync_here(google_tenant)
    fake_google.load(users[:10], {})  # users and tokens vanish…
    victim = users[3]["id"]
    fake_google.fail_next(f"{USERS_PATH}/{victim}/tokens", 404, google_error(404, "Resource Not Found: userKey", "notFound"))

    run = sync_here(google_tenant, steps="tokens")
    token_step = run.step_records.get(name="tokens")
    assert token_step.failed == 1  # …but one tokens.list call failed: no revocation at all
    assert token_step.deactivated == 0
    assert run.status == Status.COMPLETED_WITH_ERRORS
    assert Token.objects.filter(revoked_at__isnull=False).count() == 0


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


def test_the_tokens_checkpoint_is_the_oldest_page_not_yet_written():
    pages = _OpenPages(None)
    first, second = Page([], token=None, next_token="p2"), Page([], token="p2", next_token="p3")
    pages.opened(first, [("a", ""), ("b", "")], {"a": 1, "b": 2})
    pages.opened(second, [("c", ""), ("a", "")], {"c": 3, "a": 1})  # a listed on both pages: called twice
    assert pages.checkpoint() == {"page_token": None}
    for user in ("c", "a", "b"):  # the second page's c and the first's a and b answer
        pages.answered(user)
    assert pages.checkpoint() == {"page_token": "p2"}  # the first page is done, the second waits for its a
    work = pages.answered("a")
    work.unwritten = 2  # its grants are read, not yet committed
    assert pages.checkpoint() == {"page_token": "p2"}
    work.unwritten = 0
    assert pages.checkpoint() == {"page_token": "p3"}  # everything read is written: go on from the next


def test_a_tokens_step_that_stops_between_pages_resumes_exactly(google_tenant, fake_google, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    users, tokens = demo_org(120)
    fake_google.load(users, tokens)
    fake_google.max_page = 25
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "Bad Request", "badRequest"), after=3)  # the 4th page fails
    stopped = sync_here(google_tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and "400 Bad Request" in stopped.error
    assert stopped.checkpoint["page_token"] in (None, "25", "50", "75")  # a page whose users were not all written
    resumed = sync_here(google_tenant, steps="tokens").step_records.get()
    assert resumed.status == Status.COMPLETED and resumed.resumed_from_id == stopped.pk
    expected = {(u, t["clientId"]) for u, ts in tokens.items() for t in ts}
    stored = set(Token.objects.values_list("user__external_id", "application__client_id"))
    assert stored == expected and Token.objects.count() == len(expected)  # exactly, no duplicate
    assert Token.objects.filter(revoked_at__isnull=False).count() == 0


def _stopped_tokens_step(google_tenant, fake_google, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    users, tokens = demo_org(120)
    fake_google.load(users, tokens)
    fake_google.max_page = 25
    fake_google.fail_next(USERS_PATH, 500, google_error(500, "Backend Error", "backendError"), after=3)
    google_tenant.provider_config = {**google_tenant.provider_config, "max_attempts": 1}
    google_tenant.save()
    stopped = sync_here(google_tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and stopped.checkpoint["page_token"] in ("25", "50", "75")
    google_tenant.provider_config = {**google_tenant.provider_config, "max_attempts": 4}
    google_tenant.save()
    return stopped, {(u, t["clientId"]) for u, ts in tokens.items() for t in ts}


def test_a_page_token_the_provider_refuses_restarts_the_read_from_the_start(google_tenant, fake_google, settings):
    stopped, expected = _stopped_tokens_step(google_tenant, fake_google, settings)
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "Invalid page token", "invalid"))  # expired at Google
    step = sync_here(google_tenant, steps="tokens").step_records.get()
    assert step.status == Status.COMPLETED and step.resumed_from_id == stopped.pk
    assert step.received == len(expected)  # the whole source, read again from its first page
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == expected
    assert Token.objects.count() == len(expected) and not Token.objects.filter(revoked_at__isnull=False).exists()


def test_a_checkpoint_older_than_a_page_token_lives_is_not_resumed(google_tenant, fake_google, settings):
    stopped, expected = _stopped_tokens_step(google_tenant, fake_google, settings)
    three_days_ago = (timezone.now() - timedelta(days=3)).isoformat()
    SyncStep.objects.filter(pk=stopped.pk).update(checkpoint={**stopped.checkpoint, "at": three_days_ago})
    before = len(fake_google.requests)
    step = sync_here(google_tenant, steps="tokens").step_records.get()
    assert step.status == Status.COMPLETED and step.resumed_from_id is None
    first_page = next(query for _, path, query in fake_google.requests[before:] if path == USERS_PATH)
    assert "pageToken" not in first_page  # a full read, from the first page
    assert step.received == len(expected)
    assert set(Token.objects.values_list("user__external_id", "application__client_id")) == expected


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
    from syncapp import steps
    from syncapp.runs import begin_run

    def hold_then_cancel(allocation, name):
        holder = hold(allocation, name)
        SyncRun.objects.filter(pk=run.pk).update(status=Status.CANCELLED)  # as cancel_run does, as the step starts
        return holder

    hold = steps.hold
    monkeypatch.setattr(steps, "hold", hold_then_cancel)
    [step] = begin_run(run.pk)
    steps.execute_step(step.pk)
    step.refresh_from_db()
    assert step.status == Status.CANCELLED
    assert DirectoryUser.objects.count() == 0


def test_unknown_steps_and_inactive_tenants_are_refused():
    tenant = TenantFactory(active=False)
    with pytest.raises(RunRefused, match="unknown steps bogus"):
        start_run(tenant=tenant, trigger="command", steps="users,bogus")
    with pytest.raises(RunRefused, match="is not active"):
        start_run(tenant=tenant, trigger="command")

"""The changes step (syncapp.steps.changes) against the loopback Google server's Reports API:
grants and revocations made after a full sync, late events, overlapping windows, unknown users,
the cursor; and the proof: a full sync afterwards finds nothing to change."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from syncapp.models import AppliedChange, Application, Status, Tenant, Token, UserAppRelation
from syncapp.steps.changes import parse_activity

from ...conftest import demo_org, step_counters as counters, sync_here
from ...fakegoogle import ACTIVITY_PATH

pytestmark = [pytest.mark.django_db(transaction=True)]

NEW_APP = {"clientId": "new-app.apps.googleusercontent.com", "displayText": "New App", "anonymous": False, "nativeApp": False,
           "scopes": ["openid", "https://www.googleapis.com/auth/drive.readonly"]}


def inventory(tenant) -> dict:
    """What a full sync is judged by: active tokens with scopes, relations' state, applications."""
    return {
        "tokens": {(u, c, tuple(s)) for u, c, s in Token.objects.filter(tenant=tenant, revoked_at__isnull=True)
                   .values_list("user__external_id", "application__client_id", "scopes")},
        "relations": {(u, c, a, tuple(s)) for u, c, a, s in UserAppRelation.objects.filter(tenant=tenant)
                      .values_list("user__external_id", "application__client_id", "active", "scopes")},
        "applications": set(Application.objects.filter(tenant=tenant).values_list("client_id", "display_name")),
    }


@pytest.fixture
def synced(google_tenant, fake_google):
    """A tenant after a full sync: its cursor set to the tokens step's start."""
    users, tokens = demo_org(30, apps=6)
    fake_google.load(users, tokens)
    run = sync_here(google_tenant)
    assert run.status == Status.COMPLETED
    google_tenant.refresh_from_db()
    return google_tenant, users, tokens


def changes_run(tenant):
    run = sync_here(tenant, steps="changes")
    return run, run.step_records.get()


def test_a_full_tokens_step_sets_the_cursor_to_its_start(synced):
    tenant, _, _ = synced
    tokens_step = tenant.runs.get().step_records.get(name="tokens")
    assert tenant.changes_cursor == tokens_step.started_at


def test_grants_and_revocations_after_a_full_sync_are_applied_as_a_full_sync_would_store_them(synced, fake_google):
    tenant, users, tokens = synced
    now = timezone.now()
    with_tokens = [u for u, ts in tokens.items() if len(ts) >= 2]
    a, b, c = with_tokens[:3]
    fake_google.grant(a, NEW_APP, now)  # a new application
    more = {**tokens[b][0], "scopes": ["https://www.googleapis.com/auth/calendar"]}
    fake_google.grant(b, more, now + timedelta(seconds=1))  # more scopes for a token it has
    fake_google.revoke(c, tokens[c][0]["clientId"], now + timedelta(seconds=2))
    fake_google.revoke(c, "never-granted.apps.googleusercontent.com", now + timedelta(seconds=3))  # changes nothing
    fake_google.log("activity", a, NEW_APP["clientId"], now + timedelta(seconds=4))  # a token used: not a change
    calls_before = len(fake_google.requests)

    run, step = changes_run(tenant)
    assert run.status == Status.COMPLETED, run.error
    assert (step.received, step.created, step.updated, step.deactivated, step.invalid) == (5, 1, 1, 1, 0)
    assert fake_google.paths()[calls_before:] == [ACTIVITY_PATH]  # one call, no tokens.list
    tenant.refresh_from_db()
    assert tenant.changes_cursor == now + timedelta(seconds=4) - timedelta(microseconds=(now + timedelta(seconds=4)).microsecond % 1000)

    after_changes = inventory(tenant)
    full = sync_here(tenant)
    assert counters(full, "tokens")["created"] == counters(full, "tokens")["updated"] == counters(full, "tokens")["deactivated"] == 0
    assert inventory(tenant) == after_changes  # the feed left what a full sync stores


def test_overlapping_windows_apply_each_event_once_and_late_events_still_apply(synced, fake_google, settings):
    settings.BALLAST_CHANGES_OVERLAP_S = 900
    tenant, users, tokens = synced
    user = next(u for u, ts in tokens.items() if ts)
    fake_google.grant(user, NEW_APP, timezone.now())
    first, step = changes_run(tenant)
    assert step.created == 1
    late_user = next(u for u, ts in tokens.items() if ts and u != user)
    late_token = {**NEW_APP, "clientId": "late-app.apps.googleusercontent.com", "displayText": "Late App"}
    fake_google.grant(late_user, late_token, timezone.now(), logged=False)  # granted; the feed tells it late,
    tenant.refresh_from_db()
    fake_google.log("authorize", late_user, late_token["clientId"], tenant.changes_cursor - timedelta(seconds=300),
                    app_name="Late App", scopes=late_token["scopes"])  # dated before the cursor, inside the overlap

    second, step = changes_run(tenant)
    assert (step.received, step.created, step.updated, step.unchanged) == (2, 1, 0, 1)  # the first grant: skipped, applied already
    assert AppliedChange.objects.filter(tenant=tenant).count() == 2
    assert Token.objects.get(user__external_id=late_user, application__client_id=late_token["clientId"]).revoked_at is None
    third, step = changes_run(tenant)
    assert (step.created, step.updated, step.deactivated, step.unchanged) == (0, 0, 0, 2)


def test_an_event_of_a_user_not_in_the_directory_is_invalid_in_every_run_that_reads_it(synced, fake_google):
    tenant, _, _ = synced
    fake_google.grant("999999", NEW_APP, timezone.now())  # nobody the directory holds
    for _ in range(2):
        run, step = changes_run(tenant)
        assert run.status == Status.COMPLETED_WITH_ERRORS
        assert step.invalid == 1 and "not a user of the directory" in step.invalid_samples[0]["reason"]
    assert not Token.objects.filter(application__client_id=NEW_APP["clientId"]).exists()


def test_without_a_cursor_the_step_refuses_and_sync_exits_non_zero(google_tenant, fake_google):
    with pytest.raises(CommandError, match="a full sync must complete first") as refused:
        call_command("sync", "acme", "--steps", "changes", "--wait", stdout=StringIO(), stderr=StringIO())
    assert refused.value.returncode == 1
    assert not fake_google.paths(ACTIVITY_PATH)  # refused before any call
    step = Tenant.objects.get(slug="acme").runs.get().step_records.get()
    assert step.status == Status.FAILED and step.stop_reason == "config"


def test_changes_runs_alone():
    from django.core.exceptions import ValidationError

    from syncapp.forms import clean_steps

    assert clean_steps("changes") == ["changes"]
    assert clean_steps(None) == ["users", "tokens", "relations"]
    with pytest.raises(ValidationError, match="changes runs alone"):
        clean_steps("tokens,changes")


def test_a_provider_without_a_feed_is_refused_in_one_line(db):
    from django.core.exceptions import ValidationError

    from syncapp.runs import start_run
    from syncapp.tasks import run_in_process

    from ...factories import TenantFactory

    tenant = TenantFactory(provider_config={"users": 5})
    Tenant.objects.filter(pk=tenant.pk).update(changes_cursor=timezone.now())
    with pytest.raises(ValidationError, match="the demo provider has no changes step"):  # never started
        changes_run(tenant)
    # A run queued while the tenant had a provider with a feed, carried out after it changed:
    Tenant.objects.filter(pk=tenant.pk).update(provider="google")
    run = start_run(tenant=Tenant.objects.get(pk=tenant.pk), trigger="command", steps="changes", enqueue=False)
    Tenant.objects.filter(pk=tenant.pk).update(provider="demo")
    run_in_process(run.pk)
    step = run.step_records.get()
    assert step.status == Status.FAILED and step.error == "the demo provider has no feed of token changes: full syncs keep its tokens"


@pytest.mark.parametrize("client_type", ["NATIVE_IOS", "NATIVE_ANDROID", "NATIVE_APPLICATION", "NATIVE_DESKTOP"])
def test_every_native_client_type_is_stored_native_and_a_full_sync_agrees(synced, fake_google, client_type):
    tenant, users, _ = synced
    app = {**NEW_APP, "clientId": "phone-app.apps.googleusercontent.com", "displayText": "Phone App", "nativeApp": True}
    fake_google.grant(users[0]["id"], app, timezone.now(), client_type=client_type)
    fake_google.grant(users[1]["id"], NEW_APP, timezone.now())  # WEB

    run, step = changes_run(tenant)
    assert run.status == Status.COMPLETED and step.created == 2
    phone = Application.objects.get(tenant=tenant, client_id=app["clientId"])
    assert (phone.client_type, phone.native_app) == (client_type, True)
    assert Token.objects.get(application=phone).native_app
    web = Application.objects.get(tenant=tenant, client_id=NEW_APP["clientId"])
    assert (web.client_type, web.native_app) == ("WEB", False)

    full = sync_here(tenant)
    assert counters(full, "tokens")["updated"] == 0  # nothing to flip back
    phone.refresh_from_db()
    assert (phone.client_type, phone.native_app) == (client_type, True)
    assert Token.objects.get(application=phone).native_app


def test_activities_parse_into_their_changes():
    item = {"id": {"time": "2026-11-24T10:00:00.123Z", "uniqueQualifier": "-42"}, "actor": {"email": "ada@example.org", "profileId": "101"},
            "events": [{"name": "authorize", "parameters": [{"name": "client_id", "value": "a.apps"}, {"name": "app_name", "value": "A"},
                                                              {"name": "scope", "multiValue": ["openid", "email", "openid"]}]},
                       {"name": "activity", "parameters": [{"name": "client_id", "value": "a.apps"}]}]}
    _, [change, use] = parse_activity(item)
    assert (change.name, change.user_id, change.client_id, change.app_name, change.scopes) == ("authorize", "101", "a.apps", "A", ("email", "openid"))
    assert change.time.isoformat() == "2026-11-24T10:00:00.123000+00:00"
    assert (use.name, use.user_id, use.client_id, use.time) == ("activity", "101", "a.apps", change.time)  # a use: sets last used


def test_a_changes_step_that_failed_part_way_is_carried_on_by_the_next_each_event_once(synced, fake_google, settings, monkeypatch):
    from syncapp.steps import changes

    settings.BALLAST_GOVERNOR = {"batch_size": 2}
    monkeypatch.setattr("syncapp.steps.context.BATCH_SCALE", {"copy": 1, "orm": 1})
    tenant, users, tokens = synced
    now = timezone.now()
    for n, user in enumerate([u["id"] for u in users[:7]]):
        fake_google.grant(user, {**NEW_APP, "clientId": f"app-{n}.apps"}, now + timedelta(seconds=n))
    real, batches = changes._write, {"n": 0}

    def failing_third_batch(tenant_id, batch):
        batches["n"] += 1
        if batches["n"] == 3:
            raise RuntimeError("scripted crash")
        return real(tenant_id, batch)

    monkeypatch.setattr(changes, "_write", failing_third_batch)
    cursor = Tenant.objects.get(pk=tenant.pk).changes_cursor
    failed, step = changes_run(tenant)
    assert step.status == Status.FAILED and step.created == 4  # two batches of two committed
    assert Tenant.objects.get(pk=tenant.pk).changes_cursor == cursor  # not moved past events not applied
    monkeypatch.setattr(changes, "_write", real)
    carried, step = changes_run(tenant)
    assert step.status == Status.COMPLETED and (step.created, step.unchanged) == (3, 4)
    assert Token.objects.filter(application__client_id__startswith="app-").count() == 7


def test_activity_events_set_each_tokens_last_use_never_back_and_never_a_row_per_event(synced, fake_google):
    tenant, users, tokens = synced
    now = timezone.now().replace(microsecond=0)
    user = next(u for u, ts in tokens.items() if ts)
    client = tokens[user][0]["clientId"]
    for seconds in (1, 3, 2):  # three uses of one token, the latest not last in the feed
        fake_google.log("activity", user, client, now + timedelta(seconds=seconds))
    fake_google.log("activity", "nobody-in-the-directory", client, now)
    run, step = changes_run(tenant)
    assert run.status == Status.COMPLETED and step.invalid == 0  # a use by a stranger tells nothing, wrongs nothing
    token = Token.objects.get(user__external_id=user, application__client_id=client)
    assert token.last_used_at == now + timedelta(seconds=3)
    assert Token.objects.filter(last_used_at__isnull=False).count() == 1
    fake_google.log("activity", user, client, now)  # an older use read later (the windows overlap)
    changes_run(tenant)
    assert Token.objects.get(pk=token.pk).last_used_at == now + timedelta(seconds=3)


def test_the_unused_filter_lists_active_grants_not_used_in_90_days(synced, admin_client):
    from django.urls import reverse

    tenant, _, _ = synced
    long_ago = timezone.now() - timedelta(days=120)
    used, unused, never, revoked = Token.objects.filter(tenant=tenant).order_by("pk")[:4]
    Token.objects.filter(pk=used.pk).update(first_seen=long_ago, last_used_at=timezone.now() - timedelta(days=3))
    Token.objects.filter(pk=unused.pk).update(first_seen=long_ago, last_used_at=long_ago)
    Token.objects.filter(pk=never.pk).update(first_seen=long_ago)  # held 120 days, never seen used
    Token.objects.filter(pk=revoked.pk).update(first_seen=long_ago, revoked_at=timezone.now())
    page = admin_client.get(reverse("admin:syncapp_token_changelist"), {"unused": "yes"}).content.decode()
    shown = {int(pk) for pk in __import__("re").findall(r'/admin/syncapp/token/(\d+)/change/', page)}
    assert shown == {unused.pk, never.pk}

"""The grant timeline (syncapp.timeline and its trigger): one row per change of a token, however
the change arrives — a full sync, the changes feed, an import — and none for a write that
changes nothing, so a resumed step records nothing twice."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from syncapp.imports import import_source, start_import
from syncapp.models import GrantEvent, Status, SyncRun, Token
from syncapp.tasks import run_in_process
from syncapp.timeline import seen_by

from ..conftest import demo_org, sync_here
from ..factories import TokenFactory
from ..fakegoogle import USERS_PATH, google_error
from ..gamfiles import export

pytestmark = [pytest.mark.django_db(transaction=True)]

DRIVE = "https://www.googleapis.com/auth/drive.readonly"
CALENDAR = "https://www.googleapis.com/auth/calendar"
NEW_APP = {"clientId": "new-app.apps.googleusercontent.com", "displayText": "New App", "anonymous": False, "nativeApp": False,
           "scopes": ["openid", DRIVE]}


def history(token) -> list[tuple]:
    return list(GrantEvent.objects.filter(token=token).order_by("id").values_list("kind", "via", "added", "removed"))


def test_a_grant_a_widening_a_revocation_and_a_regrant_by_feed_sync_and_import_are_four_rows(google_tenant, fake_google, tmp_path):
    users, tokens = demo_org(30, apps=6)
    fake_google.load(users, tokens)
    first = sync_here(google_tenant)
    assert first.status == Status.COMPLETED
    held = Token.objects.filter(tenant=google_tenant).count()
    assert GrantEvent.objects.filter(kind="granted", via="sync", run=first).count() == held == GrantEvent.objects.count()
    user, now = users[0]["id"], timezone.now()

    fake_google.grant(user, NEW_APP, now)
    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED
    fake_google.grant(user, {**NEW_APP, "scopes": [CALENDAR]}, now, logged=False)  # seen by the next full sync
    assert sync_here(google_tenant).status == Status.COMPLETED
    fake_google.revoke(user, NEW_APP["clientId"], now + timedelta(seconds=1))
    users_file, tokens_file = export(tmp_path, fake_google.users, fake_google.tokens)
    imported = start_import(google_tenant, import_source(users=str(users_file), tokens=str(tokens_file), complete=True), enqueue=False)
    run_in_process(imported.pk)
    assert SyncRun.objects.get(pk=imported.pk).status == Status.COMPLETED
    fake_google.grant(user, NEW_APP, now + timedelta(seconds=2))
    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED

    token = Token.objects.get(user__external_id=user, application__client_id=NEW_APP["clientId"])
    assert history(token) == [
        ("granted", "changes", sorted(["openid", DRIVE]), []),
        ("widened", "sync", [CALENDAR], []),
        ("revoked", "import", [], sorted(["openid", DRIVE, CALENDAR])),
        ("regranted", "changes", [], [CALENDAR]),  # granted again with the scopes asked for now
    ]
    assert GrantEvent.objects.count() == held + 4  # every other token: its first grant only
    revoked = GrantEvent.objects.get(token=token, kind="revoked")
    assert revoked.run_id == imported.pk and revoked.scopes == sorted(["openid", DRIVE, CALENDAR])


@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_a_resumed_tokens_step_records_each_grant_once(google_tenant, fake_google, settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    users, tokens = demo_org(120)
    fake_google.load(users, tokens)
    fake_google.max_page = 25
    fake_google.fail_next(USERS_PATH, 400, google_error(400, "Bad Request", "badRequest"), after=3)
    stopped = sync_here(google_tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and 0 < GrantEvent.objects.count() < Token.objects.count() + 1
    resumed = sync_here(google_tenant, steps="tokens").step_records.get()
    assert resumed.status == Status.COMPLETED and resumed.resumed_from_id == stopped.pk
    granted = list(GrantEvent.objects.values_list("token_id", flat=True))
    assert len(granted) == len(set(granted)) == Token.objects.count() == sum(len(ts) for ts in tokens.values())


@pytest.mark.parametrize(("before", "after", "kind", "added", "removed"), [
    (["a", "b"], ["b"], "narrowed", [], ["a"]),
    (["a"], ["b", "c"], "changed", ["b", "c"], ["a"]),
    (["a", "b"], ["b", "a"], None, None, None),  # the same scopes in another order: no change
])
def test_a_change_of_scopes_is_named_by_what_was_added_and_removed(before, after, kind, added, removed):
    token = TokenFactory(scopes=before)
    with transaction.atomic(), seen_by(None, GrantEvent.Via.SYNC):
        Token.objects.filter(pk=token.pk).update(scopes=after)
    changes = history(token)[1:]  # after its grant
    assert changes == ([(kind, "sync", added, removed)] if kind else [])


def test_a_change_outside_any_step_is_recorded_as_other_and_a_revoked_token_changing_scopes_is_none():
    token = TokenFactory(scopes=["a"])
    Token.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    Token.objects.filter(pk=token.pk).update(scopes=["a", "b"])  # revoked: no grant changed
    assert history(token) == [("granted", "", ["a"], []), ("revoked", "", [], ["a"])]
    assert token.application.__class__.objects.get(pk=token.application_id).risk_stale

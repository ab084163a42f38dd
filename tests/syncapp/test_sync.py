"""The sync end to end in this process: counters, idempotence, deletion detection, refused runs."""


import pytest
from django.core.exceptions import ValidationError

from syncapp.models import Application, DirectoryUser, Status, Token, UserAppRelation
from syncapp.runs import RunRefused, start_run

from ..conftest import demo_org, step_counters as counters, sync_here
from ..factories import TenantFactory
from ..fakegoogle import USERS_PATH, google_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]


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


def test_a_google_sync_keeps_delegated_admins_and_archived_users_through_partial_responses(google_tenant, fake_google):
    """users.list asked with fields= still brings isDelegatedAdmin and archived: stored as such,
    and a user who stops being either is updated."""
    users, tokens = demo_org(400)
    fake_google.load(users, tokens)
    delegated = {u["id"] for u in users if u.get("isDelegatedAdmin")}
    archived = {u["id"] for u in users if u.get("archived")}
    assert delegated and archived  # the demo organisation holds some of each
    assert sync_here(google_tenant).status == Status.COMPLETED
    assert set(DirectoryUser.objects.filter(is_delegated_admin=True).values_list("external_id", flat=True)) == delegated
    assert set(DirectoryUser.objects.filter(is_archived=True).values_list("external_id", flat=True)) == archived
    assert all("fields" in query for _, path, query in fake_google.requests if path == USERS_PATH)

    back = next(iter(archived))
    fake_google.load([{**u, "archived": False} if u["id"] == back else u for u in users], tokens)
    run = sync_here(google_tenant)
    assert counters(run, "users")["updated"] == 1 and not DirectoryUser.objects.get(external_id=back).is_archived


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


def test_unknown_steps_and_inactive_tenants_are_refused():
    tenant = TenantFactory(active=False)
    with pytest.raises(ValidationError) as bad:
        start_run(tenant=tenant, trigger="command", steps="users,bogus")
    assert bad.value.message_dict == {"steps": ["unknown steps bogus; choose from users, tokens, relations, changes"]}
    with pytest.raises(RunRefused, match="is not active"):
        start_run(tenant=tenant, trigger="command")

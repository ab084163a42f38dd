"""The changes step for Microsoft (syncapp.steps.delta) against the loopback Graph's delta
queries: users and grants changed after a full sync — a new grant of an app never seen, a grant
widened, one API's grant of a token removed, a token's last grant removed, users added, changed
in part and removed — applied in a few calls; a page applied twice; a delta link Graph no longer
knows; and the proof for each: a full sync afterwards finds the same directory."""

import pytest

from syncapp.models import DelegatedGrant, DirectoryUser, Status, Tenant, Token

from ...conftest import demo_org, step_counters as counters, sync_here
from ...factories import TenantFactory
from ...fakegraph import GRAPH_RESOURCE, SHAREPOINT_RESOURCE, FakeGraph
from .test_changes import inventory

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def graph():
    server = FakeGraph(page_size=40).start()
    yield server
    server.stop()


@pytest.fixture
def synced(graph):
    """A Microsoft tenant after a full sync of 60 users: its delta links and grants kept."""
    graph.load(*demo_org(60, apps=6))
    tenant = TenantFactory(slug="contoso", provider="microsoft", provider_config=graph.config())
    assert sync_here(tenant).status == Status.COMPLETED
    tenant.refresh_from_db()
    return tenant


def directory(tenant) -> dict:
    users = set(DirectoryUser.objects.filter(tenant=tenant, deleted_at__isnull=True)
                .values_list("external_id", "primary_email", "full_name", "is_suspended"))
    return {**inventory(tenant), "users": users}


def changes_run(tenant):
    run = sync_here(tenant, steps="changes")
    return run, run.step_records.get()


def test_a_full_sync_sets_both_delta_links_and_keeps_every_grant(synced, graph):
    tokens_step = synced.runs.get().step_records.get(name="tokens")
    assert synced.users_delta_link == f"{graph.url}/v1.0/users/delta?$deltatoken=0"
    assert synced.grants_delta_link == f"{graph.url}/v1.0/oauth2PermissionGrants/delta?$deltatoken=0"
    assert synced.changes_cursor == tokens_step.started_at
    assert set(DelegatedGrant.objects.filter(tenant=synced).values_list("grant_id", flat=True)) == {g["id"] for g in graph.grants}


def test_changes_after_a_full_sync_are_applied_in_a_few_calls_as_a_full_sync_would_store_them(synced, graph):
    holder = next(g for g in graph.grants if g["resourceId"] == SHAREPOINT_RESOURCE)  # a token with a grant on each of two APIs
    graph.remove_grant(holder["id"])  # narrowed: its Graph scopes stay
    alone = next(g for g in graph.grants if not any(o is not g and (o["principalId"], o["clientId"]) == (g["principalId"], g["clientId"])
                                                     for o in graph.grants))
    graph.remove_grant(alone["id"])  # the token's last grant: revoked
    widened = next(g for g in graph.grants if g is not alone and g["resourceId"] == GRAPH_RESOURCE)
    graph.update_grant(widened["id"], widened["scope"] + " Mail.Read")
    graph.service_principals.append({"id": "sp-new", "appId": "new-app-client-id", "displayName": "New App"})
    graph.add_user({"id": "new-user", "displayName": "New Person", "userPrincipalName": "new@contoso.example", "mail": None,
                    "accountEnabled": True, "createdDateTime": "2026-12-01T00:00:00Z"})
    graph.add_grant({"id": "grant-new", "clientId": "sp-new", "consentType": "Principal", "principalId": "new-user",
                     "resourceId": GRAPH_RESOURCE, "scope": "User.Read Files.Read.All"})
    graph.add_grant({"id": "consent-new", "clientId": "sp-new", "consentType": "AllPrincipals", "principalId": None,
                     "resourceId": GRAPH_RESOURCE, "scope": "User.Read"})
    disabled, gone = graph.users[3], graph.users[4]
    graph.update_user(disabled["id"], accountEnabled=False)  # Graph sends the id and what changed
    graph.remove_user(gone["id"])
    name_before = DirectoryUser.objects.get(tenant=synced, external_id=disabled["id"]).full_name
    graph.requests.clear()

    run, step = changes_run(synced)
    assert run.status == Status.COMPLETED, (step.error, step.invalid_samples)
    calls = [path for _, path, _ in graph.requests if path.startswith("/v1.0/")]
    assert calls == ["/v1.0/users/delta", "/v1.0/oauth2PermissionGrants/delta", "/v1.0/servicePrincipals"]  # the new app, by id
    assert graph.requests[-1][2]["$filter"] == "id in ('sp-new')"
    # The new user and token made, the widened and narrowed tokens updated, the last grant's token revoked;
    # the disabled user updated, the removed one deleted (3 users and 5 grants received).
    assert counters(run, "changes") == dict(received=3 + 5, created=2, updated=3, unchanged=0, deactivated=2, invalid=0, failed=0)
    assert Token.objects.get(tenant=synced, user__external_id="new-user").scopes == ["Microsoft Graph: Files.Read.All", "Microsoft Graph: User.Read"]
    assert synced.applications.get(client_id="new-app-client-id").org_scopes == ["Microsoft Graph: User.Read"]
    user = DirectoryUser.objects.get(tenant=synced, external_id=disabled["id"])
    assert user.is_suspended and user.full_name == name_before  # what a change leaves out is kept
    assert DirectoryUser.objects.get(tenant=synced, external_id=gone["id"]).deleted_at is not None
    after_changes = directory(synced)
    synced.refresh_from_db()
    assert synced.grants_delta_link.endswith(f"$deltatoken={graph.version}") and synced.changes_cursor == step.started_at

    assert sync_here(synced).status == Status.COMPLETED
    assert directory(synced) == after_changes  # a full sync finds the directory the changes made


def test_a_page_applied_twice_changes_nothing_the_second_time(synced, graph):
    link = synced.grants_delta_link
    graph.update_grant(graph.grants[0]["id"], graph.grants[0]["scope"] + " Mail.Send")
    graph.remove_grant(graph.grants[1]["id"])
    first, _ = changes_run(synced)
    once = directory(synced)
    Tenant.objects.filter(pk=synced.pk).update(grants_delta_link=link)  # as a step that stopped before its link moved

    again, _ = changes_run(synced)
    assert again.status == Status.COMPLETED and directory(synced) == once
    counts = counters(again, "changes")
    assert (counts["created"], counts["updated"], counts["deactivated"]) == (0, 0, 0) and counts["unchanged"] >= 1


def test_a_delta_link_graph_no_longer_knows_is_read_again_from_the_whole_state(synced, graph):
    gone = graph.grants[0]
    graph.remove_grant(gone["id"])
    graph.remove_user(graph.users[-1]["id"])
    graph.delta_expired_before = graph.version + 1  # every link so far: 410 Gone

    run, step = changes_run(synced)
    assert run.status == Status.COMPLETED, step.error
    assert not DelegatedGrant.objects.filter(tenant=synced, grant_id=gone["id"]).exists()
    after_changes = directory(synced)
    synced.refresh_from_db()
    assert synced.grants_delta_link.endswith(f"$deltatoken={graph.version}")
    assert sync_here(synced).status == Status.COMPLETED and directory(synced) == after_changes


def test_a_changes_step_before_any_full_sync_says_a_full_sync_must_come_first(graph):
    graph.load(*demo_org(5, apps=2))
    tenant = TenantFactory(slug="fresh", provider="microsoft", provider_config=graph.config())
    run, step = changes_run(tenant)
    assert run.status == Status.FAILED and "no delta links yet: a full sync must complete first" in step.error


def test_a_user_malformed_in_a_whole_reread_is_counted_invalid_not_deleted(synced, graph):
    """As after a full users step: a record that is malformed today still stands for a user."""
    broken = graph.users[0]
    broken.update(mail=None, userPrincipalName="no-at-sign")
    graph.delta_expired_before = graph.version + 1

    run, step = changes_run(synced)
    assert step.invalid == 1 and step.invalid_samples[0]["key"] == broken["id"]
    assert DirectoryUser.objects.get(tenant=synced, external_id=broken["id"]).deleted_at is None

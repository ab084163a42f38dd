"""Revocation (syncapp.revocations, syncapp.steps.revoke, `manage.py revoke`) against a loopback
Google that really deletes: a dry run changes nothing; an approved revocation leaves no grant
listed, and the inventory and timeline agree with a full sync afterwards."""

from collections import Counter
from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command

from syncapp.models import GrantEvent, Revocation, RevocationItem, Status, SyncRun, Token
from syncapp.revocations import approve_revocation, may_revoke, plan_revocation, request_revocation
from syncapp.tasks import run_in_process

from ..conftest import demo_org, step_counters, sync_here
from ..factories import TenantFactory

pytestmark = [pytest.mark.django_db(transaction=True)]
USERS = 1000


@pytest.fixture
def synced(google_tenant, fake_google):
    """The fake directory's organisation, synced: (tenant, the application held by the most users)."""
    users, tokens = demo_org(USERS)
    fake_google.load(users, tokens)
    assert sync_here(google_tenant).status == Status.COMPLETED
    held = Counter(t["clientId"] for items in tokens.values() for t in items)
    return google_tenant, held.most_common(1)[0][0]


def revoke(*args) -> str:
    out = StringIO()
    call_command("revoke", *args, stdout=out)
    return out.getvalue()


def listed(fake_google, client_id: str) -> int:
    return sum(1 for items in fake_google.tokens.values() for t in items if t["clientId"] == client_id)


def test_a_dry_run_says_exactly_what_would_go_and_changes_nothing(synced, fake_google):
    tenant, app = synced
    live = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True)
    count, first = live.count(), live.order_by("user__primary_email").first()
    said = revoke(tenant.slug, "--app", app, "--dry-run")
    assert said.startswith(f"{count} grant(s) of {app} would be revoked, of {first.user.primary_email}")
    assert f"scopes: {', '.join(sorted({s for t in live for s in t.scopes}))}" in said
    assert (fake_google.revoked, live.count(), Revocation.objects.count()) == ([], count, 0)
    assert listed(fake_google, app) == count


def test_an_approved_revocation_of_an_app_leaves_none_listed_and_a_full_sync_agrees(synced, fake_google):
    tenant, app = synced
    count = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).count()
    said = revoke(tenant.slug, "--app", app, "--yes")
    revocation = Revocation.objects.get()
    assert (revocation.state, revocation.run.trigger, revocation.run.status) == (Revocation.State.DONE, SyncRun.Trigger.REVOKE, Status.COMPLETED)
    assert f"Revocation {revocation.pk} revoked, and checked gone: {count} revoked; 0 already gone." in said
    assert listed(fake_google, app) == 0 and len(fake_google.revoked) == count  # each grant once
    assert Counter(RevocationItem.objects.values_list("outcome", flat=True)) == {RevocationItem.Outcome.REVOKED: count}
    assert not Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).exists()
    events = GrantEvent.objects.filter(tenant=tenant, application__client_id=app, kind=GrantEvent.Kind.REVOKED)
    assert (events.count(), set(events.values_list("via", flat=True))) == (count, {GrantEvent.Via.REVOKE})
    after = sync_here(tenant)  # the provider and the inventory agree: nothing to change, nothing revoked twice
    assert step_counters(after, "tokens")["deactivated"] == 0 and step_counters(after, "tokens")["created"] == 0
    assert events.count() == count


def test_one_users_grant_and_one_already_gone(synced, fake_google):
    tenant, app = synced
    grants = list(Token.objects.filter(tenant=tenant, application__client_id=app).select_related("user").order_by("pk")[:2])
    mine, theirs = grants
    plan = plan_revocation(tenant=tenant, client_id=app, user_email=mine.user.primary_email.upper())  # e-mail case does not matter
    assert [t.pk for t in plan.tokens] == [mine.pk]
    revocation = request_revocation(plan, requested_by="alice")
    fake_google.tokens[mine.user.external_id] = [t for t in fake_google.tokens[mine.user.external_id] if t["clientId"] != app]  # revoked meanwhile
    run_in_process(approve_revocation(revocation, approved_by="bob", enqueue=False).pk)
    revocation.refresh_from_db()
    item = revocation.items.get()
    assert (revocation.state, item.outcome, item.answer) == (Revocation.State.DONE, RevocationItem.Outcome.GONE, "404: the provider no longer had it")
    assert Token.objects.get(pk=theirs.pk).revoked_at is None and listed(fake_google, app) > 0


def test_a_provider_refusal_for_want_of_the_write_permission_fails_naming_it(synced, fake_google):
    tenant, app = synced
    fake_google.may_revoke = False
    with pytest.raises(CommandError, match="admin.directory.user.security scope"):
        revoke(tenant.slug, "--app", app, "--yes")
    revocation = Revocation.objects.get()
    assert revocation.state == Revocation.State.FAILED and "revoking needs the admin.directory.user.security scope" in revocation.outcome
    assert revocation.run.status == Status.FAILED
    assert not RevocationItem.objects.exclude(outcome=RevocationItem.Outcome.PENDING).exists()  # none taken for revoked


def test_bad_input_is_refused_with_the_field_named(synced):
    tenant, app = synced
    with pytest.raises(CommandError, match="--app: acme has no application 'no.such.app'"):
        revoke(tenant.slug, "--app", "no.such.app", "--dry-run")
    with pytest.raises(CommandError, match="--user: acme has no user 'nobody@example.org'"):
        revoke(tenant.slug, "--app", app, "--user", "nobody@example.org", "--dry-run")
    with pytest.raises(ValidationError, match="unused_days"):
        plan_revocation(tenant=tenant, client_id=app, unused_days=0)
    demo = TenantFactory(slug="demo-org")
    with pytest.raises(CommandError, match="the demo's grants are made up from its seed"):
        revoke(demo.slug, "--app", app, "--dry-run")


def test_without_yes_and_no_terminal_nothing_is_revoked(synced, fake_google):
    tenant, app = synced
    with pytest.raises(CommandError, match="nothing revoked: confirm at the prompt, or give --yes"):
        revoke(tenant.slug, "--app", app)
    assert (fake_google.revoked, Revocation.objects.count()) == ([], 0)


def test_revoking_needs_a_permission_of_its_own():
    staff = User.objects.create_user("staff", is_staff=True)
    assert not may_revoke(staff)
    staff.user_permissions.add(Permission.objects.get(codename="revoke_token", content_type__app_label="syncapp"))
    assert may_revoke(User.objects.get(pk=staff.pk))


def test_a_second_approver_must_be_another_person(synced, settings):
    tenant, app = synced
    settings.BALLAST_REVOCATION_SECOND_APPROVER = True
    revocation = request_revocation(plan_revocation(tenant=tenant, client_id=app), requested_by="alice")
    with pytest.raises(PermissionDenied, match="needs another person's approval than its requester's"):
        approve_revocation(revocation, approved_by="alice", enqueue=False)
    run = approve_revocation(revocation, approved_by="bob", enqueue=False)
    revocation.refresh_from_db()
    assert (revocation.state, revocation.approved_by, revocation.run_id) == (Revocation.State.APPROVED, "bob", run.pk)
    with pytest.raises(ValidationError, match="not waiting for approval"):
        approve_revocation(revocation, approved_by="carol", enqueue=False)


def test_the_audit_is_listed_in_the_admin_and_never_deleted_there(synced, client):
    tenant, app = synced
    revocation = request_revocation(plan_revocation(tenant=tenant, client_id=app), requested_by="alice")
    client.force_login(User.objects.create_superuser("root"))
    page = client.get(f"/admin/syncapp/revocation/{revocation.pk}/change/")
    assert page.status_code == 200 and "alice" in page.content.decode() and b"deletelink" not in page.content
    assert client.get(f"/admin/syncapp/revocation/{revocation.pk}/delete/").status_code == 403


@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_a_run_that_dies_half_way_is_carried_on_and_revokes_each_grant_once(synced, fake_google, monkeypatch, settings):
    from syncapp.steps import revoke as revoke_step

    tenant, app = synced
    settings.BALLAST_GOVERNOR = {"batch_size": 20}
    count = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).count()
    real_write, batches = revoke_step._write, []

    def dies_at_the_third_batch(results):
        batches.append(len(results))
        if len(batches) == 3:  # its grants are revoked at the provider, but the answers die with the process
            raise RuntimeError("the process died")
        return real_write(results)

    monkeypatch.setattr(revoke_step, "_write", dies_at_the_third_batch)
    with pytest.raises(CommandError, match="the process died"):
        revoke(tenant.slug, "--app", app, "--yes")
    revocation = Revocation.objects.get()
    assert revocation.state == Revocation.State.INCOMPLETE and f"{count - 40} not tried yet" in revocation.outcome
    assert len(fake_google.revoked) == 60  # two batches recorded, the third revoked unrecorded

    monkeypatch.setattr(revoke_step, "_write", real_write)
    said = revoke(tenant.slug, "--app", app, "--yes")
    assert f"Revocation {revocation.pk} of these grants stopped with {count - 40} still to revoke: carrying it on." in said
    revocation.refresh_from_db()
    assert revocation.state == Revocation.State.DONE and Revocation.objects.count() == 1
    assert len(fake_google.revoked) == len(set(fake_google.revoked)) == count  # each grant once, none skipped
    outcomes = Counter(revocation.items.values_list("outcome", flat=True))
    assert outcomes == {RevocationItem.Outcome.REVOKED: count - 20, RevocationItem.Outcome.GONE: 20}
    assert GrantEvent.objects.filter(tenant=tenant, application__client_id=app, kind=GrantEvent.Kind.REVOKED).count() == count


def test_the_api_answers_a_dry_run_by_default_and_revokes_only_with_a_key_that_may(synced, fake_google, client):
    from syncapp.apikeys import create_key

    tenant, app = synced
    count = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).count()
    _, plain = create_key(tenant)
    _, revoker = create_key(tenant, may_revoke=True)

    def post(key, body):
        return client.post("/api/v1/revocations/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")

    dry = post(plain, {"app": app})
    assert dry.status_code == 200 and (dry.json()["dry_run"], dry.json()["count"]) == (True, count)
    refused = post(plain, {"app": app, "dry_run": False})
    assert refused.status_code == 403 and "may not revoke" in refused.json()["error"]["message"]
    assert post(revoker, {"app": app, "dry_run": "no"}).json()["error"]["field"] == "dry_run"
    assert post(revoker, {"app": "no.such.app"}).json()["error"]["field"] == "app"
    assert (fake_google.revoked, Revocation.objects.count()) == ([], 0)

    accepted = post(revoker, {"app": app, "dry_run": False})
    body = accepted.json()
    assert accepted.status_code == 202 and body["state"] == Revocation.State.APPROVED and body["requested_by"].startswith("API key ")
    run_in_process(body["run"])  # no cluster here: carried out as the cluster would
    detail = client.get(accepted["Location"], HTTP_AUTHORIZATION=f"Bearer {plain}").json()
    assert (detail["state"], detail["grants"]["revoked"], detail["grants"]["pending"]) == (Revocation.State.DONE, count, 0)
    assert listed(fake_google, app) == 0


def test_in_the_admin_a_person_with_the_permission_asks_another_approves_and_staff_without_it_can_do_neither(synced, fake_google, client, settings):
    from django.contrib.auth.models import Group

    from syncapp.models import Application

    tenant, app = synced
    settings.BALLAST_REVOCATION_SECOND_APPROVER = True
    application = Application.objects.get(tenant=tenant, client_id=app)
    staff = Group.objects.create(name="staff")
    staff.permissions.set(Permission.objects.filter(content_type__app_label="syncapp").exclude(codename="revoke_token"))
    security = Group.objects.create(name="security")
    security.permissions.set(Permission.objects.filter(content_type__app_label="syncapp"))

    def person(name, group):
        user = User.objects.create_user(name, is_staff=True)
        user.groups.add(group)
        return user

    def act(user, model, action, pk):
        client.force_login(user)
        return client.post(f"/admin/syncapp/{model}/", {"action": action, "_selected_action": [pk]}, follow=True)

    bystander, alice, bob = person("bystander", staff), person("alice", security), person("bob", security)
    act(bystander, "application", "ask_to_revoke", application.pk)
    assert not Revocation.objects.exists()
    assert "ask_to_revoke" not in client.get("/admin/syncapp/application/").content.decode()

    act(alice, "application", "ask_to_revoke", application.pk)
    revocation = Revocation.objects.get()
    assert (revocation.state, revocation.requested_by, revocation.items.count()) == (Revocation.State.PENDING, "alice", len(plan_revocation(tenant=tenant, client_id=app).tokens))
    page = act(alice, "revocation", "approve", revocation.pk).content.decode()
    assert "needs another person&#x27;s approval" in page and Revocation.objects.get().state == Revocation.State.PENDING
    act(bystander, "revocation", "approve", revocation.pk)
    assert Revocation.objects.get().state == Revocation.State.PENDING

    act(bob, "revocation", "approve", revocation.pk)
    revocation.refresh_from_db()
    assert (revocation.state, revocation.approved_by) == (Revocation.State.APPROVED, "bob")
    run_in_process(revocation.run_id)
    revocation.refresh_from_db()
    assert revocation.state == Revocation.State.DONE and listed(fake_google, app) == 0


@pytest.fixture
def graph_synced():
    """A Microsoft tenant against a loopback Graph, synced: (tenant, graph, the app held by the most users)."""
    from ..fakegraph import FakeGraph

    graph = FakeGraph(page_size=50).start()
    users, tokens = demo_org(60)
    graph.load(users, tokens)
    tenant = TenantFactory(slug="contoso", provider="microsoft", provider_config=graph.config(max_attempts=4))
    assert sync_here(tenant).status == Status.COMPLETED
    apps = {sp["appId"] for sp in graph.service_principals if sp["id"].startswith("sp-")}
    # The app with the most grants split across resources: each of a token's grants must go.
    split = max(apps, key=lambda app: (len(principal_grants(graph, app)) - len({g["principalId"] for g in principal_grants(graph, app)}), app))
    yield tenant, graph, split
    graph.stop()


def principal_grants(graph, app: str) -> list[dict]:
    principal = next(sp["id"] for sp in graph.service_principals if sp["appId"] == app)
    return [g for g in graph.grants if g["clientId"] == principal and g["consentType"] == "Principal"]


def test_microsoft_grants_are_deleted_each_of_them_and_a_full_sync_agrees(graph_synced):
    tenant, graph, app = graph_synced
    grants, users = principal_grants(graph, app), {g["principalId"] for g in principal_grants(graph, app)}
    assert len(grants) > len(users)  # some tokens are two grants (one per resource): each must go
    revocation = request_revocation(plan_revocation(tenant=tenant, client_id=app), requested_by="alice")
    run_in_process(approve_revocation(revocation, approved_by="alice", enqueue=False).pk)
    revocation.refresh_from_db()
    assert revocation.state == Revocation.State.DONE, revocation.outcome
    assert principal_grants(graph, app) == [] and sorted(graph.deleted) == sorted(g["id"] for g in grants)
    assert set(revocation.items.values_list("user_key", flat=True)) == users  # the users' object ids
    after = sync_here(tenant)
    assert after.status == Status.COMPLETED and step_counters(after, "tokens")["deactivated"] == 0
    assert not Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).exists()


def test_a_graph_refusal_names_the_permission_revoking_needs(graph_synced):
    tenant, graph, app = graph_synced
    graph.may_revoke = False
    revocation = request_revocation(plan_revocation(tenant=tenant, client_id=app), requested_by="alice")
    run = approve_revocation(revocation, approved_by="alice", enqueue=False)
    run_in_process(run.pk)
    revocation.refresh_from_db()
    assert revocation.state == Revocation.State.FAILED and "DelegatedPermissionGrant.ReadWrite.All" in revocation.outcome
    assert SyncRun.objects.get(pk=run.pk).status == Status.FAILED and graph.deleted == []


def test_tenant_test_says_whether_revoking_is_granted_without_failing_the_connection(graph_synced, synced):
    from syncapp.provider_check import check_tenant_connection

    tenant, graph, _ = graph_synced
    report = check_tenant_connection(tenant)
    assert report.ok and report.revocation.ok is True and "DelegatedPermissionGrant.ReadWrite.All" in report.revocation.detail
    graph.roles = ["User.Read.All", "Directory.Read.All"]
    out = StringIO()
    call_command("tenant", "test", tenant.slug, stdout=out)  # exits 0: a read-only app syncs
    assert "The connection works" in out.getvalue()
    assert "Revoking grants: not granted: to revoke from Ballast, grant the app the application permission DelegatedPermissionGrant.ReadWrite.All" in out.getvalue()
    google, _ = synced
    assert check_tenant_connection(google).revocation.detail.startswith("granted by the admin.directory.user.security scope")
    assert check_tenant_connection(TenantFactory(slug="demo-org")).revocation.detail == "the demo's grants are made up from its seed: there is nothing to revoke"


def test_429_and_503_are_retried_as_a_syncs_calls_are_and_each_grant_goes_once(synced, fake_google):
    from ..fakegoogle import USERS_PATH, google_error

    tenant, app = synced
    grants = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).select_related("user")
    count, first = grants.count(), grants.order_by("pk").first()
    tenant.provider_config = {**tenant.provider_config, "max_attempts": 8}
    tenant.save()
    fake_google.flaky_every = 7  # every 7th call answers 503 backendError
    fake_google.fail_next(f"{USERS_PATH}/{first.user.primary_email}/tokens/{app}", 429, google_error(429, "Rate Limit Exceeded", "rateLimitExceeded"),
                          headers={"Retry-After": "0"}, times=2)
    revoke(tenant.slug, "--app", app, "--yes")
    assert Revocation.objects.get().state == Revocation.State.DONE and fake_google.flaky_answers > 0
    assert len([p for m, p, _ in fake_google.requests if p.endswith(f"/{first.user.primary_email}/tokens/{app}")]) >= 3  # 429, 429, then revoked
    assert listed(fake_google, app) == 0 and len(fake_google.revoked) == len(set(fake_google.revoked)) == count


def test_a_filter_takes_only_the_grants_unused_for_so_many_days(synced):
    from datetime import timedelta

    from django.utils import timezone

    tenant, app = synced
    grants = Token.objects.filter(tenant=tenant, application__client_id=app, revoked_at__isnull=True).order_by("pk")
    recent, old = grants[0], grants[1]
    Token.objects.filter(pk=recent.pk).update(last_used_at=timezone.now() - timedelta(days=3))
    Token.objects.filter(pk=old.pk).update(last_used_at=timezone.now() - timedelta(days=200))
    planned = {t.pk for t in plan_revocation(tenant=tenant, client_id=app, unused_days=90).tokens}
    assert old.pk in planned and recent.pk not in planned and len(planned) == grants.count() - 1  # never used counts as unused


def test_one_grant_is_asked_for_from_its_token_and_its_page_shows_the_request(synced, client):
    tenant, app = synced
    token = Token.objects.filter(tenant=tenant, application__client_id=app).select_related("user").first()
    client.force_login(User.objects.create_superuser("root"))
    client.post("/admin/syncapp/token/", {"action": "ask_to_revoke", "_selected_action": [token.pk]}, follow=True)
    revocation = Revocation.objects.get()
    assert (revocation.user_email, [i.token_id for i in revocation.items.all()]) == (token.user.primary_email, [token.pk])
    page = client.get(f"/admin/syncapp/token/{token.pk}/change/").content.decode()
    assert f"/admin/syncapp/revocation/{revocation.pk}/change/" in page and "not tried yet (waiting for approval)" in page


def test_only_a_person_who_may_revoke_makes_an_api_key_that_may(client):
    from syncapp.models import ApiKey

    tenant = TenantFactory(slug="keys")
    staff = User.objects.create_user("staff", is_staff=True)
    staff.user_permissions.set(Permission.objects.filter(codename__in=["add_apikey", "view_apikey", "change_apikey"]))
    for user, name in ((staff, "staff's"), (User.objects.create_superuser("root"), "root's")):
        client.force_login(user)
        client.post("/admin/syncapp/apikey/add/", {"tenant": tenant.pk, "name": name, "may_revoke": "on"})
    assert dict(ApiKey.objects.values_list("name", "may_revoke")) == {"staff's": False, "root's": True}


def test_a_rate_403_that_outlasts_its_retries_is_no_refusal_of_the_permission(synced, fake_google):
    from syncapp.providers import ProviderError, RevocationRefused, get_provider

    from ..fakegoogle import USERS_PATH, google_error

    tenant, app = synced
    token = Token.objects.filter(tenant=tenant, application__client_id=app).select_related("user").first()
    fake_google.fail_next(f"{USERS_PATH}/{token.user.primary_email}/tokens/{app}", 403, google_error(403, "Rate Limit Exceeded", "rateLimitExceeded"),
                          times=4)  # the tenant's max_attempts
    with pytest.raises(ProviderError, match="gave up after 4 attempts") as raised:
        get_provider(tenant).revoke_token(token.user.primary_email, app)
    assert not isinstance(raised.value, RevocationRefused)  # one grant failed; the others may still go

"""A sync of a Microsoft Entra ID tenant end to end in this process, against the loopback Graph:
users, grants read as one list (scopes of a token's grants united wherever they stand), admin
consent, revocations, resuming a stopped read, and counts that stay exact."""

import json

import pytest

from syncapp.models import Application, DirectoryUser, StagedToken, Status, Token, UserAppRelation

from ..conftest import demo_org, sync_here
from ..conftest import step_counters as counters
from ..factories import TenantFactory
from ..fakegraph import GRAPH_RESOURCE, FakeGraph, graph_error

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("batches_as_the_governor_sizes_them")]

GRANTS_PATH = "/v1.0/oauth2PermissionGrants/delta"  # a full read is the first round of the delta query


@pytest.fixture
def graph():
    server = FakeGraph(page_size=25).start()
    yield server
    server.stop()


@pytest.fixture
def tenant(graph):
    return TenantFactory(slug="contoso", provider="microsoft", provider_config=graph.config(max_attempts=4))


def _stored(tenant) -> dict[tuple[str, str], list[str]]:
    return {(u, c): s for u, c, s in Token.objects.filter(tenant=tenant, revoked_at__isnull=True)
            .values_list("user__external_id", "application__client_id", "scopes")}


def test_a_first_sync_stores_users_and_tokens_with_each_tokens_grants_united(graph, tenant):
    users, tokens = demo_org(60, apps=8)
    graph.load(users, tokens)
    expected = graph.expected_tokens()
    assert len(graph.grants) > len(expected)  # some tokens come as a grant per resource, on different pages

    run = sync_here(tenant)
    assert run.status == Status.COMPLETED
    assert counters(run, "users") == dict(received=60, created=60, updated=0, unchanged=0, deactivated=0, invalid=0, failed=0)
    assert counters(run, "tokens") == dict(received=_listed(graph), created=len(expected), updated=0, unchanged=0, deactivated=0, invalid=0, failed=0)
    assert _stored(tenant) == expected
    assert UserAppRelation.objects.filter(tenant=tenant, active=True).count() == len(expected)
    # Users: disabled accounts are suspended; without mail, the user principal name is the email.
    by_id = {u.external_id: u for u in DirectoryUser.objects.filter(tenant=tenant)}
    for graph_user in graph.users:
        stored = by_id[graph_user["id"]]
        assert stored.is_suspended is (not graph_user["accountEnabled"])
        assert stored.primary_email == (graph_user["mail"] or graph_user["userPrincipalName"])
    # Applications are the service principals that hold a grant, named by their client id.
    assert set(Application.objects.filter(tenant=tenant).values_list("client_id", flat=True)) == {c for _, c in expected}
    assert not StagedToken.objects.exists()  # the stage is emptied once written

    second = sync_here(tenant)
    for step in ("users", "tokens", "relations"):
        c = counters(second, step)
        assert c["created"] == c["updated"] == c["deactivated"] == c["invalid"] == 0, step
    assert counters(second, "tokens")["unchanged"] == len(expected)
    assert _stored(tenant) == expected


def _listed(graph) -> int:
    """Records the grants list yields: one per user, app and page (grants of one token on one page come as one)."""
    from syncapp.providers.microsoft import MicrosoftProvider

    provider = MicrosoftProvider(graph.config())
    try:
        return sum(len(page.records) for page in provider.token_pages())
    finally:
        provider.close()


def test_admin_consent_is_the_applications_org_wide_scopes_and_goes_when_withdrawn(graph, tenant):
    users, tokens = demo_org(10, apps=3)
    graph.load(users, tokens)
    graph.service_principals.append({"id": "sp-intranet", "appId": "intranet-client", "displayName": "Intranet"})
    graph.grants.append({"id": "consent-1", "clientId": "sp-intranet", "consentType": "AllPrincipals", "principalId": None,
                         "resourceId": GRAPH_RESOURCE, "scope": "User.Read openid"})
    graph.grants.insert(0, {"id": "consent-2", "clientId": "sp-intranet", "consentType": "AllPrincipals", "principalId": None,
                            "resourceId": "sp-other-api", "scope": "Files.Read"})

    run = sync_here(tenant)
    assert run.status == Status.COMPLETED
    intranet = Application.objects.get(tenant=tenant, client_id="intranet-client")
    assert intranet.display_name == "Intranet" and intranet.org_scopes == ["Microsoft Graph: User.Read", "Microsoft Graph: openid", "sp-other-api: Files.Read"]
    assert not Token.objects.filter(application=intranet).exists()  # consent for everyone: no user's token
    assert counters(run, "tokens")["created"] == len(graph.expected_tokens())

    graph.grants = [g for g in graph.grants if g["consentType"] != "AllPrincipals"]
    sync_here(tenant)
    assert Application.objects.get(tenant=tenant, client_id="intranet-client").org_scopes == []


def test_a_revoked_grant_revokes_its_token_and_deactivates_its_relation(graph, tenant):
    users, tokens = demo_org(30, apps=5)
    graph.load(users, tokens)
    sync_here(tenant)
    gone = next(g for g in graph.grants if g["resourceId"] == GRAPH_RESOURCE)
    # Every grant of that user to that app goes (a token is revoked when none is left).
    graph.grants = [g for g in graph.grants if (g["principalId"], g["clientId"]) != (gone["principalId"], gone["clientId"])]

    run = sync_here(tenant)
    assert counters(run, "tokens")["deactivated"] == 1
    assert counters(run, "relations")["deactivated"] == 1
    revoked = Token.objects.get(tenant=tenant, revoked_at__isnull=False)
    assert (revoked.user.external_id, "sp-" + revoked.application.client_id) == (gone["principalId"], gone["clientId"])


def test_a_grant_for_a_user_not_yet_stored_makes_a_placeholder_the_users_step_fills(graph, tenant):
    users, tokens = demo_org(10, apps=3)
    graph.load(users, tokens)
    run = sync_here(tenant, steps="tokens")  # no users step: every grant's user is unknown
    assert counters(run, "tokens")["created"] == len(graph.expected_tokens())
    placeholders = DirectoryUser.objects.filter(tenant=tenant, last_seen__isnull=True)
    assert placeholders.count() == len([u for u, ts in tokens.items() if ts])
    sync_here(tenant, steps="users")
    assert not DirectoryUser.objects.filter(tenant=tenant, last_seen__isnull=True).exists()
    assert DirectoryUser.objects.filter(tenant=tenant).count() == 10


def test_a_grant_of_an_unknown_app_is_counted_invalid_with_a_sample(graph, tenant):
    users, tokens = demo_org(5, apps=2)
    graph.load(users, tokens)
    graph.grants.append({"id": "orphan", "clientId": "sp-deleted", "consentType": "Principal", "principalId": users[0]["id"], "scope": "openid"})
    run = sync_here(tenant)
    step = run.step_records.get(name="tokens")
    assert step.status == Status.COMPLETED_WITH_ERRORS and step.invalid == 1
    assert step.invalid_samples == [{"key": None, "reason": "missing clientId"}]
    assert _stored(tenant) == graph.expected_tokens()


@pytest.mark.parametrize("fail_after", [2, 6], ids=["while-reading", "later-page"])
def test_a_stopped_read_resumes_from_its_checkpoint_with_exact_counts(graph, tenant, settings, fail_after):
    settings.BALLAST_GOVERNOR = {"batch_size": 10}
    users, tokens = demo_org(80, apps=8)
    graph.load(users, tokens)
    tenant.provider_config = {**tenant.provider_config, "max_attempts": 1}
    tenant.save()
    graph.fail_next(GRANTS_PATH, 400, graph_error("BadRequest", "scripted failure"), after=fail_after)
    stopped = sync_here(tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and "scripted failure" in stopped.error
    assert stopped.checkpoint["phase"] == "read" and stopped.checkpoint["page_token"]
    assert StagedToken.objects.filter(stage=stopped.pk).exists()

    resumed = sync_here(tenant, steps="tokens").step_records.get()
    assert resumed.status == Status.COMPLETED and resumed.resumed_from_id == stopped.pk
    expected = graph.expected_tokens()
    assert resumed.created == len(expected)  # every token written once, by the step that finished the read
    assert _stored(tenant) == expected and Token.objects.filter(tenant=tenant).count() == len(expected)
    assert not StagedToken.objects.exists()


def test_a_step_stopped_while_writing_resumes_after_the_last_written_pair(graph, tenant, settings, monkeypatch):
    settings.BALLAST_GOVERNOR = {"batch_size": 10}
    users, tokens = demo_org(80, apps=8)
    graph.load(users, tokens)
    from syncapp.steps import tokenlist

    real = tokenlist._write_batch
    calls = {"n": 0}

    def failing_after_three(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise tokenlist.InvalidRecord("scripted crash")  # any exception: the step fails
        return real(*args, **kwargs)

    monkeypatch.setattr(tokenlist, "_write_batch", failing_after_three)
    stopped = sync_here(tenant, steps="tokens").step_records.get()
    assert stopped.status == Status.FAILED and stopped.checkpoint["phase"] == "write"
    assert stopped.created == Token.objects.filter(tenant=tenant).count() > 0
    monkeypatch.setattr(tokenlist, "_write_batch", real)

    requests_before = len(graph.paths(GRANTS_PATH))
    resumed = sync_here(tenant, steps="tokens").step_records.get()
    assert resumed.status == Status.COMPLETED and resumed.resumed_from_id == stopped.pk
    assert len(graph.paths(GRANTS_PATH)) == requests_before  # the list was read whole already: not again
    expected = graph.expected_tokens()
    assert stopped.created + resumed.created == len(expected)
    assert _stored(tenant) == expected and Token.objects.filter(tenant=tenant).count() == len(expected)


def test_throttling_and_an_expiring_token_mid_run_still_end_exact(graph, tenant):
    users, tokens = demo_org(40, apps=5)
    graph.load(users, tokens)
    graph.token_uses = 3  # every access token stops working after three calls
    graph.fail_next(GRANTS_PATH, 429, graph_error("TooManyRequests", "slow down"), headers={"Retry-After": "0"}, after=1)
    graph.fail_next("/v1.0/users/delta", 503, graph_error("serviceNotAvailable", "busy"), headers={"Retry-After": "0"}, after=1)
    run = sync_here(tenant)
    assert run.status == Status.COMPLETED
    assert _stored(tenant) == graph.expected_tokens()
    assert DirectoryUser.objects.filter(tenant=tenant).count() == 40
    assert len(graph.token_requests) > 2  # one for each step's first call, and more as they lapsed


def test_a_refused_token_fails_the_run_with_graphs_message(graph, tenant):
    graph.fail_next("/v1.0/users/delta", 401, graph_error("Authorization_IdentityNotFound", "The identity of the calling application could not be established."))
    graph.fail_next("/v1.0/servicePrincipals", 403, graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
    run = sync_here(tenant)
    errors = dict(run.step_records.values_list("name", "error"))
    assert "could not be established" in errors["users"]
    assert "Insufficient privileges" in errors["tokens"]
    assert run.status == Status.FAILED


def test_consents_show_in_tenant_show_and_in_the_admin(graph, tenant, admin_client):
    from io import StringIO

    from django.core.management import call_command
    from django.urls import reverse

    graph.load(*demo_org(3, apps=2))
    graph.service_principals.append({"id": "sp-intranet", "appId": "intranet-client", "displayName": "Intranet"})
    graph.grants.append({"id": "consent", "clientId": "sp-intranet", "consentType": "AllPrincipals", "principalId": None,
                         "resourceId": GRAPH_RESOURCE, "scope": "User.Read openid"})
    sync_here(tenant)
    out = StringIO()
    call_command("tenant", "show", "contoso", stdout=out)
    assert "    Intranet (intranet-client): Microsoft Graph: User.Read, Microsoft Graph: openid" in out.getvalue()
    out = StringIO()
    call_command("tenant", "show", "contoso", "--json", stdout=out)
    apps = Application.objects.filter(tenant=tenant).count()
    assert json.loads(out.getvalue())["applications"] == apps  # the consented app counts among them

    page = admin_client.get(reverse("admin:syncapp_application_changelist"), {"consent": "yes"}).content.decode()
    assert "Intranet" in page and "1 application" in page
    intranet = Application.objects.get(tenant=tenant, client_id="intranet-client")
    page = admin_client.get(reverse("admin:syncapp_application_change", args=[intranet.pk])).content.decode()
    assert "Microsoft Graph: User.Read, Microsoft Graph: openid" in page  # the scopes it holds: its consent's
    page = admin_client.get(reverse("admin:syncapp_application_changelist"), {"consent": "no"}).content.decode()
    assert "Intranet" not in page and f"{apps - 1} applications" in page


def test_tenant_test_checks_users_and_grants(graph, tenant):
    from syncapp.provider_check import check_tenant_connection

    graph.load(*demo_org(3, apps=2))
    report = check_tenant_connection(tenant)
    assert report.ok, report.first_error
    assert [c.name for c in report.checks] == ["users", "tokens"]
    assert report.checks[1].detail.startswith("answered: ") and report.checks[1].detail.endswith("grants on the first page")
    assert report.checks[1].target == f"grants (GET {graph.url}/v1.0/servicePrincipals, then {graph.url}/v1.0/oauth2PermissionGrants/delta)"

    graph.fail_next(GRANTS_PATH, 403, graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
    report = check_tenant_connection(tenant)
    assert not report.ok and report.missing_scopes == ["Directory.Read.All"]
    assert "Insufficient privileges" in report.first_error

    tenant.provider_config = {**tenant.provider_config, "client_id": "someone-elses-app"}
    tenant.save()
    report = check_tenant_connection(tenant)
    assert "AADSTS700016" in report.first_error and "check client_id and tenant_id" in report.first_error
    run = sync_here(tenant)  # a sync's error says the same
    assert run.status == Status.FAILED and "check client_id and tenant_id" in run.error

    tenant.provider_config = {**tenant.provider_config, "client_id": graph.config()["client_id"], "client_secret": "wrong-secret-value"}
    report = check_tenant_connection(tenant)
    assert "AADSTS7000215" in report.first_error and "check client_id and client_secret" in report.first_error
    assert "wrong-secret-value" not in json.dumps(report.as_json())


def test_progress_counts_the_grants_read_then_the_staged_rows_written(graph, tenant):
    graph.load(*demo_org(30, apps=4))
    step = sync_here(tenant, steps="tokens").step_records.get()
    assert step.received > 0 and step.expected == step.done == 2 * step.received - step.invalid  # each valid record staged, then written


def test_the_run_page_counts_a_listed_tokens_step_in_records(graph, tenant, admin_client):
    from django.urls import reverse

    graph.load(*demo_org(10, apps=3))
    run = sync_here(tenant)
    tokens = run.step_records.get(name="tokens")
    page = admin_client.get(reverse("admin:syncapp_syncrun_change", args=[run.pk])).content.decode()
    assert f"{tokens.done:,} of {tokens.expected:,} token records (read, then written)" in page
    assert "users asked" not in page  # that is the per-user tokens step's unit


def test_a_microsoft_tenant_is_added_from_the_terminal_and_its_secret_never_shown(graph, admin_client):
    from io import StringIO

    from django.core.management import CommandError, call_command
    from django.urls import reverse

    from syncapp.models import Tenant

    config = json.dumps({"tenant_id": "t", "client_id": "c", "client_secret": "very-secret-value"})
    call_command("tenant", "add", "fabrikam", "--provider", "microsoft", "--config", config, stdout=StringIO())
    tenant = Tenant.objects.get(slug="fabrikam")
    assert tenant.provider == "microsoft" and tenant.provider_config["client_secret"] == "very-secret-value"
    page = admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    assert "very-secret-value" not in page and "Microsoft Entra ID (Graph)" in page
    with pytest.raises(CommandError, match="client_secret must be a non-empty string"):
        call_command("tenant", "add", "bad", "--provider", "microsoft", "--config", '{"tenant_id": "t", "client_id": "c"}', stdout=StringIO())


def test_a_grants_list_that_comes_back_half_short_revokes_nothing_until_confirmed(graph, tenant):
    from django.core.management import call_command

    from syncapp.models import DelegatedGrant

    graph.load(*demo_org(150, apps=6))
    assert sync_here(tenant).status == Status.COMPLETED
    active, kept = Token.objects.filter(revoked_at__isnull=True).count(), DelegatedGrant.objects.count()
    graph.grants = graph.grants[: len(graph.grants) // 2]  # Graph answers with half the list
    run = sync_here(tenant)
    step = run.step_records.get(name="tokens")
    assert (run.status, step.deactivated) == (Status.COMPLETED_WITH_ERRORS, 0) and step.held > 0
    assert Token.objects.filter(revoked_at__isnull=True).count() == active and DelegatedGrant.objects.count() == kept
    call_command("sync", tenant.slug, "--confirm-deletes", str(run.pk))
    assert Token.objects.filter(revoked_at__isnull=True).count() == active - step.held
    assert DelegatedGrant.objects.count() == len(graph.grants)  # the grants it lacked are forgotten too

"""The Microsoft Graph provider against a loopback server that speaks Graph and Entra ID's token
endpoint: tokens, paging by nextLink, users mapped to the directory's shape, retries, errors."""

from datetime import datetime, timezone

import pytest

from syncapp.providers import ConfigError, ProviderError
from syncapp.providers.microsoft import MicrosoftProvider
from syncapp.records import InvalidRecord, parse_token, parse_user

from ...fakegraph import CLIENT_SECRET, FakeGraph, graph_error


@pytest.fixture
def graph():
    server = FakeGraph(page_size=2).start()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def provider(graph, sleeps):
    p = MicrosoftProvider(graph.config(max_attempts=4), sleep=sleeps.append)
    yield p
    p.close()


USERS = [
    {"id": "u1", "displayName": "Ada Lovelace", "userPrincipalName": "ada@contoso.onmicrosoft.com", "mail": "ada@contoso.example",
     "accountEnabled": True, "createdDateTime": "2024-01-02T03:04:05Z"},
    {"id": "u2", "displayName": "Grace Hopper", "userPrincipalName": "grace@contoso.onmicrosoft.com", "mail": None,
     "accountEnabled": False, "createdDateTime": "2024-02-03T04:05:06Z"},
    {"id": "u3", "displayName": "Alan Turing", "userPrincipalName": "alan@contoso.onmicrosoft.com", "mail": "alan@contoso.example",
     "accountEnabled": True, "createdDateTime": None},
]
GUESTS = [  # B2B guests, as Graph lists them: the home address folded into a #EXT# principal name.
    {"id": "u4", "displayName": "Linus Guest", "userPrincipalName": "linus_fabrikam.example#EXT#@contoso.onmicrosoft.com",
     "mail": "linus@fabrikam.example", "accountEnabled": True, "createdDateTime": "2025-05-06T07:08:09Z"},
    {"id": "u5", "displayName": "Radia Guest", "userPrincipalName": "radia_example.net#EXT#@contoso.onmicrosoft.com",
     "mail": None, "accountEnabled": True, "createdDateTime": None},
]


def test_users_are_paged_by_next_link_and_read_as_directory_users(graph, provider):
    graph.users = USERS + GUESTS
    pages = list(provider.user_pages())
    assert [len(p.records) for p in pages] == [2, 2, 1]
    assert pages[0].token is None and pages[1].token == pages[0].next_token and pages[2].next_token is None
    assert pages[0].next_token.startswith(graph.url + "/v1.0/users/delta?")  # a full read is the delta query's first round
    assert [p.delta_link for p in pages] == [None, None, f"{graph.url}/v1.0/users/delta?$deltatoken=0"]  # the last page: where changes start
    users = [parse_user(r) for p in pages for r in p.records]
    assert [(u["external_id"], u["primary_email"], u["full_name"], u["is_suspended"], u["created_at_source"]) for u in users] == [
        ("u1", "ada@contoso.example", "Ada Lovelace", False, datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("u2", "grace@contoso.onmicrosoft.com", "Grace Hopper", True,  # no mail: the user principal name; disabled: suspended
         datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone.utc)),
        ("u3", "alan@contoso.example", "Alan Turing", False, None),  # createdDateTime null (accounts older than 2018)
        ("u4", "linus@fabrikam.example", "Linus Guest", False, datetime(2025, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),  # a guest: their mail
        ("u5", "radia_example.net#EXT#@contoso.onmicrosoft.com", "Radia Guest", False, None),  # a guest without mail: the #EXT# name
    ]
    first = graph.requests[1]  # after the token request
    assert first[2] == {"$select": "id,displayName,userPrincipalName,mail,accountEnabled,createdDateTime"}  # the page size: Prefer


def test_a_read_resumes_from_a_checkpointed_next_link(graph, provider):
    graph.users = USERS
    next_link = next(provider.user_pages()).next_token
    resumed = list(provider.user_pages(next_link))
    assert [r["id"] for p in resumed for r in p.records] == ["u3"]


def test_service_principals_and_grants_are_listed_whole(graph, provider):
    graph.service_principals = [{"id": f"sp{i}", "appId": f"app{i}", "displayName": f"App {i}"} for i in range(5)]
    graph.grants = [{"id": "g1", "clientId": "sp1", "consentType": "Principal", "principalId": "u1", "resourceId": "sp0", "scope": "openid User.Read"}]
    assert [r["appId"] for p in provider.service_principal_pages() for r in p.records] == ["app0", "app1", "app2", "app3", "app4"]
    assert [r["id"] for p in provider.grant_pages() for r in p.records] == ["g1"]


def test_one_token_serves_many_calls_and_is_asked_for_as_entra_id_expects(graph, provider):
    graph.users = USERS
    list(provider.user_pages())
    list(provider.user_pages())
    [request] = graph.token_requests
    assert request == {"grant_type": "client_credentials", "client_id": "ballast-app-client-id", "client_secret": CLIENT_SECRET,
                       "scope": "https://graph.microsoft.com/.default"}


def test_a_token_that_expires_mid_read_is_renewed(graph, provider):
    graph.users = USERS
    graph.token_uses = 1  # each token answers one call, then Graph says it expired
    assert len([r for p in provider.user_pages() for r in p.records]) == 3
    assert len(graph.token_requests) == 2


def test_a_token_near_its_end_is_renewed_before_a_call(graph, sleeps):
    graph.expires_in = 0  # lapses at once: renewed before every call, never sent stale
    graph.users = USERS
    p = MicrosoftProvider(graph.config(), sleep=sleeps.append)
    list(p.user_pages())
    assert len(graph.token_requests) == 2  # one per page


def test_a_refused_secret_fails_with_entra_ids_words_and_no_secret(graph, sleeps):
    p = MicrosoftProvider({**graph.config(), "client_secret": "wrong-secret-value"}, sleep=sleeps.append)
    with pytest.raises(ProviderError) as refused:
        list(p.user_pages())
    assert str(refused.value) == (
        f"token refused by {graph.url} (401): AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
        "request is the client secret value, not the client secret ID, for a secret added to app 'ballast-app-client-id'. "
        "(check client_id and client_secret: the secret may have expired)")
    assert refused.value.status == 401 and sleeps == []  # not retried: a wrong secret stays wrong


@pytest.mark.parametrize("status", [429, 503, 504])
def test_push_back_and_outages_are_retried_honouring_retry_after(graph, provider, sleeps, status):
    graph.users = USERS[:1]
    graph.fail_next("/v1.0/users/delta", status, graph_error("TooManyRequests", "slow down"), headers={"Retry-After": "3"})
    assert [r["id"] for p in provider.user_pages() for r in p.records] == ["u1"]
    assert sleeps == [3.0]


def test_a_fractional_retry_after_is_honoured_to_the_fraction(graph, provider, sleeps):
    """Graph's Retry-After is whole seconds as documented, but throttled answers have been seen
    with fractions ("1.5"): waited as given, not read as unreadable."""
    graph.users = USERS
    graph.fail_next("/v1.0/users/delta", 429, graph_error("TooManyRequests", "slow down"), headers={"Retry-After": "1.5"})
    assert sum(len(p.records) for p in provider.user_pages()) == 3
    assert sleeps == [1.5]


def test_forbidden_fails_with_graphs_message(graph, provider, sleeps):
    graph.fail_next("/v1.0/oauth2PermissionGrants/delta", 403, graph_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation."))
    with pytest.raises(ProviderError) as denied:
        list(provider.grant_pages())
    assert str(denied.value) == "GET /v1.0/oauth2PermissionGrants/delta: 403 Insufficient privileges to complete the operation."
    assert (denied.value.status, denied.value.reason, sleeps) == (403, "Authorization_RequestDenied", [])


def test_a_next_link_to_another_host_is_not_followed(graph, provider):
    with pytest.raises(ProviderError, match=r"the next page is on another host \(https://elsewhere.example/v1.0/users\)"):
        list(provider.user_pages("https://elsewhere.example/v1.0/users?$skiptoken=x"))
    assert graph.requests == []  # the token was not even asked for


@pytest.mark.parametrize("config, message", [
    ({"client_id": "c", "client_secret": "s"}, "tenant_id must be a non-empty string"),
    ({"tenant_id": "t", "client_secret": "s"}, "client_id must be a non-empty string"),
    ({"tenant_id": "t", "client_id": "c"}, "client_secret must be a non-empty string"),
    ({"tenant_id": "t", "client_id": "c", "client_secret": "s", "base_url": "graph.microsoft.com"}, "base_url must start with http"),
])
def test_bad_config_names_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        MicrosoftProvider.clean_config(config)


def test_defaults():
    config = MicrosoftProvider.clean_config({"tenant_id": "t", "client_id": "c", "client_secret": "s"})
    assert (config["base_url"], config["login_url"]) == ("https://graph.microsoft.com", "https://login.microsoftonline.com")


GRAPH_API, SHAREPOINT = "sp-graph", "sp-sharepoint"  # resources: service principals that hold no grant


def test_grants_become_tokens_named_by_the_apps_client_id(graph, provider):
    graph.page_size = 999
    graph.service_principals = [
        {"id": "sp-slack", "appId": "slack-client-id", "displayName": "Slack"},
        {"id": "sp-zoom", "appId": "zoom-client-id", "displayName": "Zoom"},
        {"id": GRAPH_API, "appId": "00000003-0000-0000-c000-000000000000", "displayName": "Microsoft Graph"},
        {"id": SHAREPOINT, "appId": "00000003-0000-0ff1-ce00-000000000000", "displayName": "SharePoint"},
    ]
    graph.grants = [
        {"id": "g1", "clientId": "sp-slack", "consentType": "Principal", "principalId": "u1", "resourceId": GRAPH_API, "scope": "openid User.Read"},
        {"id": "g2", "clientId": "sp-slack", "consentType": "Principal", "principalId": "u1", "resourceId": SHAREPOINT, "scope": "Sites.Read.All"},
        {"id": "g3", "clientId": "sp-slack", "consentType": "Principal", "principalId": "u2", "resourceId": GRAPH_API, "scope": " openid "},
        {"id": "g4", "clientId": "sp-zoom", "consentType": "AllPrincipals", "principalId": None, "resourceId": GRAPH_API, "scope": "User.Read Calendars.Read"},
        {"id": "g5", "clientId": "sp-gone", "consentType": "Principal", "principalId": "u2", "resourceId": GRAPH_API, "scope": "openid"},
    ]
    [page] = list(provider.token_pages())
    assert [r["grants"][0]["id"] for r in page.records] == ["g1", "g3", "g4", "g5"] and len(page.records[0]["grants"]) == 2  # kept for deltas
    assert [{k: v for k, v in r.items() if k != "grants"} for r in page.records] == [
        {"userKey": "u1", "clientId": "slack-client-id", "displayText": "Slack",
         "scopes": ["Microsoft Graph: User.Read", "Microsoft Graph: openid", "SharePoint: Sites.Read.All"]},  # each scope with its API
        {"userKey": "u2", "clientId": "slack-client-id", "displayText": "Slack", "scopes": ["Microsoft Graph: openid"]},
        {"clientId": "zoom-client-id", "displayText": "Zoom",
         "orgScopes": ["Microsoft Graph: User.Read", "Microsoft Graph: Calendars.Read"]},  # admin consent: no token
        {"userKey": "u2", "clientId": None, "displayText": "", "scopes": ["Microsoft Graph: openid"]},  # an app Graph no longer lists
    ]
    with pytest.raises(InvalidRecord, match="clientId"):
        parse_token(page.records[3])
    assert parse_token(page.records[0])["scopes"] == ["Microsoft Graph: User.Read", "Microsoft Graph: openid", "SharePoint: Sites.Read.All"]


def test_token_pages_follow_the_grants_next_link_and_resume_from_it(graph, provider):
    graph.service_principals = [{"id": "sp-a", "appId": "a", "displayName": "A"}]
    graph.grants = [{"id": f"g{i}", "clientId": "sp-a", "consentType": "Principal", "principalId": f"u{i}", "scope": "openid"} for i in range(5)]
    pages = list(provider.token_pages())
    assert [[r["userKey"] for r in p.records] for p in pages] == [["u0", "u1"], ["u2", "u3"], ["u4"]]
    assert "/v1.0/oauth2PermissionGrants/delta?" in pages[1].token
    assert [r["userKey"] for p in provider.token_pages(pages[2].token) for r in p.records] == ["u4"]


def test_a_scope_keeps_the_api_it_was_granted_on(graph, provider):
    """Mail.Read on Microsoft Graph is not a custom API's Mail.Read: each scope is stored with its
    resource's display name (its object id when Graph no longer lists the resource)."""
    graph.page_size = 999
    graph.service_principals = [
        {"id": "sp-crm", "appId": "crm-client-id", "displayName": "CRM"},
        {"id": GRAPH_API, "appId": "00000003-0000-0000-c000-000000000000", "displayName": "Microsoft Graph"},
        {"id": "sp-mail-api", "appId": "api://contoso-mail", "displayName": "Contoso Mail API"},
    ]
    graph.grants = [
        {"id": "g1", "clientId": "sp-crm", "consentType": "Principal", "principalId": "u1", "resourceId": GRAPH_API, "scope": "Mail.Read"},
        {"id": "g2", "clientId": "sp-crm", "consentType": "Principal", "principalId": "u1", "resourceId": "sp-mail-api", "scope": "Mail.Read"},
        {"id": "g3", "clientId": "sp-crm", "consentType": "Principal", "principalId": "u1", "resourceId": "sp-vanished", "scope": "Mail.Read"},
    ]
    [page] = list(provider.token_pages())
    assert [parse_token(record)["scopes"] for record in page.records] == [
        ["Contoso Mail API: Mail.Read", "Microsoft Graph: Mail.Read", "sp-vanished: Mail.Read"]]


def test_an_application_unknown_in_the_tenant_says_check_client_id_and_tenant_id(graph, sleeps):
    """Entra ID's 400 unauthorized_client (AADSTS700016): the client_id is not registered in that
    tenant — a wrong client_id or tenant_id, not a wrong secret."""
    p = MicrosoftProvider({**graph.config(), "client_id": "someone-elses-app"}, sleep=sleeps.append)
    with pytest.raises(ProviderError) as refused:
        list(p.user_pages())
    assert refused.value.status == 400 and sleeps == []
    assert str(refused.value).startswith(f"token refused by {graph.url} (400): AADSTS700016: Application with identifier 'someone-elses-app'")
    assert str(refused.value).endswith("(check client_id and tenant_id: no application with that client_id is registered in that tenant)")
    assert "Trace ID" not in str(refused.value)

    p = MicrosoftProvider({**graph.config(), "tenant_id": "no-such-tenant"}, sleep=sleeps.append)
    with pytest.raises(ProviderError, match=r"\(400\): AADSTS90002: .* \(check tenant_id: Entra ID knows no such tenant\)$"):
        list(p.user_pages())

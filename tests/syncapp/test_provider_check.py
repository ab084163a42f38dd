import json
import socket
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.urls import reverse

from syncapp.provider_check import check_tenant_connection
from syncapp.providers.google import REPORTS_SCOPE, TOKENS_SCOPE, USERS_SCOPE

from ..factories import TenantFactory
from ..fakegoogle import ACTIVITY_PATH, USERS_PATH, google_error

SECRET = "static-test-token"


@pytest.fixture
def loaded(fake_google):
    fake_google.load([{"id": "1000", "primaryEmail": "ada@example.org"}], {"1000": [{"clientId": "a.apps"}, {"clientId": "b.apps"}]})
    return fake_google


def test_a_working_google_connection_calls_each_endpoint_once(google_tenant, loaded):
    report = check_tenant_connection(google_tenant)
    assert report.ok and report.first_error is None and report.missing_scopes == []
    assert [(c.name, c.ok) for c in report.checks] == [("users", True), ("tokens", True), ("changes feed", True)]
    assert "the first ada@example.org" in report.checks[0].detail
    assert report.checks[1].detail == "answered: 2 tokens granted by ada@example.org"
    assert report.checks[0].target == f"users.list (GET {loaded.url}{USERS_PATH})"
    assert loaded.paths() == [USERS_PATH, f"{USERS_PATH}/1000/tokens", ACTIVITY_PATH]


def test_a_token_without_the_tokens_scope_names_the_scope(google_tenant, loaded):
    loaded.fail_next(f"{USERS_PATH}/1000/tokens", 403, google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions"))
    report = check_tenant_connection(google_tenant)
    assert not report.ok
    assert report.missing_scopes == [TOKENS_SCOPE]
    assert report.first_error.startswith("tokens: GET /admin/directory/v1/users/1000/tokens: 403 Request had insufficient")
    assert report.first_error.endswith(f"the credentials lack the scope {TOKENS_SCOPE}")


def test_an_admin_without_the_privilege_is_told_so_not_sent_after_a_scope(google_tenant, loaded):
    loaded.fail_next(USERS_PATH, 403, google_error(403, "Not Authorized to access this resource/api", "forbidden"))
    report = check_tenant_connection(google_tenant)
    assert report.missing_scopes == [] and report.first_error.endswith("the admin the credentials act for may not read users")
    assert [c.ok for c in report.checks] == [False, None, True]  # tokens not tried: no user to ask about


def test_refused_credentials(google_tenant, loaded):
    google_tenant.provider_config["access_token"] = "not-the-token"
    report = check_tenant_connection(google_tenant)
    assert "401 Request had invalid authentication credentials" in report.first_error
    assert "the credentials were refused; check access_token" in report.first_error
    assert "not-the-token" not in json.dumps(report.as_json())


def test_a_service_account_missing_a_delegated_scope_is_found_scope_by_scope(db, fake_google, loaded, credentials_dir):
    fake_google.delegated_scopes = {USERS_SCOPE}
    tenant = TenantFactory(provider="google", provider_config={
        "base_url": fake_google.url, "credentials_file": str(fake_google.service_account_file(credentials_dir)), "subject": "admin@example.org",
    })
    report = check_tenant_connection(tenant)
    assert [(c.name, c.ok) for c in report.checks] == [
        ("token for admin.directory.user.readonly", True), ("token for admin.directory.user.security", False),
        ("users", False), ("tokens", None),  # Google refuses a token for both scopes when one is missing
        ("changes feed", None),  # not granted either: said, but no failure (only changes runs need it)
    ]
    assert report.missing_scopes == [TOKENS_SCOPE, REPORTS_SCOPE]
    assert "Domain-wide delegation" in report.first_error and "unauthorized_client" in report.first_error


def test_nothing_listening_names_the_url(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tenant = TenantFactory(provider="google", provider_config={"base_url": f"http://127.0.0.1:{port}", "access_token": SECRET, "error_retry_base_ms": 1})
    report = check_tenant_connection(tenant)
    assert f"connection error: nothing answers at http://127.0.0.1:{port}" in report.first_error


def test_a_redirect_names_the_url_status_and_where_it_points(google_tenant, loaded):
    loaded.fail_next(USERS_PATH, 302, {}, headers={"Location": "https://accounts.example.org/login"})
    report = check_tenant_connection(google_tenant)
    assert report.first_error == (
        f"users: GET {loaded.url}{USERS_PATH}: the answer is a redirect (302 Found) to https://accounts.example.org/login; is base_url right?"
    )


def test_an_empty_directory_works_with_tokens_untried(google_tenant, fake_google):
    report = check_tenant_connection(google_tenant)
    assert report.ok and [c.ok for c in report.checks] == [True, None, True]


def test_a_demo_tenant_works(db):
    report = check_tenant_connection(TenantFactory(provider_config={"users": 3}))
    assert report.ok and [c.name for c in report.checks] == ["users", "tokens"]


class TestCommand:
    def test_prints_each_call_and_exits_zero(self, google_tenant, loaded):
        out = StringIO()
        call_command("tenant", "test", "acme", stdout=out)
        text = out.getvalue()
        assert "ok   users: answered" in text and "ok   tokens: answered: 2 tokens" in text
        assert "The connection works" in text and SECRET not in text

    def test_a_failure_exits_one_with_the_first_error_and_json_has_the_whole_report(self, google_tenant, loaded):
        loaded.fail_next(f"{USERS_PATH}/1000/tokens", 403, google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions"))
        out = StringIO()
        with pytest.raises(CommandError, match="the connection does not work: tokens: GET") as failure:
            call_command("tenant", "test", "acme", "--json", stdout=out)
        assert failure.value.returncode == 1
        report = json.loads(out.getvalue())
        assert report["ok"] is False and report["missing_scopes"] == [TOKENS_SCOPE]
        assert [c["name"] for c in report["checks"]] == ["users", "tokens", "changes feed"]
        assert set(report["checks"][0]) == {"name", "target", "ok", "detail", "missing_scope"}


def test_the_admin_page_shows_each_call_and_never_the_secret(admin_client, google_tenant, loaded):
    loaded.fail_next(f"{USERS_PATH}/1000/tokens", 403, google_error(403, f"Request had insufficient authentication scopes ({SECRET}).", "insufficientPermissions"))
    page = admin_client.get(reverse("admin:syncapp_tenant_test_connection", args=[google_tenant.pk]))
    text = page.content.decode()
    assert page.status_code == 200 and "The connection does not work." in text
    assert f"<code>{TOKENS_SCOPE}</code>" in text and "answered: 1 user on the first page" in text
    assert SECRET not in text  # scrubbed even where Google's message quotes it


def test_the_admin_pages_need_the_change_permission(client, django_user_model, google_tenant):
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename="view_tenant"))
    client.force_login(viewer)
    for name in ("admin:syncapp_tenant_test_connection", "admin:syncapp_tenant_start_sync"):
        assert client.get(reverse(name, args=[google_tenant.pk])).status_code == 403


def test_a_feed_not_granted_is_said_with_its_scope_but_the_connection_works(google_tenant, loaded):
    loaded.fail_next(ACTIVITY_PATH, 403, google_error(403, "Request had insufficient authentication scopes.", "insufficientPermissions"))
    report = check_tenant_connection(google_tenant)
    assert report.ok and report.missing_scopes == [REPORTS_SCOPE]
    assert report.checks[2].ok is None and "changes runs need the scope" in report.checks[2].detail

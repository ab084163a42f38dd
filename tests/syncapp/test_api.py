"""The tenant API: keys, isolation on every endpoint, paging and filters, starting runs, errors."""

import json
import subprocess
import sys

import pytest
from django.core.management import call_command

from monitoring.ledger.allocations import allocate
from monitoring.models import TenantQuota
from syncapp.apikeys import create_key, revoke
from syncapp.models import ApiKey, SyncRun
from syncapp.runs import start_run

from ..conftest import ROOT, child_env
from ..factories import ApplicationFactory, DirectoryUserFactory, TenantFactory, TokenFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    tenant = TenantFactory(slug="acme")
    TenantQuota.objects.create(tenant=tenant, requests_per_minute=1000)
    return tenant


@pytest.fixture
def key(acme):
    return create_key(acme)[1]


def get(client, url, key, **params):
    return client.get(url, params, HTTP_AUTHORIZATION=f"Bearer {key}")


def post(client, url, key, body):
    return client.post(url, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_keys_are_stored_hashed_and_revocable(client, acme):
    row, key = create_key(acme, "ci")
    assert key.startswith(f"bk_{row.prefix}_") and key not in row.key_hash and len(row.key_hash) == 64
    assert get(client, "/api/v1/runs/", key).status_code == 200
    assert ApiKey.objects.get(pk=row.pk).last_used_at is not None
    revoke(row)
    response = get(client, "/api/v1/runs/", key)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "unauthorized", "message": "send a valid API key: Authorization: Bearer <key>"}}


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer bk_nope_nope", "Basic abc", "Bearer bk_"])
def test_without_a_valid_key_every_endpoint_answers_401(client, acme, header):
    for url in ("/api/v1/runs/", "/api/v1/users/", "/api/v1/tokens/", "/api/v1/applications/", "/api/v1/relations/", "/api/v1/runs/1/"):
        response = client.get(url, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


def test_a_key_sees_only_its_own_tenant(client, acme, key):
    other = TenantFactory(slug="other")
    mine, theirs = DirectoryUserFactory(tenant=acme), DirectoryUserFactory(tenant=other)
    TokenFactory(tenant=acme, user=mine)
    TokenFactory(tenant=other, user=theirs)
    ApplicationFactory(tenant=other, display_name="Theirs only")
    from syncapp.models import UserAppRelation

    for token in (mine.tokens.get(), theirs.tokens.get()):
        UserAppRelation.objects.create(tenant=token.tenant, user=token.user, application=token.application,
                                       first_seen=token.first_seen, last_seen=token.last_seen)
    their_run = start_run(tenant=other, trigger="api", enqueue=False)
    my_run = start_run(tenant=acme, trigger="api", enqueue=False)

    assert [u["email"] for u in get(client, "/api/v1/users/", key).json()["results"]] == [mine.primary_email]
    assert [a["id"] for a in get(client, "/api/v1/applications/", key).json()["results"]] == [mine.tokens.get().application_id]
    assert [r["user"]["email"] for r in get(client, "/api/v1/relations/", key).json()["results"]] == [mine.primary_email]
    assert [r["id"] for r in get(client, "/api/v1/runs/", key).json()["results"]] == [my_run.pk]
    response = get(client, f"/api/v1/runs/{their_run.pk}/", key)
    assert response.status_code == 404 and response.json()["error"] == {"code": "not_found", "message": f"no run {their_run.pk}"}
    assert get(client, f"/api/v1/runs/{my_run.pk}/", key).json()["id"] == my_run.pk


def test_paging_filters_and_search(client, acme, key):
    for i in range(7):
        DirectoryUserFactory(tenant=acme, primary_email=f"user{i}@example.org", full_name="Zoë" if i == 3 else "")
    DirectoryUserFactory(tenant=acme, primary_email="gone@example.org", deleted_at="2026-01-01T00:00Z")
    page = get(client, "/api/v1/users/", key, page_size=3, page=2).json()
    assert (page["count"], page["page"], len(page["results"])) == (8, 2, 3)
    assert page["next"].endswith("page=3") and "page=1" in page["previous"]
    assert get(client, "/api/v1/users/", key, active="false").json()["results"][0]["email"] == "gone@example.org"
    assert get(client, "/api/v1/users/", key, active="true").json()["count"] == 7
    assert [u["email"] for u in get(client, "/api/v1/users/", key, search="zoë").json()["results"]] == ["user3@example.org"]


MAIL = "https://mail.google.com/"
CALENDAR = "https://www.googleapis.com/auth/calendar"


def test_tokens_are_listed_with_scopes_and_risk_and_filtered_by_user_application_scope_risk_active_and_since(client, acme, key):
    from datetime import timedelta

    from django.utils import timezone

    from syncapp.models import GrantEvent
    from syncapp.risk import refresh_risk

    ada = DirectoryUserFactory(tenant=acme, primary_email="ada@example.org", external_id="101")
    mailer, planner = ApplicationFactory(tenant=acme, client_id="mailer.apps"), ApplicationFactory(tenant=acme, client_id="planner.apps")
    mail = TokenFactory(tenant=acme, user=ada, application=mailer, scopes=["openid", MAIL])
    plan = TokenFactory(tenant=acme, user=ada, application=planner, scopes=[CALENDAR])
    gone = TokenFactory(tenant=acme, application=planner, scopes=[CALENDAR + ".readonly"], revoked_at=timezone.now())
    TokenFactory(tenant=TenantFactory(slug="other"), scopes=[MAIL])  # another tenant's: never listed
    refresh_risk(acme.pk)
    GrantEvent.objects.filter(token=mail).update(at=timezone.now() - timedelta(days=30))

    def ids(**params):
        return [t["id"] for t in get(client, "/api/v1/tokens/", key, **params).json()["results"]]

    first = get(client, "/api/v1/tokens/", key).json()
    assert first["count"] == 3 and first["results"][0] == {
        "id": mail.pk, "user": {"id": ada.pk, "email": "ada@example.org"},
        "application": {"id": mailer.pk, "client_id": "mailer.apps", "name": mailer.display_name},
        "scopes": [MAIL, "openid"] if mail.scopes[0] == MAIL else ["openid", MAIL], "risk": "high", "active": True,
        "native_app": False, "anonymous": False, "first_seen": mail.first_seen.isoformat(), "last_seen": mail.last_seen.isoformat(),
        "last_used_at": None, "revoked_at": None,
    }
    assert ids(user="ada@example.org") == ids(user="101") == [mail.pk, plan.pk]
    assert ids(application="planner.apps") == [plan.pk, gone.pk]
    assert ids(scope=CALENDAR) == [plan.pk]  # whole scopes: calendar.readonly is another
    assert ids(risk="high") == [mail.pk] and ids(risk="medium") == [plan.pk, gone.pk]
    assert ids(active="false") == [gone.pk]
    assert ids(since=(timezone.now() - timedelta(days=1)).isoformat()) == [plan.pk]  # granted in the last day
    assert ids(since="2020-01-01") == [mail.pk, plan.pk]  # gone was never seen held: no change of it is known


def test_applications_carry_users_scopes_risk_and_admin_consent_and_order_by_risk_or_users(client, acme, key):
    from syncapp.risk import refresh_risk

    mailer = ApplicationFactory(tenant=acme, display_name="B Mailer")
    planner = ApplicationFactory(tenant=acme, display_name="A Planner", org_scopes=[CALENDAR])
    for _ in range(2):
        TokenFactory(tenant=acme, application=planner, scopes=[CALENDAR])
    TokenFactory(tenant=acme, application=mailer, scopes=[MAIL])
    refresh_risk(acme.pk)
    found = get(client, "/api/v1/applications/", key, order="users").json()["results"]
    assert [(a["name"], a["users"], a["risk"], a["admin_consent"]) for a in found] == [("A Planner", 2, "high", True), ("B Mailer", 1, "high", False)]
    assert found[0]["scopes"] == [CALENDAR] and found[0]["admin_consent_scopes"] == [CALENDAR]
    assert "raised for admin consent" in found[0]["risk_reason"]
    assert [a["name"] for a in get(client, "/api/v1/applications/", key, scope=MAIL).json()["results"]] == ["B Mailer"]
    assert get(client, "/api/v1/applications/", key, risk="low").json()["count"] == 0


def test_starting_runs(client, acme, key, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, "/api/v1/runs/", key, {"steps": "users"})
    assert response.status_code == 202
    run = SyncRun.objects.get(pk=response.json()["id"])
    assert (run.trigger, run.steps, run.status) == ("api", "users", "queued")
    assert response["Location"].endswith(f"/api/v1/runs/{run.pk}/")

    allocate("run_slot", owner=f"run-{run.pk}", tenant_id=acme.pk)  # the tenant's one slot is now taken
    refused = post(client, "/api/v1/runs/", key, {})
    assert refused.status_code == 429 and refused["Retry-After"] == "30"
    assert refused.json()["error"] == {
        "code": "concurrent_runs",
        "message": 'tenant quota: 1 of 1 run slot in use; send "queue": true to queue the run',
    }
    queued = post(client, "/api/v1/runs/", key, {"queue": True})
    assert queued.status_code == 202 and queued.json()["status"] == "queued"


@pytest.mark.parametrize("body, status, message", [
    ({"steps": "users,bogus"}, 400, "unknown steps bogus"),
    ({"steps": ["changes", "users"]}, 400, "changes runs alone"),
    ({"profile": "turbo"}, 400, "unknown profile 'turbo'"),
    ([1, 2], 400, "the body must be a JSON object"),
])
def test_bad_run_requests_say_why(client, acme, key, body, status, message):
    response = post(client, "/api/v1/runs/", key, body)
    assert response.status_code == status and message in response.json()["error"]["message"]
    assert not SyncRun.objects.exists()


BAD_REQUESTS = [
    # (method, path, query or body, status, field, words in the message)
    ("POST", "/api/v1/runs/", {"steps": 5}, 400, "steps", "must be a list of step names"),
    ("POST", "/api/v1/runs/", {"steps": ["users", 3]}, 400, "steps", "must be a list of step names"),
    ("POST", "/api/v1/runs/", {"queue": "yes"}, 400, "queue", "must be true or false"),
    ("POST", "/api/v1/runs/", {"profile": 7}, 400, "profile", "unknown profile 7"),
    ("GET", "/api/v1/users/", {"search": "a\x00b"}, 400, "search", "must not contain NUL"),
    ("GET", "/api/v1/users/", {"active": "maybe"}, 400, "active", "must be true or false"),
    ("GET", "/api/v1/relations/", {"active": "yes please"}, 400, "active", "must be true or false"),
    ("GET", "/api/v1/runs/", {"status": "bogus"}, 400, "status", "must be one of queued"),
    ("GET", "/api/v1/users/", {"page_size": "-5"}, 400, "page_size", "must be from 1 to 200"),
    ("GET", "/api/v1/users/", {"page_size": "500"}, 400, "page_size", "must be from 1 to 200"),
    ("GET", "/api/v1/users/", {"page": "0"}, 400, "page", "must be 1 or more"),
    ("GET", "/api/v1/applications/", {"page": "x"}, 400, "page", "must be a whole number"),
    ("GET", "/api/v1/users/", {"page": "99"}, 404, "page", "no page 99"),
    ("GET", "/api/v1/nothing-here/", {}, 404, None, "no API path /api/v1/nothing-here/"),
    ("GET", "/api/v1/runs/999999/", {}, 404, None, "no run 999999"),
    ("DELETE", "/api/v1/users/", {}, 405, None, "use GET"),
    ("GET", "/api/v1/tokens/", {"risk": "severe"}, 400, "risk", "must be one of low, unknown, medium, high"),
    ("GET", "/api/v1/tokens/", {"since": "last tuesday"}, 400, "since", "must be an ISO 8601 date or time"),
    ("GET", "/api/v1/tokens/", {"since": "2026-13-45"}, 400, "since", "must be an ISO 8601 date or time"),
    ("GET", "/api/v1/tokens/", {"active": "maybe"}, 400, "active", "must be true or false"),
    ("GET", "/api/v1/tokens/", {"user": "a\x00b"}, 400, "user", "must not contain NUL"),
    ("GET", "/api/v1/applications/", {"order": "size"}, 400, "order", "must be one of name, users, risk"),
    ("POST", "/api/v1/tokens/", {}, 405, None, "use GET"),
]


@pytest.mark.parametrize("method, path, data, status, field, words", BAD_REQUESTS)
def test_bad_requests_get_a_json_4xx_naming_the_problem(client, acme, key, method, path, data, status, field, words):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    if method == "POST":
        response = client.post(path, json.dumps(data), content_type="application/json", **auth)
    else:
        response = client.generic(method, path, **auth) if method != "GET" else client.get(path, data, **auth)
    assert response.status_code == status and response["Content-Type"] == "application/json"
    problem = response.json()["error"]
    assert words in problem["message"] and problem.get("field") == field
    assert not SyncRun.objects.exists()


def test_an_unexpected_error_answers_json_500_with_an_id_that_is_in_the_log(client, acme, key, monkeypatch, caplog):
    from syncapp import api

    def broken(request, tenant):
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(api.DirectoryUser.objects, "filter", lambda *a, **kw: broken(None, None))
    response = get(client, "/api/v1/users/", key)
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    problem = response.json()["error"]
    assert problem["code"] == "server_error" and problem["id"] in problem["message"] and "fire" not in problem["message"]
    [record] = [r for r in caplog.records if r.name == "syncapp.api"]
    assert problem["id"] in record.getMessage() and record.exc_info[1].args == ("the disk is on fire",)


def test_other_methods_are_refused(client, key):
    response = client.delete("/api/v1/runs/", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_runs_per_day_answer_429(client, acme, key):
    TenantQuota.objects.filter(tenant=acme).update(runs_per_day=1)
    start_run(tenant=acme, trigger="api", enqueue=False)
    response = post(client, "/api/v1/runs/", key, {"queue": True})
    assert response.status_code == 429
    assert response.json()["error"] == {"code": "quota_exceeded", "message": "tenant quota: 1 runs per day reached"}


@pytest.mark.django_db(transaction=True)
def test_apikey_command_prints_the_key_alone_on_its_last_line(acme):
    done = subprocess.run([sys.executable, "manage.py", "apikey", "create", "acme", "--name", "ci"], cwd=ROOT,
                          env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("bk_") and "not shown again" in done.stderr
    from syncapp.apikeys import tenant_for_key

    assert tenant_for_key(key) == acme
    call_command("apikey", "revoke", key.split("_")[1], stdout=open("/dev/null", "w"))
    assert tenant_for_key(key) is None

"""The inventory for machines (syncapp.inventory): `manage.py export` as CSV and JSON lines,
the admin's CSV export of selected rows, and a header even when there is nothing to export."""

import csv
import io
import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from syncapp.risk import refresh_risk

from ..factories import ApplicationFactory, DirectoryUserFactory, TenantFactory, TokenFactory

pytestmark = pytest.mark.django_db
MAIL = "https://mail.google.com/"


@pytest.fixture
def acme():
    tenant = TenantFactory(slug="acme")
    ada = DirectoryUserFactory(tenant=tenant, primary_email="ada@example.org")
    app = ApplicationFactory(tenant=tenant, client_id="mailer.apps", display_name="Mailer, Inc.")
    TokenFactory(tenant=tenant, user=ada, application=app, scopes=["openid", MAIL])
    TokenFactory(tenant=tenant, application=app, scopes=["openid"])
    TokenFactory(tenant=TenantFactory(slug="other"))
    refresh_risk(tenant.pk)
    return tenant


def export(*args) -> str:
    out = io.StringIO()
    call_command("export", *args, stdout=out)
    return out.getvalue()


def test_tokens_export_as_csv_one_row_each_scopes_space_separated(acme):
    rows = list(csv.DictReader(io.StringIO(export("acme", "tokens"))))
    assert len(rows) == 2
    first = rows[0]
    assert (first["user_email"], first["application_client_id"], first["application_name"]) == ("ada@example.org", "mailer.apps", "Mailer, Inc.")
    assert first["scopes"] == f"openid {MAIL}"  # as stored, space-separated
    assert (first["risk"], first["active"], first["revoked_at"]) == ("high", "True", "")


def test_applications_export_as_json_lines_the_apis_records(acme, tmp_path):
    target = tmp_path / "apps.jsonl"
    assert export("acme", "applications", "--format", "jsonl", "--output", str(target)) == ""
    [record] = [json.loads(line) for line in target.read_text().splitlines()]
    assert (record["client_id"], record["users"], record["risk"], record["admin_consent"]) == ("mailer.apps", 2, "high", False)


def test_an_empty_export_still_has_its_header_and_bad_arguments_say_which(db):
    TenantFactory(slug="empty")
    assert export("empty", "applications").splitlines() == [
        "id,client_id,name,native_app,client_type,users,scopes,risk,risk_reason,admin_consent,admin_consent_scopes,first_seen,last_seen"]
    with pytest.raises(CommandError, match="invalid choice: 'grants'"):
        call_command("export", "empty", "grants")
    with pytest.raises(CommandError, match="no tenant 'nobody'"):
        call_command("export", "nobody", "tokens")
    with pytest.raises(CommandError, match="--output: cannot write /nonexistent/dir/x.csv"):
        call_command("export", "empty", "tokens", "--output", "/nonexistent/dir/x.csv")


def test_the_admin_exports_the_selected_tokens_as_csv(admin_client, acme):
    picked = list(acme.tokens.order_by("id").values_list("pk", flat=True))[:1]
    response = admin_client.post(reverse("admin:syncapp_token_changelist"), {"action": "export_csv", "_selected_action": picked})
    assert response.status_code == 200 and response["Content-Disposition"] == 'attachment; filename="tokens.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [int(row["id"]) for row in rows] == picked

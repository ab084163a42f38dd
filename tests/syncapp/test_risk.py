"""Risk (syncapp.risk): the shipped table's entries and their sources, the tenant's overrides,
unknown scopes, an application's risk raised for admin consent and many users, and where it is
recomputed: after the steps that change grants, and when an override is saved."""

import csv
from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.utils import timezone

from syncapp.models import Application, Risk, RiskOverride, Status, Token
from syncapp.risk import TABLE, Rankings, refresh_risk, shipped

from ..conftest import demo_org, sync_here
from ..factories import ApplicationFactory, TenantFactory, TokenFactory

GMAIL = "https://www.googleapis.com/auth/gmail.readonly"
CALENDAR = "https://www.googleapis.com/auth/calendar"
OPENID = "openid"


def test_every_shipped_entry_has_a_level_a_reason_and_a_public_source():
    with TABLE.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == len(shipped()) > 50  # no scope listed twice
    for row in rows:
        assert row["level"] in ("high", "medium", "low"), row  # "unknown" is what the table does not say
        assert row["why"].strip(), row
        source = urlparse(row["source"])
        assert source.scheme == "https" and source.netloc.endswith(("google.com", "microsoft.com")), row
    assert shipped()["https://mail.google.com/"].level == Risk.HIGH
    assert shipped()["Microsoft Graph: Mail.Read"].level == Risk.HIGH
    assert shipped()["Microsoft Graph: User.Read"].level == Risk.LOW


@pytest.mark.django_db
def test_unknown_scopes_rank_unknown_not_low_and_overrides_win():
    tenant = TenantFactory()
    rankings = Rankings.of(tenant.pk)
    assert rankings.riskiest([OPENID, "https://example.org/auth/whatever"]) == (Risk.UNKNOWN, "https://example.org/auth/whatever")
    assert rankings.riskiest([OPENID]) == (Risk.LOW, OPENID)
    assert rankings.riskiest([OPENID, GMAIL, "https://example.org/x"])[0] == Risk.HIGH
    RiskOverride.objects.create(tenant=tenant, scope=GMAIL, level=Risk.LOW, note="our own mail archiver only")
    RiskOverride.objects.create(tenant=tenant, scope="https://example.org/x", level=Risk.MEDIUM, note="known")
    rankings = Rankings.of(tenant.pk)
    assert rankings.riskiest([OPENID, GMAIL, "https://example.org/x"]) == (Risk.MEDIUM, "https://example.org/x")
    assert Rankings.of(TenantFactory().pk).riskiest([GMAIL])[0] == Risk.HIGH  # another tenant's table is its own


@pytest.mark.django_db
def test_an_applications_risk_is_raised_for_admin_consent_and_many_users(settings):
    settings.BALLAST_RISK_MANY_USERS = 3
    tenant = TenantFactory()
    calendar = ApplicationFactory(tenant=tenant)
    consented = ApplicationFactory(tenant=tenant, org_scopes=[CALENDAR])
    popular = ApplicationFactory(tenant=tenant)
    TokenFactory(tenant=tenant, application=calendar, scopes=[OPENID, CALENDAR])
    TokenFactory(tenant=tenant, application=calendar, scopes=[OPENID], revoked_at=timezone.now())  # holds nothing
    for _ in range(3):
        TokenFactory(tenant=tenant, application=popular, scopes=[OPENID])
    assert refresh_risk(tenant.pk) == 3
    found = {app.pk: app for app in Application.objects.filter(tenant=tenant)}
    assert (found[calendar.pk].risk, found[calendar.pk].users, found[calendar.pk].scopes) == (Risk.MEDIUM, 1, [CALENDAR, OPENID])
    assert found[consented.pk].risk == Risk.HIGH and "raised for admin consent" in found[consented.pk].risk_reason
    assert (found[popular.pk].risk, found[popular.pk].users) == (Risk.MEDIUM, 3)  # low, raised for 3 users
    assert "3 users" in found[popular.pk].risk_reason
    assert set(Token.objects.filter(application=calendar).values_list("risk", flat=True)) == {Risk.MEDIUM, Risk.LOW}
    assert not Application.objects.filter(risk_stale=True).exists()
    assert refresh_risk(tenant.pk) == 0  # nothing changed since: nothing to recompute


@pytest.mark.django_db
def test_saving_or_deleting_an_override_recomputes_the_tenants_risk_at_once():
    tenant = TenantFactory()
    app = ApplicationFactory(tenant=tenant, client_id="mailer.apps")
    token = TokenFactory(tenant=tenant, application=app, scopes=[GMAIL])
    refresh_risk(tenant.pk)
    assert Application.objects.get(pk=app.pk).risk == Risk.HIGH
    scope = RiskOverride.objects.create(tenant=tenant, scope=GMAIL, level=Risk.MEDIUM, note="reviewed 2026-11")
    assert (Application.objects.get(pk=app.pk).risk, Token.objects.get(pk=token.pk).risk) == (Risk.MEDIUM, Risk.MEDIUM)
    fixed = RiskOverride.objects.create(tenant=tenant, client_id="mailer.apps", level=Risk.LOW, note="our own tool")
    app.refresh_from_db()
    assert (app.risk, app.risk_reason) == (Risk.LOW, "override: our own tool")
    fixed.delete()
    scope.delete()
    assert Application.objects.get(pk=app.pk).risk == Risk.HIGH


@pytest.mark.django_db(transaction=True)
def test_a_sync_and_the_changes_feed_keep_risk_and_user_counts_current(google_tenant, fake_google):
    users, tokens = demo_org(30, apps=6)
    fake_google.load(users, tokens)
    assert sync_here(google_tenant).status == Status.COMPLETED
    for app in Application.objects.filter(tenant=google_tenant):
        assert app.users == Token.objects.filter(application=app, revoked_at__isnull=True).count() and not app.risk_stale
    fake_google.grant(users[0]["id"], {"clientId": "reader.apps", "displayText": "Reader", "anonymous": False, "nativeApp": False,
                                       "scopes": [OPENID, GMAIL]}, timezone.now() - timedelta(seconds=1))
    assert sync_here(google_tenant, steps="changes").status == Status.COMPLETED
    reader = Application.objects.get(client_id="reader.apps")
    assert (reader.risk, reader.users, reader.risk_stale) == (Risk.HIGH, 1, False)
    assert Token.objects.get(application=reader).risk == Risk.HIGH

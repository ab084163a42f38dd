"""The accidental-delete guard (syncapp.steps.guard, syncapp.steps.confirm): a whole read that
lacks too much of the tenant holds those deletions and revocations, completes the rest, says so,
and a person's confirmation applies them exactly."""

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from syncapp.models import DirectoryUser, GrantEvent, Status, SyncRun, Token, UserAppRelation

from ...conftest import demo_org, sync_here

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def synced(google_tenant, fake_google):
    users, tokens = demo_org(120, apps=8)
    fake_google.load(users, tokens)
    assert sync_here(google_tenant).status == Status.COMPLETED
    return users, tokens


def test_a_read_missing_40_percent_of_tokens_holds_the_revocations_until_confirmed_then_applies_them_exactly(google_tenant, fake_google, synced):
    users, tokens = synced
    gone = [u["id"] for u in users[: len(users) * 4 // 10]]
    missing = {(u, t["clientId"]) for u in gone for t in tokens.get(u, [])}
    fake_google.load(users, {u: ([] if u in gone else ts) for u, ts in tokens.items()})
    active_before = Token.objects.filter(revoked_at__isnull=True).count()

    run = sync_here(google_tenant)
    step = run.step_records.get(name="tokens")
    assert run.status == Status.COMPLETED_WITH_ERRORS and step.status == Status.COMPLETED_WITH_ERRORS
    assert step.held == len(missing) and step.deactivated == 0
    assert f"held {len(missing):,} of {active_before:,} tokens' revocations" in step.error
    assert f"--confirm-deletes {run.pk}" in step.error
    assert Token.objects.filter(revoked_at__isnull=True).count() == active_before  # nothing revoked yet
    assert run.step_records.get(name="users").held == 0  # the users were all there

    call_command("sync", google_tenant.slug, "--confirm-deletes", str(run.pk))
    revoked = set(Token.objects.filter(revoked_at__isnull=False).values_list("user__external_id", "application__client_id"))
    assert revoked == missing
    assert GrantEvent.objects.filter(kind="revoked", run=run).count() == len(missing)
    assert not UserAppRelation.objects.filter(active=True, user__external_id__in=gone).exists()
    step.refresh_from_db()
    assert (step.deactivated, step.held_confirmed_by) == (len(missing), "command")
    with pytest.raises(CommandError, match=f"run {run.pk} holds no deletions to confirm"):
        call_command("sync", google_tenant.slug, "--confirm-deletes", str(run.pk))
    again = sync_here(google_tenant)  # the next full sync agrees
    assert again.status == Status.COMPLETED and again.step_records.get(name="tokens").deactivated == 0


def test_users_missing_from_a_whole_read_are_held_and_a_small_loss_is_applied_at_once(google_tenant, fake_google, synced, admin_client):
    users, tokens = synced
    fake_google.load(users[:60], {u["id"]: tokens.get(u["id"], []) for u in users[:60]})
    run = sync_here(google_tenant, steps="users")
    step = run.step_records.get()
    assert (step.status, step.held) == (Status.COMPLETED_WITH_ERRORS, 60)
    assert not DirectoryUser.objects.filter(deleted_at__isnull=False).exists()
    response = admin_client.post(reverse("admin:syncapp_syncrun_changelist"), {"action": "confirm_deletes", "_selected_action": [run.pk]})
    assert response.status_code == 302
    assert DirectoryUser.objects.filter(deleted_at__isnull=False).count() == 60

    fake_google.load(users[:55], {u["id"]: tokens.get(u["id"], []) for u in users[:55]})  # 5 more: under 50 rows
    step = sync_here(google_tenant, steps="users").step_records.get()
    assert (step.status, step.held, step.deactivated) == (Status.COMPLETED, 0, 5)


def test_confirming_is_refused_for_another_tenants_run_and_an_unknown_run(google_tenant, synced):
    from ...factories import TenantFactory

    other = TenantFactory(slug="other")
    theirs = SyncRun.objects.create(tenant=other, trigger="command", steps="users")
    with pytest.raises(CommandError, match=f"no run {theirs.pk} of tenant acme"):
        call_command("sync", google_tenant.slug, "--confirm-deletes", str(theirs.pk))
    with pytest.raises(CommandError, match="no run 999999 of tenant acme"):
        call_command("sync", google_tenant.slug, "--confirm-deletes", "999999")

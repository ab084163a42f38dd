"""One rule, every surface: the same bad values go through the admin, the commands and the API,
and each refuses them with the same words, naming the field its own way; nothing is stored."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from monitoring.models import TenantQuota
from syncapp.apikeys import new_key
from syncapp.forms import clean_steps
from syncapp.models import ApiKey, SyncRun, Tenant

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db

# (form field, --flag of `tenant add`, bad value, the words every surface uses)
TENANT_RULES = [
    ("slug", None, "Bad Slug!", "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens."),
    ("provider", "--provider", "ldap", "Select a valid choice. ldap is not one of the available choices."),
    ("provider_config", "--config", '{"users": -1}', "demo provider: users must be a whole number >= 0"),
    ("provider_config", "--config", "[1]", 'Enter a JSON object, e.g. {"users": 100}.'),
    ("provider_config", "--config", '{"usres": 200}', "demo provider: unknown key 'usres'; the demo provider knows users, apps, seed, latency_ms, domain"),
    ("provider_config", "--config", "{oops", "Enter a valid JSON."),
    ("sync_every_minutes", "--every-minutes", "0", "Ensure this value is greater than or equal to 1."),
    ("sync_profile", "--profile", "turbo", "unknown profile 'turbo'; choose from"),
]
GOOD_TENANT = {"slug": "acme", "name": "Acme", "provider": "demo", "provider_config": '{"users": 5}', "active": "on", "governor_settings": "{}"}
QUOTA_MANAGEMENT = {"quota-TOTAL_FORMS": "1", "quota-INITIAL_FORMS": "0", "quota-MIN_NUM_FORMS": "0", "quota-MAX_NUM_FORMS": "1"}


@pytest.mark.parametrize("field, flag, value, words", TENANT_RULES)
def test_tenant_rules_in_the_admin_and_tenant_add(admin_client, field, flag, value, words):
    page = admin_client.post(reverse("admin:syncapp_tenant_add"), {**GOOD_TENANT, **QUOTA_MANAGEMENT, field: value})
    assert page.status_code == 200
    assert any(words in message for message in page.context["adminform"].form.errors[field])

    values = {**{"slug": "acme", "--provider": "demo"}, (flag or "slug"): value}
    args = [values.pop("slug"), *[part for pair in values.items() for part in pair]]
    with pytest.raises(CommandError) as refused:
        call_command("tenant", "add", *args)
    assert f"{flag or 'slug'}: " in str(refused.value) and words in str(refused.value)
    assert not Tenant.objects.exists()


# (field, bad value, words)
RUN_RULES = [
    ("steps", ["users", "bogus"], "unknown steps bogus; choose from users, tokens, relations"),
    ("profile", "turbo", "unknown profile 'turbo'; choose from"),
    ("steps", ["changes"], "the demo provider has no changes step (no feed of token changes: full syncs keep its tokens); "
                           "choose from users, tokens, relations"),
]


@pytest.mark.parametrize("field, value, words", RUN_RULES)
def test_run_rules_in_the_admin_the_sync_command_and_the_api(admin_client, client, field, value, words):
    tenant = TenantFactory(slug="acme")
    page = admin_client.post(reverse("admin:syncapp_tenant_start_sync", args=[tenant.pk]), {field: value})
    assert page.status_code == 200 and any(words in m for m in page.context["form"].errors[field])

    with pytest.raises(CommandError) as refused:
        call_command("sync", "acme", f"--{field}", ",".join(value) if isinstance(value, list) else value, stdout=StringIO())
    assert f"--{field}: " in str(refused.value) and words in str(refused.value)

    prefix, key_hash, key = new_key()
    ApiKey.objects.create(tenant=tenant, name="t", prefix=prefix, key_hash=key_hash)
    answer = client.post("/api/v1/runs/", json.dumps({field: value}), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == field and words in answer.json()["error"]["message"]
    assert not SyncRun.objects.exists()


# (field, bad value, words)
QUOTA_RULES = [
    ("max_memory_mb", "8", "Ensure this value is greater than or equal to 16."),
    ("max_concurrent_runs", "0", "Ensure this value is greater than or equal to 1."),
    ("burst", "-1", "Ensure this value is greater than or equal to 0."),
    ("provider_calls_per_second", "0.05", "Ensure this value is greater than or equal to 0.1."),
]


@pytest.mark.parametrize("field, value, words", QUOTA_RULES)
def test_quota_rules_in_the_admin_and_the_quota_command(admin_client, field, value, words):
    tenant = TenantFactory(slug="acme", provider_config={"users": 5})
    form = {**GOOD_TENANT, **QUOTA_MANAGEMENT, f"quota-0-{field}": value}
    page = admin_client.post(reverse("admin:syncapp_tenant_change", args=[tenant.pk]), form)
    assert page.status_code == 200
    [quota_form] = page.context["inline_admin_formsets"][0].formset.forms
    assert quota_form.errors[field] == [words]  # one rule, one message (not the form's ≥ 0 and the model's ≥ 1)

    with pytest.raises(CommandError) as refused:
        call_command("quota", "acme", f"--{field.replace('_', '-')}", value)
    assert str(refused.value) == f"--{field.replace('_', '-')}: {words}"
    assert not TenantQuota.objects.exists()


def test_the_quota_form_shows_the_default_each_empty_field_follows(admin_client, settings):
    settings.BALLAST_QUOTA_DEFAULTS = {**settings.BALLAST_QUOTA_DEFAULTS, "max_memory_mb": 512, "provider_calls_per_second": None}
    tenant = TenantFactory(slug="acme")
    page = admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    assert 'name="quota-0-max_memory_mb"' in page and 'placeholder="512"' in page and 'min="16"' in page
    assert "Empty: the site's default, 512." in page
    assert 'placeholder="unlimited"' in page and "Empty: the site's default, unlimited." in page


def test_quota_reset_puts_a_field_back_to_its_default():
    TenantFactory(slug="acme")
    call_command("quota", "acme", "--burst", "3", "--max-memory-mb", "64", stdout=StringIO())
    out = StringIO()
    call_command("quota", "acme", "--reset", "burst", "--json", stdout=out)
    shown = json.loads(out.getvalue())
    assert "burst" in shown["defaults"] and shown["max_memory_mb"] == 64
    assert TenantQuota.objects.get().burst is None
    with pytest.raises(CommandError, match="--reset: no quota field 'bogus'; choose from max-concurrent-runs"):
        call_command("quota", "acme", "--reset", "bogus")
    with pytest.raises(CommandError, match="--burst and --reset burst contradict each other"):
        call_command("quota", "acme", "--reset", "burst", "--burst", "2")


@pytest.mark.parametrize("given, steps", [
    (None, ["users", "tokens", "relations"]),
    ("", ["users", "tokens", "relations"]),
    ("relations, users", ["users", "relations"]),
    (["tokens"], ["tokens"]),
])
def test_steps_come_in_canonical_order(given, steps):
    assert clean_steps(given) == steps


def test_the_admin_starts_a_sync_with_the_chosen_steps_and_profile(admin_client):
    tenant = TenantFactory(slug="acme")
    change_page = admin_client.get(reverse("admin:syncapp_tenant_change", args=[tenant.pk])).content.decode()
    start_url = reverse("admin:syncapp_tenant_start_sync", args=[tenant.pk])
    assert f'href="{start_url}"' in change_page
    assert f'href="{reverse("admin:syncapp_tenant_test_connection", args=[tenant.pk])}"' in change_page
    answer = admin_client.post(start_url, {"steps": ["tokens", "users"], "profile": "background"})
    run = SyncRun.objects.get()
    assert answer.status_code == 302 and answer["Location"] == reverse("admin:syncapp_syncrun_change", args=[run.pk])
    assert (run.steps, run.profile, run.trigger) == ("users,tokens", "background", "admin")


def test_a_tenant_is_offered_only_the_steps_its_provider_supports(admin_client):
    demo, google = TenantFactory(provider="demo"), TenantFactory(provider="google", provider_config={"access_token": "t"})
    offered = {t: reverse("admin:syncapp_tenant_start_sync", args=[t.pk]) for t in (demo, google)}
    assert 'value="changes"' not in admin_client.get(offered[demo]).content.decode()
    assert 'value="changes"' in admin_client.get(offered[google]).content.decode()


def test_every_known_key_of_each_provider_is_accepted():
    from syncapp.providers import provider_class

    assert provider_class("demo").checked_config({"users": 5, "apps": 3, "seed": 1, "latency_ms": 0, "domain": "x.org"})["users"] == 5
    google = provider_class("google").checked_config(
        {"access_token": "t", "customer": "C1", "base_url": "https://g.example", "timeout_s": 5, "max_attempts": 2, "retry_base_ms": 10,
         "error_retry_base_ms": 5, "retry_cap_s": 4, "connections": 3})
    assert google["customer"] == "C1"

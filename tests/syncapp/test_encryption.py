"""Provider secrets at rest (syncapp.encryption): encrypted in the database, plain in Python,
rotated under the first key, and a process refused at start-up when no key reads them."""

import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from syncapp.checks import secrets_readable
from syncapp.models import Tenant

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
CONFIG = {"tenant_id": "t", "client_id": "c", "client_secret": "s3cret-value-1234"}


def stored(tenant) -> dict:
    """The config as the database holds it (what a dump or a replica shows)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT provider_config FROM syncapp_tenant WHERE id = %s", [tenant.pk])
        raw = cursor.fetchone()[0]
    return json.loads(raw) if isinstance(raw, str) else raw


def test_secrets_are_encrypted_at_rest_and_plain_in_python(settings):
    settings.BALLAST_SECRETS_KEYS = [OLD]
    tenant = TenantFactory(provider="microsoft", provider_config=CONFIG)
    at_rest = stored(tenant)
    assert at_rest["client_secret"].startswith("enc:") and "s3cret" not in json.dumps(at_rest)
    assert (at_rest["tenant_id"], at_rest["client_id"]) == ("t", "c")  # only secrets are encrypted
    assert Tenant.objects.get(pk=tenant.pk).provider_config == CONFIG


def test_rotation_re_encrypts_under_the_first_key_and_the_old_one_can_go(settings):
    settings.BALLAST_SECRETS_KEYS = [OLD]
    tenant = TenantFactory(provider="microsoft", provider_config=CONFIG)
    before = stored(tenant)["client_secret"]
    settings.BALLAST_SECRETS_KEYS = [NEW, OLD]
    assert Tenant.objects.get(pk=tenant.pk).provider_config == CONFIG  # read with the old key
    call_command("secrets", "rotate", stdout=open("/dev/null", "w"))
    assert stored(tenant)["client_secret"] != before
    settings.BALLAST_SECRETS_KEYS = [NEW]
    assert Tenant.objects.get(pk=tenant.pk).provider_config == CONFIG and secrets_readable() == []


def test_start_up_is_refused_when_no_key_reads_a_stored_secret(settings):
    settings.BALLAST_SECRETS_KEYS = [OLD]
    TenantFactory(slug="contoso", provider="microsoft", provider_config=CONFIG)
    settings.BALLAST_SECRETS_KEYS = [NEW]
    errors = secrets_readable()
    assert [e.id for e in errors] == ["syncapp.E001"] and "contoso" in errors[0].msg
    settings.BALLAST_SECRETS_KEYS = []
    assert [e.id for e in secrets_readable()] == ["syncapp.E001"]
    with pytest.raises(CommandError, match="SECRETS_KEYS is empty"):
        call_command("secrets", "rotate")


def test_without_keys_secrets_stay_as_they_are(settings):
    settings.BALLAST_SECRETS_KEYS = []
    tenant = TenantFactory(provider="microsoft", provider_config=CONFIG)
    assert stored(tenant)["client_secret"] == CONFIG["client_secret"] and secrets_readable() == []


def test_check_deploy_warns_while_secrets_are_stored_as_they_are(settings):
    from syncapp.checks import secrets_keys_set

    settings.BALLAST_SECRETS_KEYS = []
    assert [w.id for w in secrets_keys_set()] == ["syncapp.W001"]
    settings.BALLAST_SECRETS_KEYS = [NEW]
    assert secrets_keys_set() == []

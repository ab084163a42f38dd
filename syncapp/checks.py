"""System checks of syncapp: what must hold before any process of it starts."""

import json

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import DatabaseError, connection

from .encryption import SecretUnreadable, decrypt_secrets


@register()
def secrets_readable(app_configs=None, **kwargs) -> list:
    """Every encrypted provider secret is readable with SECRETS_KEYS: else syncs would fail tenant
    by tenant, later. Read raw, so that a bad value is named, not raised."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT slug, provider_config FROM syncapp_tenant")
            rows = cursor.fetchall()
    except DatabaseError:  # no table yet (before migrate), or no database to ask: nothing stored to read
        return []
    unreadable = []
    for slug, config in rows:
        config = json.loads(config) if isinstance(config, str) else config
        try:
            decrypt_secrets(config)
        except SecretUnreadable:
            unreadable.append(slug)
    if not unreadable:
        return []
    return [Error(
        f"the provider secrets of {', '.join(unreadable)} are encrypted under a key SECRETS_KEYS does not hold",
        hint="set SECRETS_KEYS to the keys they were encrypted with (a new key goes first, the old ones after it)",
        id="syncapp.E001",
    )]


@register(deploy=True)
def secrets_keys_set(app_configs=None, **kwargs) -> list:
    if getattr(settings, "BALLAST_SECRETS_KEYS", []):
        return []
    return [Warning("provider secrets are stored in plain text: SECRETS_KEYS is empty", id="syncapp.W001",
                    hint="set SECRETS_KEYS to a Fernet key, then run manage.py secrets rotate")]

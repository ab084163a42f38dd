"""System checks of syncapp: what must hold before any process of it starts."""

import json

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import DatabaseError, connection

from .encryption import SecretUnreadable, decrypt_secrets
from .providers import ConfigError
from .providers.credentials import check_credentials_file


def _stored_configs() -> list[tuple[str, dict]]:
    """Each tenant's slug and provider config as stored, read raw: a value a model field would
    raise on is named here instead. Empty before migrate, or without a database to ask."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT slug, provider_config FROM syncapp_tenant")
            rows = cursor.fetchall()
    except DatabaseError:  # no table yet (before migrate), or no database to ask: nothing stored to read
        return []
    return [(slug, json.loads(config) if isinstance(config, str) else config) for slug, config in rows]


@register()
def secrets_readable(app_configs=None, **kwargs) -> list:
    """Every encrypted provider secret is readable with SECRETS_KEYS: else syncs would fail tenant
    by tenant, later."""
    unreadable = []
    for slug, config in _stored_configs():
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


@register()
def credentials_files_confined(app_configs=None, **kwargs) -> list:
    """A tenant saved before credential files were confined (or whose file moved since) is named
    now, not when its next sync fails."""
    refused = []
    for slug, config in _stored_configs():
        value = config.get("credentials_file") if isinstance(config, dict) else None
        if isinstance(value, str) and value:
            try:
                check_credentials_file(value, "credentials_file")
            except ConfigError as exc:
                refused.append(f"{slug} ({exc})")
    if not refused:
        return []
    return [Warning(f"the key files of these tenants will be refused: {'; '.join(refused)}", id="syncapp.W002",
                    hint="put each key in PROVIDER_CREDENTIALS_DIR, readable by Ballast's user and group only, and name it there")]


@register(deploy=True)
def secrets_keys_set(app_configs=None, **kwargs) -> list:
    if getattr(settings, "BALLAST_SECRETS_KEYS", []):
        return []
    return [Warning("provider secrets are stored in plain text: SECRETS_KEYS is empty", id="syncapp.W001",
                    hint="set SECRETS_KEYS to a Fernet key, then run manage.py secrets rotate")]

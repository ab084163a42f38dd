"""Provider secrets encrypted at rest: each secret value of a tenant's provider config (the keys
syncapp.secrets.is_secret recognises) is stored as "enc:" + a Fernet token (cryptography's
MultiFernet: AES-128-CBC with HMAC-SHA256). SECRETS_KEYS lists the keys: the first encrypts,
all decrypt, so keys rotate (`manage.py secrets rotate` re-encrypts under the first). Without
keys, values are stored as they are: the demo needs none; `check --deploy` warns.

Python sees the plain values (SecretsJSONField decrypts as it reads); a database dump, a read
replica or a backup holds only the tokens.
"""

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from .secrets import is_secret

PREFIX = "enc:"


class SecretUnreadable(ValueError):
    """An encrypted value that no configured key can read (the key is missing or wrong)."""


def _fernet() -> MultiFernet | None:
    return _fernet_of(tuple(getattr(settings, "BALLAST_SECRETS_KEYS", [])))


@lru_cache(maxsize=8)
def _fernet_of(keys: tuple[str, ...]) -> MultiFernet | None:
    """Made once per set of keys: every tenant read decrypts with it."""
    return MultiFernet([Fernet(key) for key in keys]) if keys else None


def encrypted(value: str) -> str:
    """A secret as it is stored: encrypted under the first key, or as it is without keys."""
    fernet = _fernet()
    if fernet is None:
        return value
    return PREFIX + fernet.encrypt(value.encode()).decode()


def decrypted(value: str) -> str:
    """A stored secret, read; SecretUnreadable when no configured key can read it."""
    if not value.startswith(PREFIX):
        return value
    fernet = _fernet()
    if fernet is None:
        raise SecretUnreadable("a provider secret is encrypted and SECRETS_KEYS is empty")
    try:
        return fernet.decrypt(value[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("a provider secret is encrypted under a key SECRETS_KEYS does not hold") from None


def _each_secret(config, change) -> dict:
    if not isinstance(config, dict):
        return config
    return {k: (change(v) if is_secret(k) and isinstance(v, str) and v else v) for k, v in config.items()}


def encrypt_secrets(config: dict) -> dict:
    return _each_secret(config, encrypted)


def decrypt_secrets(config: dict) -> dict:
    return _each_secret(config, decrypted)


class SecretsJSONField(models.JSONField):
    """A JSON object whose secret values are encrypted in the database and plain in Python."""

    def from_db_value(self, value, expression, connection):
        return decrypt_secrets(super().from_db_value(value, expression, connection))

    def get_prep_value(self, value):
        return super().get_prep_value(encrypt_secrets(value))

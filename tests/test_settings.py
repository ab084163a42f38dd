"""A missing or malformed variable stops start-up with one line naming it."""

import subprocess
import sys

import pytest

from .conftest import ROOT


KEY = "a-key-of-this-test-only-0123456789-abcdefghijklmnopqrstuvwxyz"
# What tests/settings.py sets for the test process: a child checking the project's own settings starts without them.
TESTS_OWN = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"}


def check(*args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py check with the project's settings, no .env, and only the variables given
    (SECRET_KEY a test key unless given)."""
    import os

    base = {k: v for k, v in os.environ.items() if k not in TESTS_OWN}
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args], cwd=ROOT, capture_output=True, text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "project.settings", "ENV_FILE": "", "SECRET_KEY": KEY, **env},
    )


@pytest.mark.parametrize(
    "env, line",
    [
        ({"Q_WORKERS": "many"}, "Q_WORKERS must be a whole number >= 1 (got 'many')."),
        ({"DEBUG": "perhaps"}, "DEBUG must be true or false (got 'perhaps')."),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE must be a whole number >= 1 (got '0')."),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR (got 'LOUD')."),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL such as redis://127.0.0.1:6379/0."),
        (
            {"DATABASE_URL": "mysql://root:hunter2@db/ballast"},
            "DATABASE_URL must be a database URL such as postgres://USER@HOST:5432/NAME or sqlite:///PATH, not a mysql URL.",
        ),
        ({"SECURE_SSL_REDIRECT": "sometimes"}, "SECURE_SSL_REDIRECT must be true or false (got 'sometimes')."),
        (
            {"SECRETS_KEYS": "not-a-key"},
            "SECRETS_KEYS must be Fernet keys separated by commas (make one with python3 -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())') (got 'key 1 is not one').",
        ),
        (
            {"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"},
            "SECURE_PROXY_SSL_HEADER must be a header and the value it has over HTTPS, such as 'X-Forwarded-Proto: https' "
            "(got 'X-Forwarded-Proto').",
        ),
        (
            {"SECRET_KEY": ""},
            "SECRET_KEY must be set when DEBUG is off; make one with python3 -c 'import secrets; print(secrets.token_urlsafe(50))' "
            "(`make demo` writes one to .env).",
        ),
    ],
)
def test_bad_settings_stop_start_up_with_one_clear_line(env, line):
    done = check(**env)
    assert done.returncode != 0
    assert done.stderr.strip() == f"Ballast configuration error: {line}"
    assert "hunter2" not in done.stderr


def test_defaults_need_nothing_but_a_secret_key():
    done = check()
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout


def test_with_debug_on_a_development_key_stands_in():
    done = check(DEBUG="true", SECRET_KEY="")
    assert done.returncode == 0, done.stderr


def test_the_defaults_are_https_and_a_proxy_header_is_believed_only_when_named():
    script = ("from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
              "s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER)")
    import os

    def shown(**env):
        base = {k: v for k, v in os.environ.items() if k not in TESTS_OWN}
        done = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                              env={**base, "DJANGO_SETTINGS_MODULE": "project.settings", "ENV_FILE": "", "SECRET_KEY": KEY, **env})
        return done.stdout.strip().splitlines()[-1]  # after the shell's own line about its imports

    assert shown() == "True 31536000 True True None"
    assert shown(SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https") == "True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https')"

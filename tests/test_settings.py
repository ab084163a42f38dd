"""A missing or malformed variable stops start-up with one line naming it."""

import subprocess
import sys

import pytest

from .conftest import ROOT


def check(**env: str) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
        env={**base, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
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
    ],
)
def test_bad_settings_stop_start_up_with_one_clear_line(env, line):
    done = check(**env)
    assert done.returncode != 0
    assert done.stderr.strip() == f"Ballast configuration error: {line}"
    assert "hunter2" not in done.stderr


def test_defaults_need_no_environment_at_all():
    done = check()
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout

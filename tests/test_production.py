"""The production example in deploy/systemd/ works as written: the web unit's command line serves
the admin, the health checks and the static files (WhiteNoise, DEBUG off) under gunicorn; the
cluster unit runs the qcluster the integration tests run."""

import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, child_env, wait_for

UNITS = ROOT / "deploy" / "systemd"


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit's settings, each key with all its values (Environment= repeats)."""
    settings: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_the_web_unit_serves_the_admin_health_and_static_files(tmp_path):
    web = unit("ballast-web.service")
    [command] = web["ExecStart"]
    program, *args = shlex.split(command)
    assert program == "/opt/ballast/.venv/bin/gunicorn" and args[0] == "project.wsgi"
    port = free_port()
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"
    unit_env = dict(value.split("=", 1) for value in web["Environment"])
    env = child_env(**{k: v for k, v in unit_env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
                    STATIC_ROOT=str(tmp_path / "static"), DEBUG="false", ALLOWED_HOSTS="127.0.0.1")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def answers():
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()
                return False

        wait_for(answers, 60, "gunicorn to answer")
        assert httpx.get(f"{base}/admin/login/").status_code == 200
        css = httpx.get(f"{base}/static/admin/css/base.css")  # DEBUG is off: only WhiteNoise serves this
        assert css.status_code == 200 and "text/css" in css.headers["content-type"]
        assert httpx.get(f"{base}/readyz").headers["content-type"] == "application/json"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_cluster_unit_runs_qcluster_without_a_pool_and_stops_gracefully():
    cluster = unit("ballast-cluster@.service")
    assert cluster["ExecStart"] == ["/opt/ballast/.venv/bin/python manage.py qcluster"]
    assert "DB_POOL=false" in cluster["Environment"]  # forked workers and a pool do not mix
    assert cluster["KillSignal"] == ["SIGTERM"] and cluster["KillMode"] == ["control-group"]
    assert cluster["EnvironmentFile"] == unit("ballast-web.service")["EnvironmentFile"]


def test_the_example_environment_names_only_variables_ballast_reads():
    documented = {line.split("=", 1)[0].lstrip("# ") for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line}
    example = [line.split("=", 1)[0] for line in (UNITS / "ballast.env.example").read_text().splitlines() if line and not line.startswith("#")]
    assert example and set(example) <= documented


def environment_file(name: str) -> dict[str, str]:
    """A systemd EnvironmentFile as systemd reads it: KEY=value, quotes around a value dropped."""
    values = {}
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    return values


def test_the_recipes_settings_pass_check_deploy_with_no_warning(tmp_path):
    """ballast.env.example with the key the README's recipe appends, and the web unit's own
    variables: every security setting is HTTPS's by default, and nothing is left to warn about."""
    import os
    import secrets

    recipe = (ROOT / "README.md").read_text()
    assert "secrets.token_urlsafe(50)" in recipe and "check --deploy --fail-level WARNING" in recipe
    assert "SECRETS_KEYS=$(.venv/bin/python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" in recipe
    from cryptography.fernet import Fernet

    env = {**environment_file("ballast.env.example"), "SECRET_KEY": secrets.token_urlsafe(50), "SECRETS_KEYS": Fernet.generate_key().decode()}
    env.update(value.split("=", 1) for value in unit("ballast-web.service")["Environment"])
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)  # made by ballast-metrics-dir.service in production
    assert env["ENV_FILE"] == ""  # the clone's .env, if any, is never read
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT, capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "project.settings", **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_files_are_written_under_var_lib_never_in_the_root_owned_clone():
    env = environment_file("ballast.env.example")
    assert env["STATIC_ROOT"].startswith("/var/lib/ballast/") and env["IMPORT_DIR"].startswith("/var/lib/ballast/")
    assert "sudo install -d -m 750 -o ballast -g ballast /var/lib/ballast" in (ROOT / "README.md").read_text()


def test_the_metrics_directory_is_emptied_before_the_units_start_and_only_then(tmp_path):
    emptier = unit("ballast-metrics-dir.service")
    assert emptier["Type"] == ["oneshot"] and emptier["RemainAfterExit"] == ["yes"]  # once, not at each unit's restart
    for name in ("ballast-web.service", "ballast-cluster@.service"):
        settings = unit(name)
        directory = dict(value.split("=", 1) for value in settings["Environment"])["PROMETHEUS_MULTIPROC_DIR"]
        assert emptier["ExecStart"] == ["/bin/rm -rf " + directory, f"/usr/bin/install -d -m 750 -o ballast -g ballast /run/ballast {directory}"]
        assert settings["Requires"] == settings["PartOf"] == ["ballast-metrics-dir.service"]
        assert "ballast-metrics-dir.service" in settings["After"][0].split()
        assert "RuntimeDirectory" not in settings  # systemd would remove it when the unit stops
    stale = tmp_path / "metrics"
    stale.mkdir()
    (stale / "counter_4242.db").write_bytes(b"from a process of an earlier start")
    subprocess.run(shlex.split(emptier["ExecStart"][0].replace(directory, str(stale))), check=True)
    assert not stale.exists()

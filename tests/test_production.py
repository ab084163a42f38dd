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

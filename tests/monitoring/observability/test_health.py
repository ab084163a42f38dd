import socket
import subprocess
import sys

import httpx
import pytest

from monitoring.governor.readings.fake import reading
from monitoring.observability.health import resource_status
from tests.conftest import ROOT, child_env, wait_for
from tests.factories import TenantFactory


@pytest.mark.django_db
def test_ready_when_the_database_and_broker_answer(client):
    assert client.get("/healthz", HTTP_HOST="127.0.0.1").json() == {"status": "ok"}
    response = client.get("/readyz", HTTP_HOST="127.0.0.1")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ready"
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert body["checks"]["cluster"] == {**body["checks"]["cluster"], "ok": False, "clusters": 0}  # reported, not required
    assert body["resources"]["status"] == "ok" and body["resources"]["rss_bytes"] > 0  # the test settings' calm machine
    assert body["resources"]["cpu_scope"] == "calm (tests), 2 CPUs"
    assert "RateLimit" not in response  # health is exempt from rate limits


@pytest.mark.parametrize("memory, status", [(10, "ok"), (70, "warning"), (86, "critical")])
def test_resource_status_levels(memory, status):
    assert resource_status(reading(5, memory))["status"] == status


@pytest.mark.django_db
def test_readiness_judges_cpu_averaged_as_the_alerts_do_not_by_one_reading(monkeypatch):
    from monitoring.governor.policy import Ewma
    from monitoring.observability import health
    from monitoring.observability.alerts import resource_alerts

    monkeypatch.setattr(resource_alerts, "cpu", Ewma(5.0))
    for n in range(40):  # a machine held at its 80% ceiling: single readings up to 88%
        resource_alerts.cpu.add((72, 88)[n % 2], 0.5)
    latest = reading(88, 10)
    monkeypatch.setattr(health, "get_sampler", lambda: type("Sampler", (), {"latest": staticmethod(lambda: latest)}))
    assert resource_status(latest)["status"] == "critical"  # that one reading alone would say so
    ready, body = health.readiness()
    assert ready and body["resources"]["status"] == "warning"  # averaged: about 80%
    assert 78 <= body["resources"]["cpu_percent"] <= 82


def test_not_ready_when_the_database_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_db = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = child_env(DATABASE_URL=f"postgres://nobody@127.0.0.1:{dead_db}/ballast", DJANGO_SETTINGS_MODULE="project.settings")
    env.pop("REDIS_URL", None)
    serve = (  # a plain WSGI server: runserver would stop at start-up over the unreachable database
        "import sys; from wsgiref.simple_server import make_server; from project.wsgi import application; "
        "make_server('127.0.0.1', int(sys.argv[1]), application).serve_forever()"
    )
    web = subprocess.Popen([sys.executable, "-c", serve, str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(path):
            try:
                return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            except httpx.HTTPError:
                return None

        alive = wait_for(lambda: get("/healthz"), 60, "the server")
        ready = get("/readyz")
    finally:
        web.terminate()
        web.wait(30)
    assert alive.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready" and body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["error"]


@pytest.mark.django_db
def test_metrics_are_open_unless_a_token_is_set(client, settings):
    assert client.get("/metrics").status_code == 200  # Prometheus' convention
    settings.BALLAST_METRICS_TOKEN = "s3cret"
    for header in ("", "Bearer wrong", "Basic s3cret"):
        refused = client.get("/metrics", HTTP_AUTHORIZATION=header)
        assert refused.status_code == 401 and refused["WWW-Authenticate"] == "Bearer"
    answered = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert answered.status_code == 200 and b"ballast_allocations" in answered.content


def test_labelled_counters_start_at_zero_in_a_process_that_counted_nothing():
    """A quiet machine's dashboard and alerts read 0, not "no data"."""
    script = "import django; django.setup(); from prometheus_client import generate_latest; print(generate_latest().decode())"
    exported = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=child_env(), capture_output=True, text=True, check=True).stdout
    for series in (
        'ballast_throttle_events_total{kind="brake",route="tokens"} 0.0',
        'ballast_throttle_events_total{kind="stop",route="relations"} 0.0',
        'ballast_sync_runs_total{status="failed"} 0.0',
        'ballast_sync_rows_total{outcome="invalid",step="users"} 0.0',
        'ballast_sync_duration_seconds_count{step="changes"} 0.0',
    ):
        assert series in exported


@pytest.mark.django_db
def test_each_tenants_rate_limit_denials_start_at_zero(client):
    TenantFactory(slug="quiet-one")
    assert 'ballast_ratelimit_denied_total{tenant="quiet-one"} 0.0' in client.get("/metrics").content.decode()

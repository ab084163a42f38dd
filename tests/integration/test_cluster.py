"""Through real `qcluster` processes: the queue, the forked workers, the database they share."""

import json
import subprocess
import sys

import pytest
from django.db import connection
from django.utils import timezone

from monitoring.ledger.allocations import allocate, release
from monitoring.models import AllocationEvent
from syncapp.models import Application, DirectoryUser, Status, SyncRun, Token, UserAppRelation
from syncapp.runs import start_run

from ..conftest import ROOT, child_env, demo_org, wait_for
from ..factories import TenantFactory

pytestmark = [pytest.mark.cluster, pytest.mark.django_db(transaction=True)]

MALFORMED_USERS = [
    {"primaryEmail": "ghost@example.org"},
    {"id": "1", "primaryEmail": "x@example.org", "orgUnitPath": "/" + "o" * 400},
    {"id": "2", "primaryEmail": "not-an-address"},
]


def sync_command(slug: str) -> dict:
    """`manage.py sync SLUG --wait --json` as a user runs it, against the test database."""
    done = subprocess.run(
        [sys.executable, "manage.py", "sync", slug, "--wait", "--json"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "carrying the run out in this process" not in done.stderr  # the cluster did the work
    return json.loads(done.stdout)


def test_sync_through_the_cluster_stores_exactly_the_valid_directory(start_cluster, google_tenant, fake_google):
    users, tokens = demo_org(2000)
    for user in users[::400]:  # a few malformed grants among the good ones
        tokens[user["id"]] = tokens[user["id"]] + [{"clientId": "", "displayText": "blank"}]
    fake_google.load(users[:1000] + MALFORMED_USERS + users[1000:], tokens)
    fake_google.flaky_every = 97  # a 503 now and then
    valid_tokens = {(uid, t["clientId"]) for uid, ts in tokens.items() for t in ts if t["clientId"]}
    assert 5000 < len(valid_tokens) < 6500

    start_cluster()
    result = sync_command("acme")

    assert result["status"] == "completed_with_errors"
    assert result["steps"]["users"] | {"duration_s": None} == {
        "status": "completed_with_errors", "duration_s": None, "received": 2003, "created": 2000,
        "updated": 0, "unchanged": 0, "deactivated": 0, "invalid": 3, "failed": 0,
    }
    assert result["steps"]["tokens"]["created"] == len(valid_tokens)
    assert result["steps"]["tokens"]["invalid"] == 5
    assert result["steps"]["relations"]["created"] == len(valid_tokens)
    assert fake_google.flaky_answers > 10  # and the provider retried its way through them
    stored = set(Token.objects.values_list("user__external_id", "application__client_id"))
    assert stored == valid_tokens
    assert DirectoryUser.objects.count() == 2000
    assert UserAppRelation.objects.filter(active=True).count() == len(valid_tokens)
    assert Application.objects.count() == len({c for _, c in valid_tokens})
    run = SyncRun.objects.get(pk=result["id"])
    assert run.task_id and all(step.task_id for step in run.step_records.all())

    # Nothing changed at the source: nothing changes here.
    again = sync_command("acme")
    for step in again["steps"].values():
        assert step["created"] == step["updated"] == step["deactivated"] == 0

    # Users removed and tokens revoked at the source are marked, exactly those.
    removed = users[:50]
    revoker = users[100]["id"]
    kept_tokens = {k: v for k, v in tokens.items() if k not in {u["id"] for u in removed}}
    kept_tokens[revoker] = []
    fake_google.load(users[50:], kept_tokens)
    third = sync_command("acme")
    revoked_expected = {(uid, c) for uid, c in valid_tokens if uid == revoker or uid in {u["id"] for u in removed}}
    assert third["steps"]["users"]["deactivated"] == 50
    assert third["steps"]["tokens"]["deactivated"] == len(revoked_expected)
    assert set(DirectoryUser.objects.filter(deleted_at__isnull=False).values_list("external_id", flat=True)) == {
        u["id"] for u in removed
    }
    assert set(Token.objects.filter(revoked_at__isnull=False).values_list("user__external_id", "application__client_id")) == revoked_expected


def test_cluster_with_the_connection_pool_on_postgresql_completes_runs(start_cluster):
    if connection.vendor != "postgresql":
        pytest.skip("the psycopg pool exists on PostgreSQL only")
    start_cluster(DB_POOL="true", Q_WORKERS="2")
    tenants = [TenantFactory(slug=f"pool-{i}", provider_config={"users": 200, "apps": 8, "seed": i}) for i in range(4)]
    runs = [start_run(tenant=t, trigger=SyncRun.Trigger.API) for t in tenants]
    wait_for(
        lambda: SyncRun.objects.filter(pk__in=[r.pk for r in runs], finished_at__isnull=False).count() == len(runs),
        120, "four runs to finish on pooled, forked workers",
    )
    assert set(SyncRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)) == {Status.COMPLETED}
    assert DirectoryUser.objects.count() == 800


def test_a_run_over_the_quota_is_queued_and_later_completes_on_the_cluster(start_cluster):
    """The tenant's one slot is held (here by the test, so the wait does not hang on timing); the
    run waits on the cluster with the reason, and completes once the slot is given back."""
    start_cluster()
    tenant = TenantFactory(slug="busy", provider_config={"users": 50})
    holder = allocate("run_slot", owner="run-elsewhere", tenant_id=tenant.pk)  # default quota: one run at a time
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API)
    wait_for(lambda: SyncRun.objects.get(pk=run.pk).waiting_reason, 60, "the run to wait for the slot")
    run.refresh_from_db()
    assert run.status == Status.QUEUED and run.waiting_reason == "tenant quota: 1 of 1 run slot in use"
    assert AllocationEvent.objects.filter(owner=f"run-{run.pk}", kind="waiting").exists()
    released_at = timezone.now()
    release(holder)
    wait_for(lambda: SyncRun.objects.get(pk=run.pk).finished_at, 120, "the run to complete once the slot is free")
    run.refresh_from_db()
    assert run.status == Status.COMPLETED and run.started_at >= released_at


def test_metrics_made_in_cluster_workers_reach_metrics(start_cluster, tmp_path):
    """prometheus_client's multiprocess mode: the workers write, the web process adds them up."""
    import socket

    import httpx

    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()  # a fresh (wiped) directory, as at every start
    start_cluster(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    tenant = TenantFactory(slug="metered", provider_config={"users": 120, "apps": 6})
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.API)
    wait_for(lambda: SyncRun.objects.get(pk=run.pk).finished_at, 60, "the run to finish")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT, env=child_env(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        def scrape():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            except httpx.HTTPError:
                return None

        response = wait_for(scrape, 60, "the web process to serve /metrics")
    finally:
        web.terminate()
        web.wait(30)
    assert response.status_code == 200
    lines = response.text.splitlines()

    def value(sample: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(sample))

    assert value('ballast_sync_runs_total{status="completed"}') == 1
    assert value('ballast_sync_rows_total{outcome="created",step="users"}') == 120
    assert value('ballast_provider_calls_total{provider="demo",status="200"}') >= 121  # a page and a call per user
    assert value('ballast_sync_duration_seconds_count{step="tokens"}') == 1
    assert any(line.startswith('ballast_allocations{resource="run_slot",state="granted"}') for line in lines)
    assert any(line.startswith("django_db_execute_total") for line in lines)  # django-prometheus's own

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import hypothesis
import pytest
from django.db import connection
from django_q.brokers import get_broker

from monitoring.observability.health import cluster_is_running
from syncapp.models import SyncRun
from syncapp.providers.demo import DemoProvider
from syncapp.runs import start_run
from syncapp.tasks import run_in_process

from .factories import TenantFactory
from .fakegoogle import FakeDirectory

ROOT = Path(__file__).resolve().parent.parent

# Property tests (tests/hostile/): a fixed number of examples, drawn the same way on every run, so
# CI is fast and a failure repeats. HYPOTHESIS_PROFILE=explore draws many more, at random.
hypothesis.settings.register_profile(
    "ci", max_examples=60, derandomize=True, deadline=None, database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture, hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.register_profile("explore", parent=hypothesis.settings.get_profile("ci"), max_examples=2000, derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def demo_org(users: int, seed: int = 7, apps: int = 30) -> tuple[list[dict], dict[str, list[dict]]]:
    """A synthetic organisation in the Directory API's shape, from the demo provider."""
    provider = DemoProvider({"users": users, "apps": apps, "seed": seed})
    records = [user for page in provider.user_pages() for user in page.records]
    return records, {user["id"]: provider.user_tokens(user["id"]) for user in records}


@pytest.fixture(autouse=True)
def forget_rate_limits():
    """Windows outlive a test's database (the cache table is not flushed; Redis keeps them),
    and tenant ids are reused: start every test with none."""
    yield
    from monitoring.ratelimit import sliding_window as ratelimit
    from monitoring.ratelimit.middleware import request_limits
    from syncapp.apikeys import tenant_for_key

    ratelimit.store_keys_clear()
    request_limits.clear()  # per-process lookups cached by tenant id and key: ids are reused
    tenant_for_key.clear()


@pytest.fixture(autouse=True)
def fresh_process_cpu(monkeypatch):
    """What one test's syncs did to this process's CPU budget and view of its neighbours is not the next one's."""
    from monitoring.governor import route as governor
    from monitoring.governor.policy import CpuShare

    monkeypatch.setattr(governor, "PROCESS_CPU_BUDGET", governor.CpuBudget())
    monkeypatch.setattr(governor, "PROCESS_CPU_SHARE", CpuShare())


@pytest.fixture
def fake_google():
    directory = FakeDirectory().start()
    yield directory
    directory.stop()


@pytest.fixture
def credentials_dir(tmp_path, settings):
    """PROVIDER_CREDENTIALS_DIR, a folder of this test's own: where a credentials_file may be."""
    settings.BALLAST_PROVIDER_CREDENTIALS_DIR = tmp_path
    return tmp_path


@pytest.fixture
def google_tenant(db, fake_google):
    return TenantFactory(
        slug="acme",
        provider="google",
        provider_config={
            "base_url": fake_google.url,
            "access_token": "static-test-token",
            "retry_base_ms": 1,
            "error_retry_base_ms": 1,
            "max_attempts": 4,
        },
    )


def sync_here(tenant, steps=None) -> SyncRun:
    """Carry out a run in this process (what `sync --wait` does without a cluster)."""
    run = start_run(tenant=tenant, trigger=SyncRun.Trigger.COMMAND, steps=steps, enqueue=False)
    run_in_process(run.pk)
    return SyncRun.objects.get(pk=run.pk)


def step_counters(run: SyncRun, step: str) -> dict:
    s = run.step_records.get(name=step)
    return {k: getattr(s, k) for k in ("received", "created", "updated", "unchanged", "deactivated", "invalid", "failed")}


@pytest.fixture
def batches_as_the_governor_sizes_them(monkeypatch):
    """For tests that set batch sizes to place checkpoints: the COPY writer's scaling would move them."""
    monkeypatch.setattr("syncapp.steps.context.BATCH_SCALE", {"copy": 1, "orm": 1})


def database_url() -> str:
    """The URL of the database the tests run on, for processes the tests start."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "", safe="") + (":" + quote(db["PASSWORD"], safe="") if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**extra: str) -> dict:
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url(), **extra}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def start_cluster(transactional_db, tmp_path):
    """Start real `manage.py qcluster` processes on the test database; stop them afterwards."""
    started = []
    get_broker().purge_queue()  # tasks queued by earlier tests (Redis keeps them) are not ours

    def start(**env: str) -> subprocess.Popen:
        log = open(tmp_path / f"qcluster-{len(started)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT, env=child_env(**{"Q_WORKERS": "2", **env}), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        started.append((process, log))
        wait_for(lambda: process.poll() is not None or cluster_is_running(), 60, "the cluster to report itself")
        assert process.poll() is None, (tmp_path / f"qcluster-{len(started) - 1}.log").read_text()
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # the cluster stops its own workers
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
    # Let the cluster's status key expire so the next test sees no cluster.
    wait_for(lambda: not cluster_is_running(), 15, "the cluster status to expire")

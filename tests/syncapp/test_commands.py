import json
import re
import signal
import subprocess
import sys
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django_q.brokers import get_broker

from monitoring.models import Allocation
from syncapp.models import Status, SyncRun, Tenant

from ..conftest import ROOT, child_env, wait_for
from ..factories import DirectoryUserFactory, TenantFactory, TokenFactory
from ..fakegoogle import USERS_PATH, google_error


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
class TestTenant:
    def test_add_list_and_show(self):
        assert "Added tenant acme (Demo" in run("tenant", "add", "acme", "--provider", "demo", "--name", "Acme", "--config", '{"users": 5}')
        tenant = Tenant.objects.get(slug="acme")
        assert (tenant.name, tenant.provider_config) == ("Acme", {"users": 5})
        listing = run("tenant", "list").splitlines()
        assert listing[0].split() == ["SLUG", "PROVIDER", "ACTIVE", "USERS", "LAST", "RUN"]
        assert listing[1].split() == ["acme", "demo", "yes", "0", "-"]

    def test_show_json_counts_each_state(self):
        tenant = TenantFactory(slug="acme")
        DirectoryUserFactory(tenant=tenant)
        DirectoryUserFactory(tenant=tenant, is_suspended=True)
        gone = DirectoryUserFactory(tenant=tenant, deleted_at="2026-01-01T00:00Z", is_suspended=True)
        TokenFactory(tenant=tenant, user=gone)
        TokenFactory(tenant=tenant, revoked_at="2026-01-01T00:00Z")
        assert json.loads(run("tenant", "show", "acme", "--json")) == {
            "slug": "acme",
            "users": {"active": 3, "suspended": 1, "deleted": 1},
            "tokens": {"active": 1, "revoked": 1},
            "applications": 2,
            "relations": {"active": 0, "inactive": 0},
        }

    @pytest.mark.parametrize(
        "args, message",
        [
            (["--provider", "demo", "--config", "{oops"], "--config: Enter a valid JSON."),
            (["--provider", "demo", "--config", "[1]"], "--config: Enter a JSON object"),
            (["--provider", "demo", "--config", '{"users": -1}'], "--config: demo provider: users must be a whole number >= 0"),
            (["--provider", "google"], "--config: google provider: set access_token, or credentials_file and subject"),
            (["--provider", "ldap"], "--provider: Select a valid choice. ldap is not one of the available choices."),
        ],
    )
    def test_bad_input_is_refused_clearly(self, args, message):
        with pytest.raises(CommandError, match=message):
            run("tenant", "add", "acme", *args)
        assert not Tenant.objects.exists()

    def test_duplicates_and_unknown_slugs(self):
        TenantFactory(slug="acme")
        with pytest.raises(CommandError, match="slug: Tenant with this Slug already exists."):
            run("tenant", "add", "acme", "--provider", "demo")
        with pytest.raises(CommandError, match="no tenant 'nope'"):
            run("tenant", "show", "nope")


@pytest.mark.django_db(transaction=True)
class TestSync:
    def test_without_wait_the_run_is_queued_on_the_broker(self):
        TenantFactory(slug="acme")
        broker = get_broker()
        before = broker.queue_size()
        out = run("sync", "acme", "--steps", "users")
        run_ = SyncRun.objects.get()
        assert f"Run #{run_.pk} queued" in out
        assert (run_.status, run_.trigger, run_.steps) == (Status.QUEUED, "command", "users")
        assert broker.queue_size() == before + 1 and run_.task_id

    def test_wait_without_a_cluster_runs_here_and_prints_json(self):
        TenantFactory(slug="acme", provider_config={"users": 40, "apps": 5, "seed": 2})
        err = StringIO()
        out = StringIO()
        call_command("sync", "acme", "--wait", "--json", stdout=out, stderr=err)
        result = json.loads(out.getvalue())
        assert "No task cluster is running: carrying the run out in this process." in err.getvalue()
        assert result["status"] == "completed"
        assert set(result["steps"]) == {"users", "tokens", "relations"}
        assert result["steps"]["users"]["created"] == 40
        assert set(result["steps"]["users"]) == {
            "status", "duration_s", "received", "created", "updated", "unchanged", "deactivated", "invalid", "failed"
        }

    def test_a_run_may_choose_its_profile(self):
        TenantFactory(slug="acme", provider_config={"users": 10})
        result = json.loads(run("sync", "acme", "--steps", "users", "--in-process", "--json", "--profile", "fast"))
        assert SyncRun.objects.get(pk=result["id"]).profile == "fast"
        with pytest.raises(CommandError, match="unknown profile 'turbo'; choose from production, development"):
            run("sync", "acme", "--profile", "turbo")

    def test_only_the_steps_asked_for_run(self):
        TenantFactory(slug="acme", provider_config={"users": 10})
        result = json.loads(run("sync", "acme", "--steps", "users", "--in-process", "--json"))
        assert list(result["steps"]) == ["users"]

    def test_a_failed_run_exits_non_zero(self, google_tenant, fake_google):
        fake_google.fail_next(USERS_PATH, 401, google_error(401, "Invalid Credentials", "authError"), times=2)
        with pytest.raises(CommandError, match=r"run #\d+ failed: users: GET /admin/directory/v1/users: 401 Invalid Credentials"):
            run("sync", "acme", "--steps", "users,tokens", "--in-process")

    def test_the_exit_code_of_the_real_command(self):
        TenantFactory(slug="acme", provider_config={"users": 10})
        ok = subprocess.run([sys.executable, "manage.py", "sync", "acme", "--in-process"], cwd=ROOT, env=child_env(), capture_output=True, text=True)
        assert ok.returncode == 0, ok.stderr
        assert re.search(r"run #\d+ acme: completed", ok.stdout) and re.search(r"Run #\d+ Completed in", ok.stdout)
        bad = subprocess.run([sys.executable, "manage.py", "sync", "acme", "--steps", "nope"], cwd=ROOT, env=child_env(), capture_output=True, text=True)
        assert bad.returncode == 1
        assert "unknown steps nope" in bad.stderr


@pytest.mark.django_db(transaction=True)
def test_demo_sets_everything_up_and_prints_the_login_once():
    out = run("demo", "--users", "60", "--latency-ms", "0")
    assert "Admin login: admin / " in out and "(shown once)" in out
    assert re.search(r"Run #(\d+) completed in .*Open http://127.0.0.1:8000/admin/ to see run #\1\.", out, re.S)
    assert get_user_model().objects.get(username="admin").is_superuser
    assert SyncRun.objects.get().status == Status.COMPLETED
    again = run("demo")
    assert "Admin login: admin (password as printed when it was made" in again
    assert SyncRun.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("command, signum, status, said, code", [
    (["sync", "slow", "--in-process"], signal.SIGINT, Status.CANCELLED, "Interrupted: cancelling the run", 1),
    (["sync", "slow", "--in-process"], signal.SIGTERM, Status.INTERRUPTED, "stopped by SIGTERM: interrupting the run", 1),
    (["demo", "--users", "3000", "--latency-ms", "20"], signal.SIGINT, Status.CANCELLED, "Interrupted: cancelling the run", 130),
])
def test_a_signal_stops_an_in_process_run_cleanly(command, signum, status, said, code):
    """Ctrl-C is a person cancelling; SIGTERM interrupts (the next run resumes). Either way the
    batches in progress end, the slot goes back and no traceback is printed."""
    TenantFactory(slug="slow", provider_config={"users": 3000, "latency_ms": 20})
    process = subprocess.Popen(
        [sys.executable, "manage.py", *command], cwd=ROOT, env=child_env(BATCH_SIZE="20"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for(lambda: SyncRun.objects.filter(step_records__created__gt=0).exists(), 120, "the first batch")
    process.send_signal(signum)
    wait_for(lambda: SyncRun.objects.filter(finished_at__isnull=False).exists(), 120, "the run to end")  # however loaded the machine
    out, err = process.communicate(timeout=120)
    assert process.returncode == code, err
    assert said in out and "Traceback" not in err
    run = SyncRun.objects.get()
    assert run.status == status and run.finished_at
    assert {s.status for s in run.step_records.all()} <= {status, Status.COMPLETED, Status.SKIPPED}
    assert run.step_records.filter(status=status).exists()
    assert not Allocation.objects.filter(owner=run.owner, state="granted").exists()

"""Syncs under forced resource pressure: throttles, brakes and a clean stop; a re-run resumes."""

import time
from dataclasses import replace

import pytest

from monitoring.governor.readings.fake import reading
from monitoring.models import ResourceSample, ThrottleEvent
from syncapp.models import DirectoryUser, Status

from ..conftest import demo_org, sync_here
from ..factories import TenantFactory
from ..fakegoogle import USERS_PATH, google_error

pytestmark = pytest.mark.django_db(transaction=True)

FAST_BRAKES = {"brake_after": 2, "brake_pause_s": 0, "max_wait_s": 0, "batch_size": 20}


class ScriptedReadings:
    """Calm for the first `calm` readings, then the given reading for ever (each a new one, in time)."""

    def __init__(self, calm: int, then):
        self.calm, self.then, self.calls = calm, then, 0

    def latest(self):
        self.calls += 1
        return replace(reading(10, 10) if self.calls <= self.calm else self.then, at=time.monotonic())


@pytest.fixture
def readings(monkeypatch):
    # Batches as the governor sizes them, whichever writer the database has: these tests count batches.
    monkeypatch.setattr("syncapp.steps.context.BATCH_SCALE", {"copy": 1, "orm": 1})

    def install(calm: int, then):
        scripted = ScriptedReadings(calm, then)
        for module in ("syncapp.governance", "syncapp.runs"):
            monkeypatch.setattr(f"{module}.get_sampler", lambda: scripted)
        return scripted

    return install


def test_overload_throttles_brakes_and_stops_cleanly_then_a_rerun_resumes(readings):
    tenant = TenantFactory(provider_config={"users": 300, "seed": 4}, governor_settings=FAST_BRAKES)
    readings(calm=10, then=reading(10, 85))  # a few calm batches, then memory over its ceiling

    stopped = sync_here(tenant, steps="users")
    step = stopped.step_records.get()
    assert stopped.status == Status.FAILED
    assert step.error == "system consistently overloaded"
    kept = DirectoryUser.objects.count()
    assert 0 < kept < 300 and kept == step.created  # every committed batch stays
    kinds = list(ThrottleEvent.objects.filter(owner=f"run-{stopped.pk}", route="users").values_list("kind", flat=True))
    assert kinds.count("brake") == 3 and kinds[-1] == "stop" and "throttle" in kinds
    assert ResourceSample.objects.filter(owner=f"run-{stopped.pk}").exists()
    assert step.checkpoint["done_in_page"] == kept

    readings(calm=10**9, then=None)
    resumed = sync_here(tenant, steps="users")
    step = resumed.step_records.get()
    assert resumed.status == Status.COMPLETED
    assert step.resumed_from_id == stopped.step_records.get().pk
    assert (step.received, step.created, step.deactivated) == (300 - kept, 300 - kept, 0)
    assert DirectoryUser.objects.count() == 300
    assert DirectoryUser.objects.filter(deleted_at__isnull=False).count() == 0  # the first part counts as seen

    again = sync_here(tenant, steps="users").step_records.get()
    assert again.resumed_from_id is None and (again.received, again.unchanged) == (300, 300)  # a full read again


def test_neighbours_over_the_cpu_ceiling_hold_the_sync_at_its_floor_never_stop_it(readings):
    tenant = TenantFactory(provider_config={"users": 300}, governor_settings=FAST_BRAKES)
    readings(calm=2, then=reading(95, 10, process_cpu=0, window_s=30))  # the rest of the machine alone at 95% (for a while)
    run = sync_here(tenant, steps="users")
    step = run.step_records.get()
    assert run.status == Status.COMPLETED and DirectoryUser.objects.count() == 300
    events = ThrottleEvent.objects.filter(owner=f"run-{run.pk}")
    assert not events.filter(kind__in=["brake", "stop"]).exists()
    [hold] = events.filter(kind="throttle")
    assert hold.detail == "held at 10% CPU: neighbours use 95% of the 80% ceiling"
    assert hold.ended_at is not None and 0 < hold.duration_s <= step.duration_s
    assert 0 < step.governor_wait_s <= step.duration_s  # waited: wall time held, never more than the step took


def test_memory_emergency_is_recorded_and_the_run_goes_on_at_one(readings):
    tenant = TenantFactory(provider_config={"users": 60}, governor_settings={"brake_after": 99, "max_wait_s": 0, "batch_size": 20})
    readings(calm=3, then=reading(10, 91))
    run = sync_here(tenant, steps="users")
    assert run.status == Status.COMPLETED and DirectoryUser.objects.count() == 60
    kinds = set(ThrottleEvent.objects.filter(owner=f"run-{run.pk}").values_list("kind", flat=True))
    assert {"throttle", "emergency", "pause"} <= kinds
    step = run.step_records.get()
    assert step.peak_rss_bytes > 0 and step.peak_cpu_percent == 10


def test_a_bad_tenant_override_fails_the_step_with_its_name():
    tenant = TenantFactory(governor_settings={"max_cpu_percent": 500})
    run = sync_here(tenant, steps="users")
    assert run.status == Status.FAILED
    assert "governor settings: max_cpu_percent must be between 1 and 100" in run.error


def test_rate_limit_answers_slow_the_tokens_step_down(google_tenant, fake_google):
    users, tokens = demo_org(60)
    fake_google.load(users, tokens)
    for user in users[40:50]:  # ten in a row: push-back that persists (a lone one sets no pace)
        fake_google.fail_next(f"{USERS_PATH}/{user['id']}/tokens", 429, google_error(429, "Rate Limit Exceeded", "rateLimitExceeded"))
    run = sync_here(google_tenant, steps="tokens")
    assert run.status == Status.COMPLETED and run.step_records.get().received == sum(len(t) for t in tokens.values())
    [episode] = ThrottleEvent.objects.filter(owner=f"run-{run.pk}", route="tokens", kind="rate")  # one, however many 429s
    assert episode.detail.startswith("provider pushed back persistently: pace ")
    assert episode.ended_at is not None and episode.duration_s >= 0


def test_sporadic_rate_limit_answers_are_retried_alone_and_set_no_pace(google_tenant, fake_google):
    """Google's 403 rateLimitExceeded now and then, far under any quota: each call is retried, the
    step's pace is left alone, and the episode says so."""
    users, tokens = demo_org(250)
    fake_google.load(users, tokens)
    fake_google.rate_limited_share = 0.05  # one answer in twenty at random, never five close together
    run = sync_here(google_tenant, steps="tokens")
    assert fake_google.rate_limited_answers >= 5  # they happened
    assert run.status == Status.COMPLETED and run.step_records.get().received == sum(len(t) for t in tokens.values())
    [episode] = ThrottleEvent.objects.filter(owner=f"run-{run.pk}", route="tokens", kind="rate")
    assert "lone call" in episode.detail and "pace" not in episode.detail


def test_without_parallel_sync_tokens_wait_for_users(settings):
    settings.BALLAST_GOVERNOR = {"parallel": False}
    run = sync_here(TenantFactory(provider_config={"users": 50}))
    users, tokens = run.step_records.get(name="users"), run.step_records.get(name="tokens")
    assert run.status == Status.COMPLETED and run.parallel is False
    assert tokens.started_at >= users.finished_at


def test_under_pressure_the_run_goes_sequential_and_the_circuit_opens(readings):
    tenant = TenantFactory(provider_config={"users": 200}, governor_settings=FAST_BRAKES)
    readings(calm=0, then=reading(10, 85))
    run = sync_here(tenant)
    assert run.parallel is False
    statuses = {s.name: (s.status, s.error) for s in run.step_records.all()}
    assert statuses["users"] == (Status.FAILED, "system consistently overloaded")
    assert statuses["tokens"] == (Status.SKIPPED, "circuit open: system consistently overloaded")
    assert statuses["relations"][0] == Status.SKIPPED
    assert run.status == Status.FAILED

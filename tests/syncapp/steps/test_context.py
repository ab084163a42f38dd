"""What every step shares (syncapp.steps.context): batches sized for the writer, each committed with its checkpoint."""

from datetime import datetime
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from syncapp.models import Status
from syncapp.steps.context import StepContext
from syncapp.writers import writer

from ...conftest import sync_here
from ...factories import TenantFactory


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_each_batch_leaves_a_checkpoint(settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 40}
    tenant = TenantFactory(provider_config={"users": 100, "apps": 5, "seed": 1})
    run = sync_here(tenant, steps="users")
    checkpoint = run.step_records.get(name="users").checkpoint
    written = datetime.fromisoformat(checkpoint.pop("at"))  # a page token's age decides whether it can resume
    assert checkpoint == {"page_token": None, "done_in_page": 100, "resumes": 0}
    assert abs((timezone.now() - written).total_seconds()) < 60
    relations = sync_here(tenant, steps="relations").step_records.get(name="relations")
    assert relations.received == 0 and relations.status == Status.COMPLETED  # no tokens synced yet


def test_batches_are_sized_for_the_writer():
    """The governor's batch size, times what a batch costs the writer: COPY carries ten times the rows."""
    governor = SimpleNamespace(before_batch=lambda: SimpleNamespace(batch_size=20))
    ctx = StepContext(step=None, tenant=None, provider=None, started_at=timezone.now(), governor=governor)
    expected = 200 if connection.vendor == "postgresql" else 20
    assert (writer().kind, ctx.next_batch_size()) == ("copy" if connection.vendor == "postgresql" else "orm", expected)
    assert [len(b) for b in ctx.batches(list(range(450)))] == ([200, 200, 50] if expected == 200 else [20] * 22 + [10])


def test_the_recent_rate_follows_the_last_batches_not_the_average_since_the_start():
    from syncapp.steps.context import RecentRate

    recent = RecentRate(now=0.0, done=0)
    assert recent.add(5.0, 500) == pytest.approx(100.0)  # 100 a second at first
    lately = recent.add(10.0, 600)  # then 20 a second for five seconds
    assert 20.0 < lately < 600 / 10.0  # nearer what it does now than the 60 a second since it began
    for second in range(11, 41):
        lately = recent.add(float(second), 600 + 20 * (second - 10))
    assert lately == pytest.approx(20.0, rel=0.05)  # and, kept up, it is that rate


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_each_batch_records_the_steps_recent_rate(settings):
    settings.BALLAST_GOVERNOR = {"batch_size": 40}
    run = sync_here(TenantFactory(provider_config={"users": 100, "apps": 5, "seed": 1}), steps="users")
    assert run.step_records.get(name="users").recent_rate > 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("batches_as_the_governor_sizes_them")
def test_each_batch_beats_for_its_holder_in_its_own_transaction(settings, monkeypatch):
    """A step that commits is alive: on SQLite the watch's own beat can wait behind the step's
    writes for longer than the silence that counts as dead."""
    from monitoring.models import Holder
    from syncapp.steps import context

    settings.BALLAST_GOVERNOR = {"batch_size": 40}
    settings.BALLAST_HEARTBEAT_S = 3600.0  # the watch never beats within the test: only the batches do
    real, beats = context.beat_holder, []

    def beat_and_see(holder_id):
        before = Holder.objects.get(pk=holder_id).heartbeat_at
        real(holder_id)
        beats.append(Holder.objects.get(pk=holder_id).heartbeat_at > before)

    monkeypatch.setattr(context, "beat_holder", beat_and_see)
    sync_here(TenantFactory(provider_config={"users": 100, "apps": 5, "seed": 1}), steps="users")
    assert beats == [True, True, True]  # 40, 40 and 20 users

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

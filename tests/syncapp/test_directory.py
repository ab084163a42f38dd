"""Reads of the synced directory (syncapp.directory)."""

import pytest
from django.utils import timezone

from syncapp.directory import users_by_key

from ..factories import DirectoryUserFactory, TenantFactory

pytestmark = pytest.mark.django_db


def test_users_are_found_by_id_else_by_email_a_live_one_before_a_deleted_one():
    tenant, other = TenantFactory(), TenantFactory()
    gone = DirectoryUserFactory(tenant=tenant, external_id="100", primary_email="ada@example.org", deleted_at=timezone.now())
    live = DirectoryUserFactory(tenant=tenant, external_id="200", primary_email="ada@example.org")  # the address, given again
    DirectoryUserFactory(tenant=other, external_id="300", primary_email="grace@example.org")
    found = users_by_key(tenant.pk, ["100", "ada@example.org", "grace@example.org", "999", None])
    assert found == {"100": gone.pk, "ada@example.org": live.pk}  # another tenant's users are not this one's

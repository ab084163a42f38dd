"""How a step is governed (syncapp.governance): the tenant's quota caps whatever its profile allows."""

import pytest

from monitoring.models import TenantQuota
from syncapp.governance import governor_for
from syncapp.runs import start_run

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db


def test_the_tenant_quota_caps_the_governor():
    tenant = TenantFactory()
    TenantQuota.objects.create(tenant=tenant, max_concurrency=4, max_memory_mb=300, provider_calls_per_second=5)
    run = start_run(tenant=tenant, trigger="api", steps="tokens", enqueue=False)
    governor = governor_for(run.step_records.get(), tenant)
    assert (governor.policy.io_max_concurrency, governor.policy.rss_limit_mb, governor.limiter.pacer.rate) == (4, 300, 5.0)

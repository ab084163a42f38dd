"""The allocation ledger: limits, queues, priorities, releases and reclaims."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.ledger import Denied, allocate, heartbeat, reclaim_dead, release
from monitoring.models import Allocation, AllocationEvent, TenantQuota
from monitoring.signals import allocation_granted, allocation_reclaimed

from ..factories import TenantFactory

pytestmark = pytest.mark.django_db
State = Allocation.State


@pytest.fixture
def tenant():
    t = TenantFactory()
    TenantQuota.objects.create(tenant=t, max_concurrent_runs=2)
    return t


@pytest.fixture
def granted_signals(django_capture_on_commit_callbacks):
    seen = []

    def receiver(sender, allocation, **kwargs):
        seen.append(allocation.owner)

    allocation_granted.connect(receiver)
    yield seen
    allocation_granted.disconnect(receiver)


def slot(owner, tenant, **kwargs):
    return allocate("run_slot", owner=owner, tenant_id=tenant.pk, **kwargs)


def test_grants_up_to_the_tenant_quota_then_queues_with_the_reason(tenant):
    assert slot("run-1", tenant).state == State.GRANTED
    assert slot("run-2", tenant).state == State.GRANTED
    third = slot("run-3", tenant)
    assert third.state == State.WAITING
    assert third.reason == "tenant quota: 2 of 2 run_slot in use"
    with pytest.raises(Denied, match="tenant quota: 2 of 2"):
        slot("run-4", tenant, wait=False)
    kinds = list(AllocationEvent.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["granted", "granted", "waiting", "denied"]


def test_asking_twice_returns_the_same_allocation(tenant):
    first = slot("run-1", tenant)
    assert slot("run-1", tenant).pk == first.pk
    assert Allocation.objects.count() == 1


def test_release_grants_the_next_waiter_in_order(tenant, django_capture_on_commit_callbacks, granted_signals):
    a, b = slot("run-1", tenant), slot("run-2", tenant)
    slot("run-3", tenant)
    d = slot("run-4", tenant)
    with django_capture_on_commit_callbacks(execute=True):
        assert [x.owner for x in release(a)] == ["run-3"]
    assert granted_signals == ["run-3"]
    assert Allocation.objects.get(pk=d.pk).state == State.WAITING
    release(b)
    assert Allocation.objects.get(pk=d.pk).state == State.GRANTED
    assert release(a) == []  # releasing twice does nothing


def test_priorities_order_the_waiters_and_age_so_none_starves(tenant, settings):
    TenantQuota.objects.filter(tenant=tenant).update(max_concurrent_runs=1)
    holder = slot("holder", tenant)
    for owner, priority in (("low", 0), ("high", 5), ("mid", 1)):
        slot(owner, tenant, priority=priority)
    order = []
    current = holder
    for _ in range(3):
        [current] = release(current)
        order.append(current.owner)
    assert order == ["high", "mid", "low"]

    settings.BALLAST_PRIORITY_AGING_S = 10
    holder = Allocation.objects.get(owner="low")
    old = slot("old-low", tenant, priority=0)
    Allocation.objects.filter(pk=old.pk).update(requested_at=timezone.now() - timedelta(seconds=120))  # aged 12 points
    slot("new-high", tenant, priority=5)
    assert [a.owner for a in release(holder)] == ["old-low"]


def test_one_tenant_at_its_quota_does_not_hold_up_another(tenant):
    other = TenantFactory()
    slot("a1", tenant), slot("a2", tenant)
    assert slot("a3", tenant).state == State.WAITING
    assert slot("b1", other).state == State.GRANTED


def test_the_cluster_limit_holds_across_tenants(settings):
    settings.BALLAST_LEDGER_LIMITS = {"run_slot": 2}
    tenants = [TenantFactory() for _ in range(3)]
    states = [slot(f"run-{i}", t).state for i, t in enumerate(tenants)]
    assert states == [State.GRANTED, State.GRANTED, State.WAITING]
    assert Allocation.objects.get(owner="run-2").reason == "cluster limit: 2 of 2 run_slot in use"


def test_memory_budgets(tenant, settings):
    settings.BALLAST_LEDGER_LIMITS = {"memory_mb": 1000}
    TenantQuota.objects.filter(tenant=tenant).update(max_memory_mb=600)
    assert allocate("memory_mb", 500, owner="a", tenant_id=tenant.pk).state == State.GRANTED
    assert allocate("memory_mb", 200, owner="b", tenant_id=tenant.pk).reason == "tenant quota: 500 of 600 memory_mb in use"


def test_stale_or_dead_holders_are_reclaimed_and_waiters_served(tenant, django_capture_on_commit_callbacks):
    reclaimed = []
    allocation_reclaimed.connect(lambda sender, allocation, **kw: reclaimed.append(allocation.owner), weak=False, dispatch_uid="t")
    try:
        alive, stale = slot("alive", tenant), slot("stale", tenant)
        dead = slot("waiting-then-dead", tenant)
        heartbeat([alive.pk])
        Allocation.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
        with django_capture_on_commit_callbacks(execute=True):
            assert [a.owner for a in reclaim_dead(timeout_s=60)] == ["stale"]
        assert reclaimed == ["stale"]
        assert Allocation.objects.get(pk=dead.pk).state == State.GRANTED  # the freed slot went to the waiter
        import socket

        Allocation.objects.filter(pk=dead.pk).update(holder=f"{socket.gethostname()}:999999")  # no such process
        assert [a.owner for a in reclaim_dead(timeout_s=60)] == ["waiting-then-dead"]
        assert Allocation.objects.get(pk=dead.pk).reason == f"holder {socket.gethostname()}:999999 gone"
    finally:
        allocation_reclaimed.disconnect(dispatch_uid="t")


def test_a_slot_between_two_steps_has_no_holder_to_lose(tenant):
    from monitoring.ledger import held

    slot_ = slot("run-1", tenant)
    with held(slot_):
        assert Allocation.objects.get(pk=slot_.pk).holder.endswith(f":{__import__('os').getpid()}")
    between = Allocation.objects.get(pk=slot_.pk)
    assert between.holder == "" and between.heartbeat_at is not None
    assert reclaim_dead(timeout_s=60) == []  # no process to have died: only the heartbeat timeout applies


def test_grants_and_releases_are_signals(tenant, django_capture_on_commit_callbacks):
    from monitoring.signals import allocation_released

    seen = []
    allocation_granted.connect(lambda sender, allocation, waited, **kw: seen.append(("granted", allocation.owner, waited)), weak=False, dispatch_uid="g")
    allocation_released.connect(lambda sender, allocation, **kw: seen.append(("released", allocation.owner)), weak=False, dispatch_uid="r")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            first = slot("one", tenant)
            slot("two", tenant)
            slot("three", tenant)
            release(first)
    finally:
        allocation_granted.disconnect(dispatch_uid="g")
        allocation_released.disconnect(dispatch_uid="r")
    assert seen == [("granted", "one", False), ("granted", "two", False), ("released", "one"), ("granted", "three", True)]

"""The allocation ledger: limits, queues, priorities, releases and reclaims."""

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.ledger.allocations import Denied, allocate, held, reclaim_dead, release, watch
from monitoring.ledger.processes import this_process
from monitoring.models import Allocation, AllocationEvent, Holder, TenantQuota
from monitoring.signals import allocation_granted, allocation_reclaimed

from ...factories import TenantFactory

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
    assert third.reason == "tenant quota: 2 of 2 run slots in use"
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
    assert Allocation.objects.get(owner="run-2").reason == "cluster limit: 2 of 2 run slots in use"


def _holder(allocation, *, host=None, pid=None, started=None, beat_s_ago=0.0, name="tokens"):
    me = this_process()
    at = timezone.now() - timedelta(seconds=beat_s_ago)
    return Holder.objects.create(
        allocation=allocation, name=name, host=host or me.host, pid=pid or me.pid,
        process_started=me.started if started is None else started, started_at=at, heartbeat_at=at,
    )


def test_an_allocation_is_reclaimed_when_any_of_its_holders_dies(tenant, settings, django_capture_on_commit_callbacks):
    settings.BALLAST_HEARTBEAT_S = 10.0  # a holder is dead after 20 s of silence
    settings.BALLAST_LEDGER_LIMITS = {"run_slot": 10}
    TenantQuota.objects.filter(tenant=tenant).update(max_concurrent_runs=10)
    me = this_process()
    cases = {
        "alive": {},
        "gone": {"pid": 999_999},  # no such process on this host
        "pid-reused": {"started": me.started - 3600},  # our pid, but we started later than its holder did
        "elsewhere-fresh": {"host": "other-host", "pid": 42, "beat_s_ago": 19},  # cannot be seen: it may live
        "elsewhere-silent": {"host": "other-host", "pid": 43, "beat_s_ago": 21},
    }
    slots = {}
    for owner, holder in cases.items():
        slots[owner] = slot(owner, tenant)
        _holder(slots[owner], **holder)
    _holder(slots["alive"], name="users")  # two steps of one run: both alive
    reclaimed = []
    allocation_reclaimed.connect(lambda sender, allocation, **kw: reclaimed.append(allocation.owner), weak=False, dispatch_uid="t")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            found = {a.owner: a.reason for a in reclaim_dead(timeout_s=60)}
    finally:
        allocation_reclaimed.disconnect(dispatch_uid="t")
    assert found == {
        "gone": f"tokens: process 999999 on {me.host} gone",
        "pid-reused": f"tokens: process {me.pid} on {me.host} gone",
        "elsewhere-silent": "tokens: no heartbeat from process 43 on other-host for 21 s",
    }
    assert sorted(reclaimed) == sorted(found)
    assert not Holder.objects.filter(allocation__owner__in=list(found)).exists()
    assert Allocation.objects.get(owner="alive").state == State.GRANTED


def test_one_dead_step_reclaims_its_run_even_while_another_step_lives(tenant):
    run_slot = slot("run-1", tenant)
    _holder(run_slot, name="users")
    _holder(run_slot, name="tokens", pid=999_999)
    [reclaimed] = reclaim_dead(timeout_s=60)
    assert reclaimed.owner == "run-1" and reclaimed.reason.startswith("tokens: process 999999 on ")


def test_a_slot_no_step_holds_is_reclaimed_only_after_the_timeout_and_serves_the_waiter(tenant):
    TenantQuota.objects.filter(tenant=tenant).update(max_concurrent_runs=1)
    between = slot("between-steps", tenant)
    waiter = slot("waiter", tenant)
    assert waiter.state == State.WAITING
    Allocation.objects.filter(pk=between.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=59))
    assert reclaim_dead(timeout_s=60) == []
    Allocation.objects.filter(pk=between.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    assert [a.reason for a in reclaim_dead(timeout_s=60)] == ["no holder and no heartbeat for 60 s"]
    assert Allocation.objects.get(pk=waiter.pk).state == State.GRANTED


def test_held_records_this_process_as_a_holder_until_the_block_ends(tenant):
    run_slot = slot("run-1", tenant)
    Allocation.objects.filter(pk=run_slot.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    with held(run_slot, "tokens") as holder:
        me = this_process()
        row = Holder.objects.get(allocation=run_slot)
        assert (row.pk, row.name, row.host, row.pid, row.process_started) == (holder.pk, "tokens", me.host, me.pid, me.started)
        assert holder.pk in watch().held
        Holder.objects.filter(pk=holder.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
        watch().tick()  # a heartbeat: the holder and its allocation are alive again
        assert Holder.objects.get(pk=holder.pk).heartbeat_age_s < 5
        assert reclaim_dead(timeout_s=60) == []
    assert not Holder.objects.filter(allocation=run_slot).exists() and holder.pk not in watch().held
    assert (timezone.now() - Allocation.objects.get(pk=run_slot.pk).heartbeat_at).total_seconds() < 5  # a last beat
    assert reclaim_dead(timeout_s=60) == []  # between two steps: only the timeout applies


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


def test_the_watch_thread_runs_while_something_is_held_or_for_good_in_a_worker(monkeypatch):
    import threading

    from monitoring.ledger import allocations as ledger

    beats = threading.Semaphore(0)
    monkeypatch.setattr(ledger, "beat", lambda ids: beats.release())
    monkeypatch.setattr(ledger, "reclaim_dead", lambda: [])
    keeper = ledger.Watch(interval=0.01)
    keeper.add(1)
    thread = keeper._thread
    assert beats.acquire(timeout=10)  # it beats for what it holds
    keeper.discard(1)
    thread.join(10)
    assert not thread.is_alive() and keeper._thread is None  # nothing held: a web process keeps no thread
    keeper.resident = True  # a cluster worker: it goes on holding nothing, to reclaim what others left
    keeper.ticks.append(beats.release)
    keeper.start()
    assert beats.acquire(timeout=10) and beats.acquire(timeout=10)
    assert keeper._thread.is_alive()
    keeper.resident = False
    keeper._thread.join(10)

"""The allocation ledger: concurrency slots and memory budgets, granted atomically across
every process and machine that shares the database.

Each decision runs in one transaction holding the resource's LedgerLock row (SELECT … FOR
UPDATE on PostgreSQL). On SQLite, select_for_update is a no-op, but our connections BEGIN
IMMEDIATE (settings: transaction_mode), which takes the database's write lock at the start of
the transaction: decisions are serialised just the same, one writer at a time.

Waiters are served by priority, aged so that low priority is never starved (one point per
PRIORITY_AGING_S waited), first come first served within a priority; a tenant's waiters keep
their order. Holders heartbeat; an allocation whose holder stopped (no heartbeat past
HOLDER_TIMEOUT_S, or its process gone from this host) is reclaimed.
"""

import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import psutil
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Sum
from django.utils import timezone

from .models import Allocation, AllocationEvent, LedgerLock
from .quotas import limits_for
from .signals import allocation_granted, allocation_reclaimed, allocation_released

log = logging.getLogger("monitoring.ledger")
State = Allocation.State
TENANT_LIMITS = {"run_slot": "max_concurrent_runs", "memory_mb": "max_memory_mb"}


class Denied(Exception):
    """The ledger refused (and was asked not to queue): the message says why."""


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _record(allocation: Allocation, kind: str, detail: str = "") -> None:
    AllocationEvent.objects.create(
        allocation=allocation, kind=kind, tenant_id=allocation.tenant_id, resource=allocation.resource,
        owner=allocation.owner, detail=detail[:300],
    )
    log.info("ledger %s %s %s for %s%s", kind, allocation.amount, allocation.resource, allocation.owner, f": {detail}" if detail else "")


def _lock(resource: str) -> None:
    LedgerLock.objects.select_for_update().get(resource=resource)


def _in_use(resource: str, **filters) -> int:
    used = Allocation.objects.filter(resource=resource, state=State.GRANTED, **filters).aggregate(total=Sum("amount"))["total"]
    return used or 0


def _shortfall(allocation: Allocation) -> tuple[str, str] | None:
    """Why the allocation does not fit now, as (scope, reason); None when it fits."""
    resource, amount = allocation.resource, allocation.amount
    cluster = getattr(settings, "BALLAST_LEDGER_LIMITS", {}).get(resource)
    if cluster is not None and _in_use(resource) + amount > cluster:
        return "cluster", f"cluster limit: {_in_use(resource)} of {cluster} {resource} in use"
    if allocation.tenant_id is not None and resource in TENANT_LIMITS:
        limit = getattr(limits_for(allocation.tenant_id), TENANT_LIMITS[resource])
        used = _in_use(resource, tenant_id=allocation.tenant_id)
        if limit is not None and used + amount > limit:
            return "tenant", f"tenant quota: {used} of {limit} {resource} in use"
    return None


def _waiting_order(waiters: list[Allocation]) -> list[Allocation]:
    """By aged priority (one point per PRIORITY_AGING_S waited), then first come first served."""
    now, aging = timezone.now(), getattr(settings, "BALLAST_PRIORITY_AGING_S", 60.0)
    return sorted(waiters, key=lambda a: (-(a.priority + (now - a.requested_at).total_seconds() // aging), a.requested_at, a.pk))


def _grant(allocation: Allocation, detail: str = "") -> None:
    now = timezone.now()
    allocation.state, allocation.reason, allocation.granted_at, allocation.heartbeat_at = State.GRANTED, "", now, now
    allocation.save(update_fields=["state", "reason", "granted_at", "heartbeat_at", "holder"])
    _record(allocation, "granted", detail)


def _grant_waiters(resource: str) -> list[Allocation]:
    """Grant what fits, in order; a tenant's later waiters never pass its first."""
    granted, blocked_tenants = [], set()
    for waiter in _waiting_order(list(Allocation.objects.filter(resource=resource, state=State.WAITING))):
        if waiter.tenant_id in blocked_tenants:
            continue
        shortfall = _shortfall(waiter)
        if shortfall is None:
            _grant(waiter, "a slot freed")
            granted.append(waiter)
        elif shortfall[0] == "cluster":
            break  # nothing smaller passes a larger request that waits for the cluster
        else:
            blocked_tenants.add(waiter.tenant_id)
            if waiter.reason != shortfall[1]:
                waiter.reason = shortfall[1]
                waiter.save(update_fields=["reason"])
    return granted


def _announce(granted: list[Allocation], waited: bool = True) -> None:
    for allocation in granted:
        transaction.on_commit(lambda a=allocation: allocation_granted.send(Allocation, allocation=a, waited=waited))


def shortfall_now(resource: str, amount: int = 1, *, tenant_id=None) -> str | None:
    """Why a request would have to wait if it asked now (no lock: advice, not a grant)."""
    probe = Allocation(resource=resource, amount=amount, tenant_id=tenant_id)
    shortfall = _shortfall(probe)
    if shortfall is None and Allocation.objects.filter(resource=resource, state=State.WAITING, tenant_id=tenant_id).exists():
        return "waiting behind earlier requests"
    return shortfall[1] if shortfall else None


def allocate(resource: str, amount: int = 1, *, owner: str, tenant_id=None, priority: int = 0, wait: bool = True) -> Allocation:
    """Grant now, or queue (wait=True) or refuse (wait=False, raises Denied). Asking again for an
    owner that already holds or waits returns that allocation (a task delivered twice)."""
    LedgerLock.objects.get_or_create(resource=resource)
    with transaction.atomic():
        _lock(resource)
        existing = Allocation.objects.filter(owner=owner, resource=resource, state__in=[State.WAITING, State.GRANTED]).first()
        if existing is not None:
            return existing
        allocation = Allocation(
            resource=resource, amount=amount, owner=owner, tenant_id=tenant_id, priority=priority, holder=holder_name()
        )
        shortfall = _shortfall(allocation)
        ahead = Allocation.objects.filter(resource=resource, state=State.WAITING)
        if shortfall is None and (ahead.filter(tenant_id=tenant_id).exists() or ahead.filter(reason__startswith="cluster").exists()):
            shortfall = ("queue", "waiting behind earlier requests")
        if shortfall is None:
            allocation.save()
            _grant(allocation)
            _announce([allocation], waited=False)
        else:
            allocation.state, allocation.reason = (State.WAITING if wait else State.DENIED), shortfall[1]
            allocation.save()
            _record(allocation, allocation.state, shortfall[1])
    if allocation.state == State.DENIED:
        raise Denied(allocation.reason)
    return allocation


def release(allocation: Allocation) -> list[Allocation]:
    """Give a slot back (or withdraw a wait); return the waiters granted in its place."""
    with transaction.atomic():
        _lock(allocation.resource)
        current = Allocation.objects.select_for_update().get(pk=allocation.pk)
        if current.state not in (State.GRANTED, State.WAITING):
            return []
        current.state, current.released_at = State.RELEASED, timezone.now()
        current.save(update_fields=["state", "released_at"])
        _record(current, "released")
        transaction.on_commit(lambda: allocation_released.send(Allocation, allocation=current))
        granted = _grant_waiters(current.resource)
        _announce(granted)
    return granted


def release_owner(owner: str) -> list[Allocation]:
    granted = []
    for allocation in Allocation.objects.filter(owner=owner, state__in=[State.GRANTED, State.WAITING]):
        granted += release(allocation)
    return granted


def heartbeat(allocation_ids) -> int:
    """Mark the allocations alive and held by this process."""
    return Allocation.objects.filter(pk__in=list(allocation_ids), state=State.GRANTED).update(
        heartbeat_at=timezone.now(), holder=holder_name()
    )


def _holder_gone(holder: str) -> bool:
    """A holder process on this host that no longer exists (an empty holder is nobody's)."""
    host, _, pid = holder.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def reclaim_dead(timeout_s: float | None = None) -> list[Allocation]:
    """Reclaim granted allocations whose holder stopped heartbeating or is gone; grant waiters."""
    timeout_s = timeout_s if timeout_s is not None else getattr(settings, "BALLAST_HOLDER_TIMEOUT_S", 300.0)
    stale_before = timezone.now() - timedelta(seconds=timeout_s)
    reclaimed = []
    for resource in Allocation.objects.filter(state=State.GRANTED).values_list("resource", flat=True).distinct():
        with transaction.atomic():
            _lock(resource)
            for allocation in Allocation.objects.filter(resource=resource, state=State.GRANTED):
                stale = allocation.heartbeat_at is None or allocation.heartbeat_at < stale_before
                if not (stale or _holder_gone(allocation.holder)):
                    continue
                why = f"holder {allocation.holder} gone" if not stale else f"no heartbeat for {timeout_s:.0f} s"
                allocation.state, allocation.released_at, allocation.reason = State.RECLAIMED, timezone.now(), why
                allocation.save(update_fields=["state", "released_at", "reason"])
                _record(allocation, "reclaimed", why)
                reclaimed.append(allocation)
                transaction.on_commit(lambda a=allocation: allocation_reclaimed.send(Allocation, allocation=a))
                transaction.on_commit(lambda a=allocation: allocation_released.send(Allocation, allocation=a))
            _announce(_grant_waiters(resource))
    return reclaimed


class Heartbeats:
    """One thread per process heartbeats every allocation this process holds."""

    def __init__(self, interval: float):
        self.interval = interval
        self.held: dict[int, int] = {}  # allocation id → how many holders in this process
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, allocation_id: int) -> None:
        with self._lock:
            self.held[allocation_id] = self.held.get(allocation_id, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ballast-heartbeat", daemon=True)
                self._thread.start()
        heartbeat([allocation_id])

    def drop(self, allocation_id: int) -> None:
        with self._lock:
            left = self.held.get(allocation_id, 1) - 1
            if left > 0:
                self.held[allocation_id] = left
                return
            self.held.pop(allocation_id, None)
        # A last beat, and no holder until the next one adopts it: between two steps a run waits in
        # the queue, and the process that ran the last step may be recycled without killing the run.
        Allocation.objects.filter(pk=allocation_id, state=State.GRANTED).update(heartbeat_at=timezone.now(), holder="")

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            with self._lock:
                ids = list(self.held)
            if ids:
                try:
                    heartbeat(ids)
                except Exception:  # a missed beat is survivable; a dead thread is not
                    log.exception("heartbeat failed")
                finally:
                    connections.close_all()


_heartbeats: dict[int, Heartbeats] = {}


def heartbeats() -> Heartbeats:
    """This process's heartbeat keeper (a forked child gets its own)."""
    pid = os.getpid()
    if pid not in _heartbeats:
        _heartbeats[pid] = Heartbeats(getattr(settings, "BALLAST_HEARTBEAT_S", 10.0))
    return _heartbeats[pid]


@contextmanager
def held(allocation: Allocation):
    """Heartbeat an allocation while the block runs in this process."""
    keeper = heartbeats()
    keeper.hold(allocation.pk)
    try:
        yield allocation
    finally:
        keeper.drop(allocation.pk)


@contextmanager
def allocation(resource: str, amount: int = 1, *, owner: str, tenant_id=None, priority: int = 0, timeout_s: float = 60.0, poll_s: float = 0.2):
    """Hold an allocation for the block: waits (polling) up to timeout_s for it, heartbeats it, releases it."""
    granted = allocate(resource, amount, owner=owner, tenant_id=tenant_id, priority=priority, wait=timeout_s > 0)
    deadline = time.monotonic() + timeout_s
    while granted.state == State.WAITING:
        if time.monotonic() >= deadline:
            release(granted)
            raise Denied(f"not granted within {timeout_s:.0f} s: {granted.reason}")
        time.sleep(poll_s)
        granted.refresh_from_db()
    try:
        with held(granted):
            yield granted
    finally:
        release(granted)

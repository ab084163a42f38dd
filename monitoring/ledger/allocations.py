"""The allocation ledger: run slots, granted atomically across every process and machine that
shares the database.

Each decision runs in one transaction holding the resource's LedgerLock row (SELECT … FOR
UPDATE on PostgreSQL). On SQLite, select_for_update is a no-op, but our connections BEGIN
IMMEDIATE (settings: transaction_mode), which takes the database's write lock at the start of
the transaction: decisions are serialised just the same, one writer at a time.

Waiters are served by priority, aged so that low priority is never starved (one point per
PRIORITY_AGING_S waited), first come first served within a priority; a tenant's waiters keep
their order. Each piece of work under an allocation (a running step) is a Holder: its process
(host, pid, start time) and a heartbeat. An allocation is reclaimed when one of its holders dies
(its process gone from this host, or two heartbeats missed: seen within three), or when none holds it and none
beat for HOLDER_TIMEOUT_S (a run waiting between steps for a worker that never comes).
"""

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from monitoring.models import Allocation, AllocationEvent, Holder, LedgerLock
from monitoring.signals import allocation_granted, allocation_reclaimed, allocation_released

from .processes import ProcessId, gone, this_process
from .quotas import limits_for

log = logging.getLogger("monitoring.ledger")
State, Scope = Allocation.State, Allocation.BlockedBy
TENANT_LIMITS = {Allocation.Resource.RUN_SLOT: "max_concurrent_runs"}  # the quota field that bounds each resource per tenant


class Denied(Exception):
    """The ledger refused (and was asked not to queue): the message says why."""


def _record(allocation: Allocation, kind: State, detail: str = "") -> None:
    AllocationEvent.objects.create(
        allocation=allocation, kind=kind, tenant_id=allocation.tenant_id, resource=allocation.resource,
        owner=allocation.owner, detail=detail[:300],
    )
    log.info("ledger %s %s for %s%s", kind, amount_of(allocation.amount, allocation.resource), allocation.owner, f": {detail}" if detail else "")


def amount_of(amount: int, resource: str) -> str:
    """"1 run slot", "4 run slots": a resource in words, as the admin names it."""
    label = Allocation.Resource(resource).label
    return f"{amount} {label}{'' if amount == 1 else 's'}"


def _lock(resource: str) -> None:
    LedgerLock.objects.select_for_update().get(resource=resource)


def _in_use(resource: str, **filters) -> int:
    used = Allocation.objects.filter(resource=resource, state=State.GRANTED, **filters).aggregate(total=Sum("amount"))["total"]
    return used or 0


@dataclass(frozen=True)
class Shortfall:
    """Why a request would wait: its scope (the cluster's limit, its tenant's quota, or behind
    earlier requests) and the reason in words."""

    scope: Scope
    reason: str


BEHIND_EARLIER = Shortfall(Scope.QUEUE, "waiting behind earlier requests")


def _shortfall(allocation: Allocation) -> Shortfall | None:
    """Why the allocation does not fit now; None when it fits."""
    resource, amount = allocation.resource, allocation.amount
    cluster = getattr(settings, "BALLAST_LEDGER_LIMITS", {}).get(resource)
    if cluster is not None and _in_use(resource) + amount > cluster:
        return Shortfall(Scope.CLUSTER, f"cluster limit: {_in_use(resource)} of {amount_of(cluster, resource)} in use")
    if allocation.tenant_id is not None and resource in TENANT_LIMITS:
        limit = getattr(limits_for(allocation.tenant_id), TENANT_LIMITS[resource])
        used = _in_use(resource, tenant_id=allocation.tenant_id)
        if limit is not None and used + amount > limit:
            return Shortfall(Scope.TENANT, f"tenant quota: {used} of {amount_of(limit, resource)} in use")
    return None


def _waiting_order(waiters: list[Allocation]) -> list[Allocation]:
    """By aged priority (one point per PRIORITY_AGING_S waited), then first come first served."""
    now, aging = timezone.now(), getattr(settings, "BALLAST_PRIORITY_AGING_S", 60.0)
    return sorted(waiters, key=lambda a: (-(a.priority + (now - a.requested_at).total_seconds() // aging), a.requested_at, a.pk))


def _grant(allocation: Allocation, detail: str = "") -> None:
    now = timezone.now()
    allocation.state, allocation.reason, allocation.blocked_by = State.GRANTED, "", ""
    allocation.granted_at = allocation.heartbeat_at = now
    allocation.save(update_fields=["state", "reason", "blocked_by", "granted_at", "heartbeat_at"])
    _record(allocation, State.GRANTED, detail)


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
        elif shortfall.scope == Scope.CLUSTER:
            break  # nothing smaller passes a larger request that waits for the cluster
        else:
            blocked_tenants.add(waiter.tenant_id)
            if (waiter.blocked_by, waiter.reason) != (shortfall.scope, shortfall.reason):
                waiter.blocked_by, waiter.reason = shortfall.scope, shortfall.reason
                waiter.save(update_fields=["blocked_by", "reason"])
    return granted


def _announce(granted: list[Allocation], waited: bool = True) -> None:
    for allocation in granted:
        transaction.on_commit(lambda a=allocation: allocation_granted.send(Allocation, allocation=a, waited=waited))


def shortfall_now(resource: str, amount: int = 1, *, tenant_id=None) -> Shortfall | None:
    """Why a request would have to wait if it asked now (no lock: advice, not a grant)."""
    probe = Allocation(resource=resource, amount=amount, tenant_id=tenant_id)
    shortfall = _shortfall(probe)
    if shortfall is None and Allocation.objects.filter(resource=resource, state=State.WAITING, tenant_id=tenant_id).exists():
        return BEHIND_EARLIER
    return shortfall


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
            resource=resource, amount=amount, owner=owner, tenant_id=tenant_id, priority=priority)
        shortfall = _shortfall(allocation)
        ahead = Allocation.objects.filter(resource=resource, state=State.WAITING)
        if shortfall is None and (ahead.filter(tenant_id=tenant_id).exists() or ahead.filter(blocked_by=Scope.CLUSTER).exists()):
            shortfall = BEHIND_EARLIER
        if shortfall is None:
            allocation.save()
            _grant(allocation)
            _announce([allocation], waited=False)
        else:
            allocation.state, allocation.blocked_by, allocation.reason = (State.WAITING if wait else State.DENIED), shortfall.scope, shortfall.reason
            allocation.save()
            _record(allocation, allocation.state, shortfall.reason)
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
        _record(current, State.RELEASED)
        transaction.on_commit(lambda: allocation_released.send(Allocation, allocation=current))
        granted = _grant_waiters(current.resource)
        _announce(granted)
    return granted


def release_owner(owner: str) -> list[Allocation]:
    granted = []
    for allocation in Allocation.objects.filter(owner=owner, state__in=[State.GRANTED, State.WAITING]):
        granted += release(allocation)
    return granted


def _holder_dead(holder: Holder, silent_before) -> str:
    """Why a holder is dead ("" when it may live): its process ended on this host, or it went
    silent (its host may be another machine, or the process hangs)."""
    whose = f"{holder.name}: " if holder.name else ""
    if gone(ProcessId(holder.host, holder.pid, holder.process_started)):
        return f"{whose}{holder.describe()} gone"
    if holder.heartbeat_at < silent_before:
        return f"{whose}no heartbeat from {holder.describe()} for {(timezone.now() - holder.heartbeat_at).total_seconds():.0f} s"
    return ""


def holder_silence_s() -> float:
    """A holder silent this long is dead: two heartbeats missed. Watches look every HEARTBEAT_S,
    so a holder that died anywhere is seen dead within three heartbeats of its death."""
    return 2 * getattr(settings, "BALLAST_HEARTBEAT_S", 10.0)


def _dead_allocations(timeout_s: float) -> dict[int, str]:
    """Granted allocations to reclaim, with why: one of their holders died (a part of the work
    will never end), or none holds them and none beat for timeout_s."""
    now = timezone.now()
    silent_before = now - timedelta(seconds=holder_silence_s())
    dead: dict[int, str] = {}
    for holder in Holder.objects.filter(allocation__state=State.GRANTED).order_by("id"):
        if holder.allocation_id not in dead and (why := _holder_dead(holder, silent_before)):
            dead[holder.allocation_id] = why
    stale = Allocation.objects.filter(state=State.GRANTED, holders__isnull=True).filter(
        Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - timedelta(seconds=timeout_s))
    )
    for allocation_id in stale.values_list("id", flat=True):
        dead.setdefault(allocation_id, f"no holder and no heartbeat for {timeout_s:.0f} s")
    return dead


def reclaim_dead(timeout_s: float | None = None) -> list[Allocation]:
    """Reclaim granted allocations whose holder died (or that none held for timeout_s, default
    HOLDER_TIMEOUT_S); grant the waiters. Cheap when nothing died: one read, no lock."""
    timeout_s = timeout_s if timeout_s is not None else getattr(settings, "BALLAST_HOLDER_TIMEOUT_S", 300.0)
    dead = _dead_allocations(timeout_s)
    reclaimed = []
    for resource in sorted(set(Allocation.objects.filter(pk__in=list(dead)).values_list("resource", flat=True))):
        with transaction.atomic():
            _lock(resource)
            for allocation in Allocation.objects.filter(pk__in=list(dead), resource=resource, state=State.GRANTED):
                allocation.state, allocation.released_at, allocation.reason = State.RECLAIMED, timezone.now(), dead[allocation.pk][:300]
                allocation.save(update_fields=["state", "released_at", "reason"])
                allocation.holders.all().delete()
                _record(allocation, State.RECLAIMED, allocation.reason)
                reclaimed.append(allocation)
                transaction.on_commit(lambda a=allocation: allocation_reclaimed.send(Allocation, allocation=a))
                transaction.on_commit(lambda a=allocation: allocation_released.send(Allocation, allocation=a))
            _announce(_grant_waiters(resource))
    return reclaimed


def beat(holder_ids) -> int:
    """Mark these holders (and their allocations) alive now."""
    ids, now = list(holder_ids), timezone.now()
    Allocation.objects.filter(holders__pk__in=ids, state=State.GRANTED).update(heartbeat_at=now)
    return Holder.objects.filter(pk__in=ids).update(heartbeat_at=now)


def beat_holder(holder_id: int) -> None:
    """Mark one holder alive now, inside its own work's transaction. A holder that commits work is
    alive, and on SQLite the watch's beat can wait behind that work's writes for longer than the
    silence that counts as dead."""
    Holder.objects.filter(pk=holder_id).update(heartbeat_at=timezone.now())


class Watch:
    """One thread per process, every HEARTBEAT_S: beat for the holders this process runs, then
    reclaim what holders elsewhere left behind when they died. In a cluster worker (`resident`) it
    runs from the worker's start to its end; elsewhere only while this process holds something."""

    def __init__(self, interval: float):
        self.interval = interval
        self.held: set[int] = set()  # Holder ids
        self.ticks: list = []  # callables run after each beat (a worker's orphan check)
        self.resident = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()  # set: the current thread is to end (nothing held, not resident)

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._idle.is_set():  # (one told to end is ending)
                self._idle = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._idle,), name="ballast-watch", daemon=True)
                self._thread.start()

    def add(self, holder_id: int) -> None:
        with self._lock:
            self.held.add(holder_id)
        self.start()

    def discard(self, holder_id: int) -> None:
        with self._lock:
            self.held.discard(holder_id)
            if not self.held and not self.resident:
                self._idle.set()  # nothing left to beat for: the thread ends now, not a beat later

    def tick(self) -> None:
        with self._lock:
            ids = list(self.held)
        try:
            if ids:
                beat(ids)
            reclaim_dead()
            for check in self.ticks:
                check()
        except Exception:  # a missed beat is survivable; a dead thread is not
            log.exception("heartbeat failed")

    def _run(self, idle: threading.Event) -> None:
        while not idle.wait(self.interval):
            try:
                self.tick()
            finally:
                connections.close_all()  # this thread's own: a lost one is not reused at the next beat
            with self._lock:
                if not self.held and not self.resident:
                    idle.set()
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None  # the next hold starts another


_watches: dict[int, Watch] = {}
_watches_lock = threading.Lock()  # two steps' threads asking at once get the one watch


def watch() -> Watch:
    """This process's watch (a forked child gets its own)."""
    pid = os.getpid()
    with _watches_lock:
        if pid not in _watches:
            _watches[pid] = Watch(getattr(settings, "BALLAST_HEARTBEAT_S", 10.0))
        return _watches[pid]


def hold(allocation: Allocation, name: str = "") -> Holder:
    """Record this process as a holder of the allocation, heartbeating from now on."""
    me, now = this_process(), timezone.now()
    holder = Holder.objects.create(
        allocation=allocation, name=name, host=me.host, pid=me.pid, process_started=me.started, started_at=now, heartbeat_at=now
    )
    Allocation.objects.filter(pk=allocation.pk, state=State.GRANTED).update(heartbeat_at=now)
    watch().add(holder.pk)
    return holder


def drop(holder: Holder) -> None:
    """The holder's work ended: no longer held by it. The allocation keeps a last heartbeat, so a
    run between two steps (no holder while it waits for a worker) counts from then."""
    watch().discard(holder.pk)
    Allocation.objects.filter(pk=holder.allocation_id, state=State.GRANTED).update(heartbeat_at=timezone.now())
    Holder.objects.filter(pk=holder.pk).delete()


@contextmanager
def held(allocation: Allocation, name: str = ""):
    """Hold an allocation while the block runs in this process."""
    holder = hold(allocation, name)
    try:
        yield holder
    finally:
        drop(holder)


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

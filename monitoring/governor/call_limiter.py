"""The limiter of provider calls: enforces the limits of monitoring.governor.call_limits behind one lock.

A call waits for its slot in the pace, then for room in flight, and says how it went. The
limit in force is the smallest of the adaptive limit and the cap the governor sets from
resources (memory, CPU); once calls are paced it never falls below what keeps the pace
(Little's law: rate × latency), so a quota-bound step is held by its pace, not starved.
try_enter/release work on a given time and never block: the simulation drives them on a fake
clock; acquire is the blocking form real threads use.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .call_limits import AdaptiveLimit, Outcome, Pacer, RecentShare, error_share, pushback_share


@dataclass(frozen=True)
class Ticket:
    started: float


@dataclass(frozen=True)
class PushBack:
    """What a push-back (or errors that persist) changed; `persisting`: a share of the recent
    answers, that cut the pace, rather than a lone one, that cost a tenth of the limit in flight."""

    persisting: bool
    rate_before: float | None
    rate_after: float | None
    limit_before: float
    limit_after: float


class Limiter:
    def __init__(self, limit: AdaptiveLimit, pacer: Pacer, *, clock: Callable[[], float] = time.monotonic):
        self.limit, self.pacer, self.clock = limit, pacer, clock
        self.errors: RecentShare = error_share()
        self.pushbacks: RecentShare = pushback_share()
        self.cap = limit.maximum  # what resources allow; the governor sets it
        self.in_flight = 0
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)

    def allowed(self) -> int:
        """Calls allowed in flight now."""
        limit = self.limit.current()
        rate, latency = self.pacer.rate, self.limit.mean_latency
        if rate and latency:
            limit = max(limit, math.ceil(rate * latency) + 1)
        return max(1, min(self.cap, limit))

    def under_way(self) -> int:
        """How many calls a caller should keep under way: the room in flight, and a quarter more
        ready to take the place of calls that back off after an error (their retry sleeps
        outside the limiter)."""
        allowed = self.allowed()
        return allowed + max(4, allowed // 4)

    def set_cap(self, cap: int) -> None:
        with self._room:
            self.cap = max(1, cap)
            self._room.notify_all()

    def reserve_pace(self, now: float) -> float:
        """Reserve the next slot in the pace; return how long to wait for it."""
        with self._lock:
            return self.pacer.next_delay(now)

    def try_enter(self, now: float) -> Ticket | None:
        """A ticket if there is room in flight now, else None."""
        with self._lock:
            return self._enter(now)

    def _enter(self, now: float) -> Ticket | None:
        if self.in_flight >= self.allowed():
            return None
        self.in_flight += 1
        self.pacer.on_sent(now)
        return Ticket(now)

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> Ticket:
        """Wait for the pace, then for room in flight."""
        delay = self.reserve_pace(self.clock())
        if delay > 0:
            sleep(delay)
        with self._room:
            while (ticket := self._enter(self.clock())) is None:
                self._room.wait(timeout=0.5)
        return ticket

    def release(self, ticket: Ticket, now: float, outcome: Outcome) -> PushBack | None:
        """Count the answer; return what changed when it was a push-back (or errors now persist)."""
        with self._room:
            in_flight = self.in_flight
            self.in_flight -= 1
            pushbacks_persist = self.pushbacks.add(outcome is Outcome.PUSHBACK)
            errors_persist = self.errors.add(outcome is Outcome.ERROR)
            if outcome is Outcome.ERROR and not errors_persist:
                self._room.notify()
                return None  # a lone error: retried by the caller, nothing about our pace
            persisting = errors_persist if outcome is Outcome.ERROR else pushbacks_persist
            rate_before, limit_before = self.pacer.rate, self.limit.limit
            self.pacer.on_result(now, outcome, sent_at=ticket.started, persisting=persisting)
            dropped = outcome is not Outcome.OK
            self.limit.on_sample(now, now - ticket.started, in_flight, dropped)
            self._room.notify_all()
            if not dropped:
                return None
            return PushBack(persisting, rate_before, self.pacer.rate, limit_before, self.limit.limit)
